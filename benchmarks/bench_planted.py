"""Do the LM baselines learn? The planted task (issue 16), through the commands a user runs.

For each offline preset (`planted.SMALL_RUNS`): `make planted` (512 train / 160 unseen rows from
the shared rows, seed 0, the marker where the preset's truncation keeps text), `make train-*`
with the run's settings, `make predict` without and with swap TTA, `make planted-score`. The goal
(issue 16): unseen accuracy >= 0.9 with swap TTA for every preset, untuned log loss near ln 3.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lmsys_pref import runs
from lmsys_pref.eval import planted
from lmsys_pref.files import jsonio

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_planted"
GOAL = 0.9
# The table (zeroed output layer; MiniLM with MSE), measured on this machine.
BEFORE = ("MiniLM `make train-roberta` (MSE) 0.463 unseen accuracy / 1.079 log loss, with "
          "`-p objective ce` 0.694 / 0.802; Gemma 3 270M (2 epochs, lr 3e-4, 96 tokens) "
          "0.356 / 1.082; plain transformers `Trainer` with the model's own head 0.975 / 0.104.")
# How the presets' small-run settings were chosen: single runs on the same task, 2026-12-03
# (accuracy with swap TTA / its log loss; the bold runs above are the presets as they are now).
TUNING = [
    ("MiniLM, lr 1e-4, 3 epochs, head gain 0.01", 78, "0.900 / 0.610"),
    ("MiniLM, lr 1e-4, 3 epochs, head gain 0.4 (about the model's own init)", 78,
     "0.988 / 0.441"),
    ("MiniLM, lr 1e-4, 3 epochs, batch 8", 156, "0.719 / 0.519"),
    ("MiniLM, lr 2e-4, 6 epochs", 156, "0.981 / 0.345"),
    ("MiniLM, lr 2e-4, 3 epochs, `swap_augment pair`", 78, "0.988 / 0.355"),
    ("SmolLM2-135M, old LoRA (r16/alpha 8 on o/v of all 30 layers), lr 1e-3, marker at the "
     "start (cut off by the preset's left truncation)", 104, "0.519 / 1.063"),
    ("SmolLM2-135M, old LoRA, lr 1e-3, `-p truncation_side right`", 104, "0.900 / 0.536"),
    ("SmolLM2-135M, alpha 32 on q/k/v/o of layers 20-29, lr 1e-3, `-p truncation_side right`",
     104, "0.969 / 0.392"),
]


def lmsys(*args: str) -> None:
    """`lmsys-pref ARGS` from the repository root (a user's command line), output captured."""
    subprocess.run([sys.executable, "-m", "lmsys_pref", *args], cwd=ROOT, check=True,
                   capture_output=True, text=True)


def one_run(shared: Path, preset: str, work: Path = WORK, **changes: str) -> dict:
    """Plant, train, predict both ways and score one preset's small run (its settings with
    `changes`), in `work`."""
    baseline, settings = planted.SMALL_RUNS[preset]
    settings = {**settings, **changes}
    at = planted.place_for(preset)
    task, run = work / f"task_{at}", work / preset
    # made afresh every time (a second): a changed shared train.csv must not reuse an old task
    planted.make(shared, task, n_train=512, n_test=160, seed=0, at=at)
    t0 = time.time()
    # resume false: an earlier run's checkpoints in this folder would skip the training timed here
    lmsys("train", baseline, "--preset", preset, "--data-dir", str(task), "--out-dir", str(run),
          *planted.params(settings), "-p", "resume", "false")
    seconds = time.time() - t0
    return {"at": at, "settings": settings, "train_seconds": round(seconds),
            "metrics": runs.read_metrics(run), **predict_both(run, task)}


def predict_both(run: Path, task: Path) -> dict:
    """`lmsys-pref predict` of the run's model on the task's unseen rows without and with swap
    TTA (into run/pred_none, run/pred_swap): each one's score and wall seconds."""
    res = {}
    for tta in ("none", "swap"):
        t0 = time.time()
        lmsys("predict", "--model-dir", str(run / "model"), "--data-dir", str(task),
               "--out-dir", str(run / f"pred_{tta}"), "-p", "tta", tta)
        res[f"predict_seconds_{tta}"] = round(time.time() - t0)
        res[tta] = planted.score(task / planted.ANSWERS, run / f"pred_{tta}" / "submission.csv")
    return res


def markdown(res: dict) -> str:
    lines = ["| preset (`-p` settings) | marker | steps | train s | unseen acc., no TTA | "
             "log loss | **with swap TTA** | log loss | val log loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for preset, r in res.items():
        m = r["metrics"]
        sets = ", ".join(f"{k} {v}" for k, v in r["settings"].items())
        lines.append(f"| {preset} ({sets}) | {r['at']} | {m.get('steps', '?')} | "
                     f"{r['train_seconds']} | {r['none']['accuracy']:.3f} | "
                     f"{r['none']['log_loss']:.3f} | **{r['swap']['accuracy']:.3f}** | "
                     f"{r['swap']['log_loss']:.3f} | {m['log_loss']:.3f} |")
    met = all(r["swap"]["accuracy"] >= GOAL for r in res.values())
    lines += ["", f"Goal (>= {GOAL} unseen accuracy with swap TTA for every preset): "
              f"**{'met' if met else 'not met'}**.", "", f"Before (issue 16): {BEFORE}", "",
              "How the settings were chosen (single runs on the same task, swap TTA):", "",
              "| run | steps | accuracy / log loss |", "|---|---:|---:|"]
    lines += [f"| {name} | {steps} | {fig} |" for name, steps, fig in TUNING]
    lines += ["", "Every run leaves ln 3 from the first steps (the output layer starts small and "
              "random, `heads.HEAD_INIT_GAIN`). Each first learns \"exactly one answer has the "
              "marker\" and only later which side: without TTA a run often puts one side's "
              "marked rows into the tie, and swap TTA, reading each row both ways, recovers the "
              "side. The demo's budget (8 LoRA steps at 64 rows, about 13 per MiniLM fold) is "
              "too short for this task; these runs are 13x (LMs) and 6x (MiniLM) of it."]
    return "\n".join(lines) + "\n"


def run(shared: Path | None, quick: bool = False) -> dict:
    if shared is None or not (Path(shared) / "train.csv").exists():
        return {"skipped": "the real data (../shared/data/lmsys-chatbot-arena) is absent"}
    presets = ["minilm"] if quick else list(planted.SMALL_RUNS)
    res = {p: one_run(Path(shared), p) for p in presets}
    return {"title": "Planted task: do the LM baselines learn? (issue 16)",
            "command": "python -m benchmarks.run --only planted (or, per preset: make planted, "
                       "make train-*, make predict -p tta swap, make planted-score; README, "
                       "\"Does it learn?\")",
            "markdown": markdown(res), "runs": jsonio.jsonable(res),
            "goal_met": all(r["swap"]["accuracy"] >= GOAL for r in res.values())}
