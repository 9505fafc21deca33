"""One model from k folds (issue 17): does merging the fold adapters keep the fold average?

A tiny Llama (the `tiny-llama` preset: 2 layers, hidden 32, the SmolLM2 tokenizer; fp32 so that
only the merge differs) is trained as a 3-fold run on 80% of the 1,500 real rows (a prompt-grouped
split); the other 300 rows, which no fold saw, are scored four ways: the mean of the 3 folds'
probabilities (what `predict` does with a k-fold run), and one model from `merge-folds` in each
mode (`mean`: the 1st place's state-dict mean; `exact`: the mean of the folds' weight changes as
one rank-3r adapter; `exact --into-base`). Reported: held-out log loss, max |Δp| against the
fold average, and the CPU seconds of scoring (k models vs one).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_pref import data
from lmsys_pref.commands import predict
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.data import metrics, splits
from lmsys_pref.files import jsonio
from lmsys_pref.infer.predictor import LMPredictor
from lmsys_pref.train import fit, merge

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_merge"
K = 3
SETTINGS = dict(n_folds=K, dtype="fp32", max_steps=60, torch_threads=2, tta="none")
WAYS = {"mean": dict(mode="mean"), "exact": dict(mode="exact"),  # into the base: fp32 as the rest
        "exact, into the base": dict(mode="exact", into_base=True, dtype="fp32")}


def split_data(shared: Path, quick: bool) -> tuple[Path, pd.DataFrame]:
    """A train folder of 80% of the rows and the 20% held out (prompt-grouped)."""
    df = data.load_split(shared / "train.csv", lenient=True)
    raw = pd.read_csv(shared / "train.csv")
    tr, va = splits.holdout(df["label"].to_numpy(), 0.2, 42,
                            groups=splits.fold_groups(df, "prompt"))
    if quick:
        tr, va = tr[:300], va[:100]
    folder = WORK / "data"
    folder.mkdir(parents=True, exist_ok=True)
    raw.iloc[tr].to_csv(folder / "train.csv", index=False)
    return folder, df.iloc[va].reset_index(drop=True)


def score(load, rows: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Probabilities of `rows` and the seconds of loading and scoring (a fold average loads
    each fold as it scores it)."""
    t0 = time.perf_counter()
    probs = load().predict_proba(rows, tta="none")
    return probs, time.perf_counter() - t0


def measure(shared: Path, quick: bool) -> dict:
    folder, held = split_data(shared, quick)
    run = WORK / "run"
    steps = 10 if quick else SETTINGS["max_steps"]
    cfg = LMConfig.from_preset("tiny-llama", data_dir=str(folder), out_dir=str(run), resume=False,
                               **{**SETTINGS, "max_steps": steps})
    m = fit.fit(cfg)
    labels = held["label"].to_numpy()
    kw = dict(devices="cpu", progress=False)
    base, seconds = score(lambda: predict.load_predictor(run, **kw), held)
    out = {"fold average": {"log_loss": metrics.log_loss(labels, base), "max_dp": 0.0,
                            "seconds": seconds, "models": K}}
    for name, opts in WAYS.items():
        folder_out = WORK / name.replace(", ", "_").replace(" ", "_")
        shutil.rmtree(folder_out, ignore_errors=True)
        merge.merge_folds(run, folder_out, **opts)
        probs, seconds = score(lambda: LMPredictor(folder_out, **kw), held)
        out[name] = {"log_loss": metrics.log_loss(labels, probs),
                     "max_dp": float(np.abs(probs - base).max()), "seconds": seconds,
                     "models": 1}
    return {"ways": out, "held_out_rows": len(held), "oof_log_loss": m["log_loss"],
            "fold_log_losses": m["fold_log_losses"], "n_train": m["n_train"], "steps": steps,
            "learning_rate": cfg.learning_rate}


def markdown(res: dict) -> str:
    lines = [f"Tiny Llama (`tiny-llama`, fp32), {K} folds on {res['n_train']} real rows "
             f"({res['steps']} steps per fold, lr {res['learning_rate']}); "
             f"{res['held_out_rows']} held-out rows no fold saw (prompt-grouped split), no TTA. "
             f"OOF log loss {res['oof_log_loss']:.4f} (folds "
             f"{', '.join(f'{x:.4f}' for x in res['fold_log_losses'])}).", "",
             "| test predictions | models scored | held-out log loss | max abs dp vs fold "
             "average | seconds to load and score (CPU) |", "|---|---:|---:|---:|---:|"]
    for name, r in res["ways"].items():
        label = name if name == "fold average" else f"merge-folds --mode {name}"
        lines.append(f"| {label} | {r['models']} | {r['log_loss']:.4f} | {r['max_dp']:.4f} | "
                     f"{r['seconds']:.1f} |")
    lines += ["", "`exact` and `exact, into the base` are the same model (their gap is float "
              "rounding); `mean` is the 1st place's merge. A random tiny model learns little, so "
              "its log losses sit near ln 3 = 1.0986: the table measures how far each merge moves "
              "the predictions, not how good they are."]
    return "\n".join(lines) + "\n"


def run(shared: Path | None, quick: bool = False) -> dict:
    if shared is None or not (shared / "train.csv").exists():
        return {"skipped": "the real data (../shared/data/lmsys-chatbot-arena) is absent"}
    res = measure(shared, quick)
    return {"title": "One model from k folds: merge-folds vs the fold average (issue 17)",
            "command": "python -m benchmarks.run --only merge", "markdown": markdown(res),
            **jsonio.jsonable(res)}


if __name__ == "__main__":
    import json
    import sys

    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lmsys-chatbot-arena")
    print(json.dumps(run(shared, quick="--quick" in sys.argv), indent=2, default=str)[:4000])
