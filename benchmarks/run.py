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


GPU_GOALS = """Their goals (GPU path issue), to be measured with `make bench` and `make gpu-check`
on a CUDA machine (figures with the device name):

| measure | goal |
|---|---|
| Gemma-2-2B LoRA training, bf16, real length mix | >= 45% MFU (4N FLOPs/token, 790 TFLOP/s H100) |
| scoring, Gemma-2-2B / 9B shapes, swap TTA, 25k rows | >= 55% / >= 60% MFU (2N FLOPs/token) |
| scoring vs a naive loop (input order, batches of 4) | >= 2.5x |
| Gemma-2-9B 4-bit scoring peak memory at 2048 | <= 14 GiB |
| projected 2xT4 wall time, 25k rows x TTA (9B, FLOP ratio) | < 2 h |
"""


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
    if missing:  # say which figures are absent instead of leaving a silent gap
        parts.append("## Not measured yet\n")
        parts.append("These benches have no stored figures (they skip without their hardware or "
                     "data; GPU benches need CUDA): " + ", ".join(f"`{m}`" for m in missing) +
                     ". Run `make bench` where they can run.\n")
    if {"bench_lm_gpu", "bench_infer_gpu"} & set(missing):
        parts.append(GPU_GOALS)
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="../shared/data/lmsys-chatbot-arena")
    ap.add_argument("--only", nargs="*", help="bench names (e.g. xgb) to run")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = ap.parse_args()
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
