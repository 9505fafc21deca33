"""`make gpu-check` runs on CUDA; its code is exercised here at tiny sizes on CPU (`--smoke`)."""
from __future__ import annotations

import importlib.util
import json

from benchmarks import gpu_check


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
    assert gpu_check.run_row(lambda: {"x": 1}, lambda r: r["x"] == 1, None) == ("pass", {"x": 1})


def test_gpu_check_without_cuda_says_so(capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_token_lengths_follow_the_real_mix():
    rows = gpu_check.real_length_mix(2000, 2048)
    lengths = sorted(map(len, rows))
    assert lengths[-1] <= 2048 and 380 < lengths[1000] < 560  # the real median is 491
