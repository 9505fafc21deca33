"""Every baseline blends (issue 13), on the 1,500 real rows, CPU.

1. An XGBoost run (5 prompt-grouped folds) and a 5-fold SmolLM2-135M LoRA run at small settings
   both score every labelled row out of fold, so `make blend` fits on all 1,500 rows; the
   cross-fitted blend is compared with each single run.
2. A 3-fold encoder run (MiniLM) trained on 1,200 rows: its fold-mean and its best-fold test
   predictions, both scored on the 300 held-out labelled rows.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from lmsys_pref import data, metrics, predict, runs, splits, xgb
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.eval import blend
from lmsys_pref.infer.predictor import LMPredictor
from lmsys_pref.train import fit

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench_ensembles"
# small settings for a 2-core CPU: 96 tokens, 25 optimizer steps (400 rows) per fold, LoRA on the
# last 6 of SmolLM2's 30 layers (backward stops there)
LM_SETTINGS = dict(n_folds=5, max_length=96, max_steps=25, lora_layers_from=24,
                   untuned_baseline=False, torch_threads=2)
ENC_SETTINGS = dict(n_folds=3, max_length=128, epochs=1, torch_threads=2)


def blend_runs(shared: Path) -> dict:
    """XGBoost + 5-fold SmolLM2 LoRA, then their cross-fitted blend."""
    arena = shared
    xgb_m = xgb.fit(XGBConfig(data_dir=str(arena), out_dir=str(WORK / "xgb"), n_jobs=2))
    t0 = time.time()
    lm_m = fit.fit(LMConfig.from_preset("smollm2-135m", data_dir=str(arena),
                                        out_dir=str(WORK / "smollm2"), **LM_SETTINGS))
    lm_seconds = time.time() - t0
    blended = blend.blend([WORK / "xgb", WORK / "smollm2"], WORK / "blend")
    return {"xgb": xgb_m, "smollm2": lm_m, "smollm2_seconds": round(lm_seconds),
            "blend": blended}


def encoder_folds(shared: Path) -> dict:
    """3-fold MiniLM on 1,200 rows; fold-mean vs best fold on 300 held-out labelled rows."""
    df = data.load_split(shared / "train.csv", lenient=True)
    raw = pd.read_csv(shared / "train.csv")
    tr, va = splits.holdout(df["label"].to_numpy(), 0.2, 42,
                          groups=splits.fold_groups(df, "prompt"))
    folder = WORK / "encoder_data"
    folder.mkdir(parents=True, exist_ok=True)
    raw.iloc[tr].to_csv(folder / "train.csv", index=False)
    raw.iloc[va].drop(columns=list(data.LABEL_COLS) + ["model_a", "model_b"]).to_csv(
        folder / "test.csv", index=False)
    cfg = EncoderConfig.from_preset("minilm", data_dir=str(folder),
                                    out_dir=str(WORK / "minilm"), **ENC_SETTINGS)
    m = fit.fit(cfg)
    held = df.iloc[va]
    mean = predict.load_predictor(cfg.out_dir, devices="cpu").predict_proba(held)
    best_dir = Path(cfg.out_dir) / "model" / f"fold_{m['best_fold']}"
    best = LMPredictor(best_dir, devices="cpu").predict_proba(held)
    labels = held["label"].to_numpy()
    return {"cv_log_loss": m["log_loss"], "fold_log_losses": m["fold_log_losses"],
            "best_fold": m["best_fold"], "held_out_rows": len(held),
            "fold_mean_log_loss": metrics.log_loss(labels, mean),
            "best_fold_log_loss": metrics.log_loss(labels, best)}


def markdown(res: dict) -> str:
    b, e = res["blend"], res["encoder"]
    singles = {"XGBoost (5 folds)": b["xgb"]["log_loss"],
               "SmolLM2-135M LoRA (5 folds)": b["smollm2"]["log_loss"]}
    lines = ["| predictions (OOF, 1,500 rows) | log loss |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in singles.items()]
    lines.append(f"| **blend, cross-fitted** ({b['blend'].get('n_eval', '?')} shared rows) | "
                 f"**{b['blend']['log_loss']:.4f}** |")
    beat = b["blend"]["log_loss"] < min(singles.values())
    lines += ["", f"Goal (blend below the better single run): **{'met' if beat else 'not met'}**."
              f" SmolLM2 5-fold run ({LM_SETTINGS}): {b['smollm2_seconds']} s on CPU.", "",
              f"Encoder (MiniLM, 3 folds on 1,200 rows; {e['held_out_rows']} held-out labelled "
              "rows, prompt-grouped split):", "",
              "| test predictions | held-out log loss |", "|---|---:|",
              f"| mean of the 3 folds | {e['fold_mean_log_loss']:.4f} |",
              f"| best fold only (fold {e['best_fold']}) | {e['best_fold_log_loss']:.4f} |", "",
              f"Out-of-fold log loss of the 1,200 rows: {e['cv_log_loss']:.4f} "
              f"(folds {', '.join(f'{x:.4f}' for x in e['fold_log_losses'])})."]
    return "\n".join(lines) + "\n"


def run(shared: Path | None, quick: bool = False) -> dict:
    if shared is None or not (shared / "train.csv").exists():
        return {"skipped": "the real data (../shared/data/lmsys-chatbot-arena) is absent"}
    res = {"blend": blend_runs(shared), "encoder": encoder_folds(shared)}
    return {"title": "Blends of every baseline; fold averaging (issue 13)",
            "command": "python -m benchmarks.run --only ensembles",
            "markdown": markdown(res), **{k: runs._jsonable(v) for k, v in res.items()}}



if __name__ == "__main__":
    import json
    import sys

    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lmsys-chatbot-arena")
    print(json.dumps(run(shared), indent=2, default=str)[:4000])
