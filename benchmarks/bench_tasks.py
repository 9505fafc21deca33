"""Three classes to two (issue 30): what a 2024 model is worth on the WSDM Cup's two-class task.

On the 1,500 shared rows: a prompt-grouped quarter of the rows is held out; its rows without a
tie (the two-class task has none) are the evaluation rows, which no run trains on. Three ways to
a two-class model, each through the commands a user runs:

- `3-class`: trained on the 2024 task (ties included) and scoring the two-class rows by dropping
  the tie's mass and renormalising (`data.task.to_task`);
- `2-class`: trained on the two-class rows alone (ties left out), in the WSDM Cup's shape;
- `2-class from 3-class`: the same, started from the 3-class run's weights and head rows a/b
  (`-p init_from`, the WSDM Cup's 2nd place).

Accuracy (the WSDM Cup's metric) and log loss on the evaluation rows, with the paired standard
error of each accuracy difference against the plain `2-class` run of the same model.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lmsys_pref import data, runs
from lmsys_pref.configs.tasks import LMSYS_2024, TASKS
from lmsys_pref.data import metrics, splits
from lmsys_pref.data.task import to_task
from lmsys_pref.data.writer import write_folder

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_tasks"
WSDM = TASKS["wsdm-2025"]
MINILM = ["--preset", "minilm", "-p", "n_folds", "0", "-p", "max_length", "256",
          "-p", "epochs", "2", "-p", "untuned_baseline", "false", "-p", "resume", "false"]
RUNS = {  # name -> (baseline, data folder, extra arguments)
    "xgb 3-class": ("xgb", "three", []),
    "xgb 2-class": ("xgb", "two", []),
    "minilm 3-class": ("roberta", "three", MINILM),
    "minilm 2-class": ("roberta", "two", MINILM),
    "minilm 2-class from 3-class": ("roberta", "two",
                                    MINILM + ["-p", "init_from", str(WORK / "minilm 3-class")]),
}


def folders(shared: Path) -> np.ndarray:
    """The two data folders (2024 shape with ties, WSDM shape without) sharing one held-out
    test set: the held-out quarter's tie-free rows. Returns their labels."""
    rows = data.load_split(shared / "train.csv", labelled=True)
    _, held = splits.kfold(splits.strata(rows), 4, 0, splits.fold_groups(rows, "prompt"))[0]
    train, test = rows.drop(index=held), rows.iloc[held]
    test = test[test["label"] < 2].reset_index(drop=True)
    write_folder(train, test, WORK / "three", LMSYS_2024)
    write_folder(train[train["label"] < 2], test, WORK / "two", WSDM)
    return test["label"].to_numpy()


def train(name: str) -> float:
    """One run through `lmsys-pref train`; its wall time."""
    baseline, folder, extra = RUNS[name]
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "lmsys_pref", "train", baseline, "--data-dir",
                    str(WORK / folder), "--out-dir", str(WORK / name), *extra], cwd=ROOT,
                   check=True, capture_output=True, text=True)
    return time.time() - t0


def scores(name: str, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """The run's accuracy and log loss on the evaluation rows, and its per-row hits."""
    probs = runs.read_test_probs(WORK / name)
    p = to_task(probs[[c for c in probs.columns if c.startswith("winner_")]].to_numpy(), WSDM)
    hits = (p.argmax(1) == labels).astype(float)
    return {"accuracy": float(hits.mean()), "log_loss": metrics.log_loss(labels, p),
            "classes_trained": 3 if "3-class" in name.split(" from ")[0] else 2}, hits


def run(shared: Path | None, quick: bool = False) -> dict:
    arena = shared and Path(shared)
    if arena is None or not (arena / "train.csv").exists():
        return {"skipped": "needs the shared rows (../shared/data/lmsys-chatbot-arena)"}
    labels = folders(arena)
    res, hits = {}, {}
    for name in RUNS:
        seconds = train(name)
        res[name], hits[name] = scores(name, labels)
        res[name]["seconds"] = round(seconds)
    for name in RUNS:  # paired: the same rows, against the plain two-class run of its model
        ref = f"{name.split()[0]} 2-class"
        d = hits[name] - hits[ref]
        res[name]["vs_2class"] = {"accuracy": float(d.mean()),
                                  "se": float(d.std(ddof=1) / np.sqrt(len(d)))}
    return {"title": "Three classes to two (WSDM Cup shape)",
            "command": ".venv/bin/python -m benchmarks.run --only tasks",
            "n_eval": int(len(labels)), "runs": res, "markdown": markdown(res, len(labels))}


def markdown(res: dict, n: int) -> str:
    head = (f"Evaluation: {n} tie-free rows of a prompt-grouped held-out quarter of the 1,500 "
            "shared rows (no run trains on them). `3-class` runs train on the 2024 task and "
            "drop the tie's mass at scoring; `2-class` runs train on the tie-free rows in the "
            "WSDM Cup's shape; `from 3-class` starts from the 3-class run (`-p init_from`). "
            "Differences are paired, against the same model's plain `2-class` run.\n\n"
            "| run | accuracy | log loss | vs 2-class (acc.) | seconds |\n"
            "|---|---:|---:|---:|---:|\n")
    rows = [f"| {k} | {v['accuracy']:.3f} | {v['log_loss']:.4f} | "
            f"{v['vs_2class']['accuracy']:+.3f} ± {v['vs_2class']['se']:.3f} | {v['seconds']} |"
            for k, v in res.items()]
    return head + "\n".join(rows) + "\n"
