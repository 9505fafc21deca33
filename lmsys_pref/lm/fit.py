"""Runs of the transformer baselines: `fit(cfg)` trains, scores and writes a run folder.

An LMConfig (Gemma/Llama LoRA) trains on an 80/20 holdout; an EncoderConfig (RoBERTa/MiniLM, the
paper's MSE regression) with `n_folds` > 1 trains one model per fold, so every labelled row gets an
out-of-fold prediction. Either way `cfg.out_dir` gets the run-folder contract (`lmsys_pref.runs`):
submission.csv, metrics.json, val.csv or oof.csv, model/ (adapter + head + tokenizer +
lmsys_pref.json), log_history.json, loss.png and checkpoints/ (for resuming).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, metrics, postrules, runs
from ..infer import predictor
from . import models, train

log = logging.getLogger("lmsys_pref.lm.fit")
HISTORY = "log_history.json"


def fit(cfg) -> dict:
    """Train a transformer baseline and write its run folder; returns the metrics.

    Args:
        cfg: an LMConfig (holdout of `val_frac`) or an EncoderConfig (k-fold when
            `n_folds` > 1, see `fit_kfold`).

    Returns:
        The metrics written to metrics.json: `val_log_loss` (or `cv_log_loss`), `accuracy`,
        `n_train`, `n_val`, `n_test`, `seconds`, `steps`, `untuned_val_log_loss` when asked.
    """
    t0 = time.time()
    train.setup(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    train_df, test_df = data.load_competition(cfg.data_dir, lenient=cfg.lenient,
                                              max_train_rows=cfg.max_train_rows,
                                              max_test_rows=cfg.max_test_rows)
    postrules.save(postrules.fit(train_df), out / "model")  # used by `predict -p post_rules true`
    if cfg.kind == "encoder" and getattr(cfg, "n_folds", 0) > 1:
        return fit_kfold(cfg, train_df, test_df, t0)
    tr, va = data.holdout(train_df["label"].to_numpy(), cfg.val_frac, cfg.seed)
    model, tokenizer = models.build(cfg, train.training_device(cfg))
    pissa = train.pissa_init(model, cfg, out)
    res = train.train_one(cfg, model, tokenizer, train_df.iloc[tr], train_df.iloc[va], out)
    models.save(model, tokenizer, cfg, out / "model", pissa)
    val_labels = train_df["label"].to_numpy()[va]
    m = score_metrics(res, val_labels, "val_log_loss", n_train=len(tr), n_val=len(va))
    return write_run(cfg, model, tokenizer, test_df, m, res["history"], t0,
                     runs.probs_frame(train_df["id"].to_numpy()[va], res["val_probs"], val_labels),
                     "val.csv")


def score_metrics(res: dict, labels, key: str, **extra) -> dict:
    """Metrics of one scored set (`res` from `train_one`, or an OOF equivalent)."""
    m = {key: metrics.log_loss(labels, res["val_probs"]),
         "accuracy": metrics.accuracy(labels, res["val_probs"]), **extra,
         "steps": res.get("steps"), "train_loss_first": res.get("train_loss_first"),
         "train_loss_last": res.get("train_loss_last")}
    if res.get("untuned_probs") is not None:
        m["untuned_" + key] = metrics.log_loss(labels, res["untuned_probs"])
    return m


def score_test(cfg, model, tokenizer, test_df: pd.DataFrame | None) -> np.ndarray | None:
    """Test-set probabilities (with `cfg.tta`) of a trained model.

    One device: the model in memory scores on the device it trained on. Several devices: one
    replica per device is loaded from the saved model/ (a copy of a trained or quantized model
    in memory is never made); an unquantized model in memory moves to the CPU first.
    """
    if test_df is None:
        return None
    devices = predictor.parse_devices(cfg.devices)
    if len(devices) == 1:
        return train.predict(model, tokenizer, test_df, cfg)
    if not getattr(model, "is_quantized", False):
        model.to("cpu")
    scorer = predictor.LMPredictor(Path(cfg.out_dir) / "model", devices=cfg.devices)
    return scorer.predict_proba(test_df)


def write_run(cfg, model, tokenizer, test_df, m: dict, history: list, t0: float,
              oof: pd.DataFrame, oof_name: str) -> dict:
    """Score the test set, write the run folder and the loss curve; returns the metrics."""
    out = Path(cfg.out_dir)
    m.update(models.describe(model))  # attention kernel and weights dtype actually used
    test_probs = score_test(cfg, model, tokenizer, test_df)
    m.update(n_test=0 if test_df is None else len(test_df), seconds=round(time.time() - t0, 1),
             model_id=cfg.model_id, preset_kind=cfg.kind)
    runs.save_json(out / HISTORY, history)
    runs.write_outputs(out, test_ids=None if test_df is None else test_df["id"].to_numpy(),
                       test_probs=test_probs, metrics=m, oof=oof, oof_name=oof_name)
    plot_history(out)
    log.info("%s: %s", out, json.dumps({k: v for k, v in m.items() if "loss" in k}))
    return m


def plot_history(run_dir: str | Path):
    """Training loss and validation log loss per step from log_history.json -> loss.png."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    hist = runs.load_json(Path(run_dir) / HISTORY)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("loss", "-"), ("eval_log_loss", "o--")):
        pts = [(h["step"], h[key]) for h in hist if key in h and h[key] is not None]
        if pts:
            ax.plot(*zip(*pts), style, label="train loss" if key == "loss" else "val log loss")
    ax.axhline(np.log(3), color="grey", lw=0.8, ls=":", label="uniform (1.0986)")
    ax.set(xlabel="optimizer step", ylabel="loss", title=Path(run_dir).name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(run_dir) / "loss.png", dpi=100)
    return fig


