"""Offline real-model run on CPU: Gemma 3 270M (GGUF from PyPI) LoRA on the real rows.

`make train-gemma PRESET=gemma3-270m DATA_DIR=<shared> PARAMS="-p max_train_rows N"` at the
preset's shortened length (128 tokens, last 6 layers adapted). The evidence asked for: the
fine-tuned model's validation log loss is below the untuned model's (same model, fresh head) and
below the uniform guess ln 3 = 1.0986.
"""
from __future__ import annotations

import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lmsys_pref import runs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "bench_lm_cpu"
# 2026-11-23, before issue 16 (zeroed output layer, preset lr 1e-4), 1,500 rows: 75 steps
BEFORE = {"log_loss": 1.0910, "accuracy": 0.367, "train_loss_last": 1.0999}


def run(shared: Path | None, quick: bool) -> dict:
    """Train through the same door as `make train-gemma`, then read metrics.json."""
    if shared is None or not (Path(shared) / "train.csv").exists():
        return {"skipped": "real data not found"}
    rows = 200 if quick else 1500
    # resume false: an earlier run's checkpoints in OUT would skip the training timed here
    params = ["-p", "max_train_rows", str(rows), "-p", "resume", "false"]
    cmd = [sys.executable, "-m", "lmsys_pref", "train", "gemma", "--preset", "gemma3-270m",
           "--data-dir", str(shared), "--out-dir", str(OUT), *params]
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    m = runs.read_metrics(OUT)  # eval "val": the holdout
    ln3 = math.log(3)
    beats = m["log_loss"] < min(m["untuned_log_loss"], ln3)
    md = (f"Gemma 3 270M (`gemma3-270m` preset: GGUF from the PyPI package, fp32, LoRA r16 on "
          f"q/k/v/o of layers 12-17, max_length 128, 1 epoch, lr 1e-3) on the first {rows} "
          f"real rows ({m['n_train'] - m['n_eval']} train / {m['n_eval']} validation, stratified), "
          "CPU only.\n\n"
          "| | val log loss | accuracy |\n|---|---:|---:|\n"
          f"| untuned (base + fresh head) | {m['untuned_log_loss']:.4f} | |\n"
          f"| uniform guess | {ln3:.4f} | |\n"
          f"| **fine-tuned** | **{m['log_loss']:.4f}** | {m['accuracy']:.3f} |\n"
          f"| before issue 16 (zeroed output layer, lr 1e-4) | {BEFORE['log_loss']:.4f} | "
          f"{BEFORE['accuracy']:.3f} |\n\n"
          f"{m['steps']} optimizer steps (training loss {m['train_loss_first']:.4f} at the first, "
          f"{m['train_loss_last']:.4f} at the last; before: {BEFORE['train_loss_last']}), "
          f"{m['seconds']:.0f} s wall in all "
          f"(load, untuned scoring, training, scoring). Below both the untuned model and ln 3: "
          f"**{'yes' if beats else 'no'}**.\n")
    return {"title": "Offline real-model training on CPU (Gemma 3 270M LoRA)",
            "command": "make train-gemma PRESET=gemma3-270m DATA_DIR=../shared/data/"
                       f"lmsys-chatbot-arena OUT_DIR=runs/bench_lm_cpu "
                       f"PARAMS=\"{shlex.join(params)}\"",
            "markdown": md, "metrics": m, "wall_seconds": round(time.time() - t0, 1),
            "below_untuned_and_uniform": beats}
