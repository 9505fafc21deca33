"""`make bench`: run every `benchmarks/bench_*.py`, store figures, render BENCHMARKS.md.

Each bench module defines `run(shared: Path | None, quick: bool) -> dict` returning at least
`title` (a heading), `command` (how to reproduce) and `markdown` (its section body); the whole
dict is stored as `benchmarks/results/<name>.json` together with the machine it ran on. A bench
whose data is absent returns `{"skipped": "<why>"}` and keeps its earlier figures.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent


def machine() -> str:
    """One line describing where the figures were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = ""
    try:
        import torch
        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM{gpu}, "
            f"Python {platform.python_version()}")


LM_GPU = "`.venv/bin/python -m benchmarks.run --only lm_gpu`"
INFER_GPU = "`.venv/bin/python -m benchmarks.run --only infer_gpu`"
GPU_GOAL_ROWS = [  # (measure, goal, command)
    ("the GPU path: pass/fail, MFU of training and scoring, graphs compiled; the T4 row in "
     "the T4's setup (fp16, eager attention for Gemma-2)", "every row passes, < 6 min",
     "`make gpu-check`"),
    ("Gemma-2-2B LoRA training, bf16, real length mix", ">= 45% MFU (4N + 3x attention)",
     LM_GPU),
    ("Gemma-2-9B 4-bit scoring memory on a T4: `predict` build in the T4's setup (fp16, eager "
     "attention), the batches its token budget plans at 2048 / 3072 tokens (a projection "
     "unless measured on a T4)", "<= 14 GiB", LM_GPU),
    ("scoring, Gemma-2-2B / 9B shapes, swap TTA, 25k rows",
     ">= 55% / >= 60% MFU (2N + attention)", INFER_GPU),
    ("scoring vs a naive loop (input order, batches of 4)", ">= 2.5x", INFER_GPU),
    ("2xT4 wall time, 25k rows x TTA, 9B in the T4's setup (fp16, eager attention, the T4 "
     "preset's token budget; unquantized, where a T4 loads 8-bit weights; off a T4, projected "
     "at the MFU that setup reaches there)", "< 2 h", INFER_GPU),
    ("flex_attention graphs compiled in a training run (scoring: tested on CPU), and "
     "recompile-limit hits (past the limit torch runs unfused; a hit fails the check)",
     "<= 8 per device, 0 hits", "`make gpu-check` (graphs compiled, recompile-limit hits)")]
GPU_GOALS = ("GPU figures (GPU path issues), measured on a CUDA machine with the commands below; "
             "each names its device. MFU is against the device's own dense peak "
             "(`benchmarks/mfu.py`: H100/H200 SXM 989, H100/H200 NVL 835, H100 PCIe 756, "
             "A100 312, L4 121, T4 65 fp16 TFLOP/s, ...; `--peak-tflops` for others), with "
             "attention FLOPs counted, and a measured bf16 matmul peak printed beside it.\n\n"
             "| measure | goal | command |\n|---|---|---|\n"
             + "\n".join(f"| {m} | {g} | {c} |" for m, g, c in GPU_GOAL_ROWS) + "\n")


def render() -> Path:
    """Rebuild BENCHMARKS.md from every stored result."""
    parts = ["# Benchmarks\n", "Written by `make bench` (`python -m benchmarks.run`) from "
             "`benchmarks/results/*.json`; each section names its command and machine.\n"]
    for path in sorted(RESULTS.glob("*.json")):
        res = json.loads(path.read_text())
        parts.append(f"## {res.get('title', path.stem)}\n")
        parts.append(f"- Command: `{res.get('command', 'make bench')}`")
        parts.append(f"- Machine: {res.get('machine', '?')}; date {res.get('date', '?')}\n")
        parts.append(res.get("markdown", "").rstrip() + "\n")
    missing = [p.stem for p in sorted(HERE.glob("bench_*.py"))
               if not (RESULTS / f"{p.stem[len('bench_'):]}.json").exists()]
    if not (RESULTS / "gpu_check.json").exists():
        missing.append("gpu_check")
    if missing:  # say which figures are absent instead of leaving a silent gap
        parts.append("## Not measured yet\n")
        parts.append("These have no stored figures (they skip without their hardware or data; "
                     "the GPU ones need CUDA): " + ", ".join(
                         "`make gpu-check`" if m == "gpu_check" else
                         f"`.venv/bin/python -m benchmarks.run --only {m[len('bench_'):]}`"
                         for m in missing) + ".\n")
    if {"bench_lm_gpu", "bench_infer_gpu", "gpu_check"} & set(missing):
        parts.append(GPU_GOALS)
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="../shared/data/lmsys-chatbot-arena")
    ap.add_argument("--only", nargs="*", help="bench names (e.g. xgb) to run")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU "
                    "(default: benchmarks/mfu.py's table by device name)")
    args = ap.parse_args()
    if args.peak_tflops:
        os.environ["LMSYS_PEAK_TFLOPS"] = str(args.peak_tflops)  # read by benchmarks.mfu
    shared = Path(args.shared) if Path(args.shared).exists() else None
    RESULTS.mkdir(exist_ok=True)
    names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    for name in names:
        if args.only and name not in args.only:
            continue
        print(f"== bench {name}", flush=True)
        t0 = time.time()
        try:
            res = importlib.import_module(f"benchmarks.bench_{name}").run(shared, args.quick)
        except Exception:  # one broken bench must not hide the others' figures
            traceback.print_exc()
            continue
        if "skipped" in res:
            print(f"   skipped: {res['skipped']}")
            continue
        res.update(machine=machine(), date=time.strftime("%Y-%m-%d"),
                   bench_seconds=round(time.time() - t0, 1))
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
        print(res["markdown"])
    print(f"wrote {render()}")


if __name__ == "__main__":
    main()