def fit_kfold(cfg, train_df: pd.DataFrame, test_df: pd.DataFrame | None,
              t0: float | None = None) -> dict:
    """Train `cfg.n_folds` models, write oof.csv and the best fold's model; returns the metrics.

    Metrics: `cv_log_loss` (all OOF rows), `accuracy`, `fold_log_losses`, `best_fold`,
    `untuned_cv_log_loss` when `cfg.untuned_baseline`, `n_train`, `n_test`, `seconds`.
    """
    t0 = time.time() if t0 is None else t0
    out = Path(cfg.out_dir)
    labels = train_df["label"].to_numpy()
    folds = data.kfold(labels, cfg.n_folds, cfg.seed)
    oof = np.full((len(train_df), 3), np.nan)
    untuned = np.full_like(oof, np.nan) if cfg.untuned_baseline else None
    fold_losses, history, best, steps = [], [], (np.inf, -1), 0
    device = train.training_device(cfg)
    for k, (tr, va) in enumerate(folds):
        model, tokenizer = models.build(cfg, device)
        res = train.train_one(cfg, model, tokenizer, train_df.iloc[tr], train_df.iloc[va],
                        out / "folds" / f"fold{k}")
        oof[va] = res["val_probs"]
        if untuned is not None:
            untuned[va] = res["untuned_probs"]
        loss = metrics.log_loss(labels[va], res["val_probs"])
        fold_losses.append(loss)
        history += [{**h, "fold": k} for h in res["history"]]
        steps += res["steps"]
        log.info("fold %d/%d: log loss %.4f", k + 1, len(folds), loss)
        if loss < best[0]:  # keep only the best fold on disk: model/ is what predict loads
            best = (loss, k)
            models.save(model, tokenizer, cfg, out / "model")
        del model
    m = score_metrics({"val_probs": oof, "untuned_probs": untuned, "steps": steps}, labels,
                  "cv_log_loss", n_train=len(train_df), n_folds=len(folds),
                  fold_log_losses=fold_losses, best_fold=best[1])
    model, tokenizer, _ = models.load_for_inference(out / "model", device)
    oof_frame = runs.probs_frame(train_df["id"].to_numpy(), oof, labels)
    return write_run(cfg, model, tokenizer, test_df, m, history, t0, oof_frame, "oof.csv")
