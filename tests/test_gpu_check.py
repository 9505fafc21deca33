"""`make gpu-check` runs on CUDA; its code is exercised here at tiny sizes on CPU (`--smoke`)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from transformers import AutoConfig

from benchmarks import compiles, gpu_check, t4
from lmsys_pref.model import precision


def test_gpu_check_smoke_passes_every_row(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--smoke", "--out", str(out), "--peak-tflops", "1"]) == 0
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and len(saved["checks"]) == 5
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    assert [c["status"] for c in saved["checks"]] == ["pass"] * 3 + ["pass" if bnb else "skip"] * 2
    bf16, fp16 = saved["checks"][:2]
    assert bf16["train_steps"] == fp16["train_steps"] == 3
    assert bf16["tta_rows"] == 16 and bf16["attn_implementation"] == "eager"
    assert (bf16["weights_dtype"], fp16["weights_dtype"]) == ("bf16", "fp16")
    assert fp16["attn_implementation"] == "eager"  # the T4's kernel for Gemma-2
    assert [c["recompile_limit_hits"] for c in saved["checks"][:3]] == [0, 0, 0]
    assert saved["peak_tflops"] == 1 and saved["matmul_bf16_tflops"] > 0
    for row in (bf16, fp16):  # MFU of training and of scoring against the given peak
        assert 0 < row["train_mfu"] < 1 and 0 < row["scoring_mfu"] < 1
    assert "MFU training" in capsys.readouterr().out


def test_rows_that_need_bitsandbytes_skip_with_the_reason_without_it(monkeypatch):
    find = importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else find(name, *a))
    ran = []
    status, detail = gpu_check.run_row(lambda: ran.append(1), lambda r: True, "bitsandbytes")
    assert status == "skip" and not ran
    assert "bitsandbytes is not installed" in detail["reason"]
    assert gpu_check.run_row(lambda: {"x": 1}, lambda r: r["x"] == 1, None) == (
        "pass", {"x": 1, "recompile_limit_hits": 0})


def test_the_t4_row_runs_the_t4_setup_even_where_flex_attention_would_be_chosen(monkeypatch):
    """On an H100/H200 `auto` gives Gemma-2 flex_attention; the T4 row must not run it."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    gemma = AutoConfig.for_model(**gpu_check.GEMMA2_2B)
    assert precision.choose_attention("auto", gemma, "cuda:0") in ("flex_attention",
                                                                   "flash_attention_2")
    bf16, on_t4 = gpu_check.checks(smoke=False)[:2]
    assert bf16[1].args[1] == "bf16" and bf16[1].keywords == {}
    assert on_t4[1].args[1] == "fp16" and on_t4[1].keywords == {"attn": "eager"}
    assert "T4 setup (fp16, eager)" in on_t4[0]
    assert t4.setup(gpu_check.LLAMA3_8B) == {"dtype": "fp16", "attn_implementation": "sdpa"}


def two_shapes(first: int = 2) -> dict:
    """A row that compiles one tiny function (dynamo only) for two static input shapes,
    `first` and `first + 1` elements (the same code object every call: one cache)."""
    double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    for n in (first, first + 1):
        double(torch.ones(n))
    return {"x": 1}


def test_a_recompile_limit_hit_fails_the_row(monkeypatch):
    """torch runs on unfused past its limit and the row's own checks still pass: the hit,
    counted by dynamo, must fail it."""
    with torch._dynamo.config.patch(recompile_limit=1):
        status, detail = gpu_check.run_row(two_shapes, lambda r: r["x"] == 1, None)
    assert (status, detail["recompile_limit_hits"]) == ("FAIL", 1)
    with torch._dynamo.config.patch(recompile_limit=2):
        assert gpu_check.run_row(two_shapes, lambda r: True, None)[0] == "pass"


def test_each_row_starts_from_empty_compile_caches(monkeypatch):
    """Two rows compiling two shapes each fit a limit of 2 only if the second does not inherit
    the first's cache entries; transformers' compiled flex_attention is dropped too."""
    hf_flex = pytest.importorskip("transformers.integrations.flex_attention")
    monkeypatch.setattr(hf_flex.WrappedFlexAttention, "_instance", object())
    monkeypatch.setattr(hf_flex.WrappedFlexAttention, "_is_flex_compiled", True)
    seen = []

    def row(first: int) -> dict:
        seen.append((hf_flex.WrappedFlexAttention._instance,
                     hf_flex.WrappedFlexAttention._is_flex_compiled))
        return two_shapes(first)

    def two_rows() -> list[str]:  # 4 shapes of one function in all, 2 per row
        return [gpu_check.run_row(lambda: row(n), lambda r: True, None)[0] for n in (2, 4)]

    with torch._dynamo.config.patch(recompile_limit=2):
        assert two_rows() == ["pass", "pass"]
        assert seen == [(None, False)] * 2
        compiles.reset()
        monkeypatch.setattr(compiles, "reset", lambda: None)  # rows sharing one cache
        assert two_rows() == ["pass", "FAIL"]


def test_gpu_check_without_cuda_says_so(capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_token_lengths_follow_the_real_mix():
    rows = gpu_check.real_length_mix(2000, 2048)
    lengths = sorted(map(len, rows))
    assert lengths[-1] <= 2048 and 380 < lengths[1000] < 560  # the real median is 491
