"""`make gpu-check` runs on CUDA; its code is exercised here at tiny sizes on CPU (`--smoke`)."""
from __future__ import annotations

import json

from benchmarks import gpu_check


def test_gpu_check_smoke_passes_every_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--smoke", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and len(saved["checks"]) == 5
    assert [c["status"] for c in saved["checks"]] == ["pass"] * 5
    bf16, fp16 = saved["checks"][:2]
    assert bf16["train_steps"] == fp16["train_steps"] == 3
    assert bf16["tta_rows"] == 16 and bf16["attn_implementation"] == "eager"


def test_gpu_check_without_cuda_says_so(capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_token_lengths_follow_the_real_mix():
    rows = gpu_check.real_length_mix(2000, 2048)
    lengths = sorted(map(len, rows))
    assert lengths[-1] <= 2048 and 380 < lengths[1000] < 560  # the real median is 491
