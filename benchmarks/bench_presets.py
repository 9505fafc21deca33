"""The offline presets on real rows (issue 28, item 7): never worse than their untuned start.

On the 1,500 shared rows, two prompt-grouped parts: the runs train on `fit` (1,275 rows; the
library's own 20 % holdout of them chooses the candidate: `metrics.json` `log_loss`), and score
`report` (225 rows, given as test.csv) which no step of the choice touched; the reported figure
is the chosen candidate's log loss on `report`, with its standard error, beside the same rows'
untuned (base + fresh head) and uniform (ln 3) log losses. Each preset's candidates differ in the
learning rate; every candidate keeps its best checkpoint (`keep_best`, chosen on rows held out of
its fit), or its start, or a uniform head, whichever those rows score best. Runs are cached by
folder (a finished run whose settings match is read again).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from lmsys_pref import data, runs
from lmsys_pref.configs.tasks import LMSYS_2024
from lmsys_pref.data import metrics, splits
from lmsys_pref.data.writer import write_folder

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_presets"
BASE = {"keep_best": "true", "untuned_baseline": "true", "resume": "false"}
CANDIDATES = {  # preset -> (baseline, candidate name -> settings)
    "gemma3-270m": ("gemma", {"lr 1e-3": {"learning_rate": "0.001"},
                              "lr 3e-4": {"learning_rate": "0.0003"},
                              "lr 1e-4": {"learning_rate": "0.0001"}}),
    "smollm2-135m": ("llama", {"lr 1e-3": {"learning_rate": "0.001"},
                               "lr 3e-4": {"learning_rate": "0.0003"}}),
    "minilm": ("roberta", {"lr 5e-5": {"learning_rate": "0.00005", "n_folds": "0"},
                           "lr 2e-5": {"learning_rate": "0.00002", "n_folds": "0"}}),
}


def parts(shared: Path) -> np.ndarray:
    """The `fit` folder (train.csv, and the `report` rows as test.csv); the report labels."""
    rows = data.load_split(shared / "train.csv", labelled=True)
    folds = splits.kfold(splits.strata(rows), 20, 0, splits.fold_groups(rows, "prompt"))
    report = np.concatenate([va for _, va in folds[:3]])  # 3 of 20 prompt-grouped folds
    write_folder(rows.drop(index=report), rows.iloc[report], WORK / "data", LMSYS_2024)
    return rows["label"].to_numpy()[report]


def train(preset: str, name: str) -> Path:
    """One candidate through `lmsys-pref train` (reused when its settings already ran)."""
    baseline, candidates = CANDIDATES[preset]
    settings = {**BASE, **candidates[name]}
    out = WORK / f"{preset} {name}"
    record = out / "bench_settings.json"
    if record.is_file() and json.loads(record.read_text()) == settings and \
            (out / "submission.csv").is_file():
        return out
    args = [a for k, v in settings.items() for a in ("-p", k, v)]
    subprocess.run([sys.executable, "-m", "lmsys_pref", "train", baseline, "--preset", preset,
                    "--data-dir", str(WORK / "data"), "--out-dir", str(out), *args], cwd=ROOT,
                   check=True, capture_output=True, text=True)
    record.write_text(json.dumps(settings))
    return out


def report_loss(run: Path, labels: np.ndarray) -> tuple[float, float]:
    """Log loss of a run's test predictions (the `report` rows) and its standard error."""
    probs = runs.read_test_probs(run)[list(data.LABEL_COLS)].to_numpy()
    p = metrics.normalise(probs)
    nll = -np.log(p[np.arange(len(labels)), labels])
    return float(nll.mean()), float(nll.std(ddof=1) / np.sqrt(len(nll)))


def run(shared: Path | None, quick: bool = False) -> dict:
    arena = shared and Path(shared)
    if arena is None or not (arena / "train.csv").exists():
        return {"skipped": "needs the shared rows (../shared/data/lmsys-chatbot-arena)"}
    labels, res = parts(arena), {}
    for preset, (_, candidates) in CANDIDATES.items():
        tried = {}
        for name in candidates:
            out = train(preset, name)
            m = runs.read_metrics(out)
            tried[name] = {"choice_log_loss": m["log_loss"], "untuned": m.get("untuned_log_loss"),
                           "best_step": m.get("best_step"), "ends_at": m.get("ends_at"),
                           "steps": m.get("steps"),
                           "seconds": round(m["seconds"])}
        chosen = min(tried, key=lambda k: tried[k]["choice_log_loss"])
        loss, se = report_loss(WORK / f"{preset} {chosen}", labels)
        res[preset] = {"candidates": tried, "chosen": chosen, "report_log_loss": loss,
                       "report_se": se, "below_ln3": loss <= math.log(3)}
    return {"title": "Offline presets on real rows (keep_best, learning rate chosen)",
            "command": ".venv/bin/python -m benchmarks.run --only presets",
            "presets": res, "n_report": int(len(labels)), "markdown": markdown(res, len(labels))}


def markdown(res: dict, n: int) -> str:
    head = (f"Each candidate trains on 1,275 of the 1,500 shared rows (its holdout of 255 rows "
            "chooses the candidate; `keep_best` picks the checkpoint on 15% of its training "
            f"rows) and scores {n} prompt-grouped rows no step of the choice touched. "
            f"Uniform guess: {math.log(3):.4f}.\n\n"
            "| preset | candidate | choice log loss (untuned) | ends at (step / steps) |\n"
            "|---|---|---:|---|\n")
    rows = [f"| {p} | {c}{' **chosen**' if c == r['chosen'] else ''} | "
            f"{v['choice_log_loss']:.4f} ({v['untuned']:.4f}) | "
            f"{v.get('ends_at')} ({v['best_step']} / {v['steps']}) |"
            for p, r in res.items() for c, v in r["candidates"].items()]
    tail = ["\n| preset | chosen | log loss on the untouched rows | <= ln 3 |",
            "|---|---|---:|---|"]
    tail += [f"| {p} | {r['chosen']} | {r['report_log_loss']:.4f} ± {r['report_se']:.4f} | "
             f"{'yes' if r['below_ln3'] else 'no'} |" for p, r in res.items()]
    return head + "\n".join(rows) + "\n" + "\n".join(tail) + "\n"
