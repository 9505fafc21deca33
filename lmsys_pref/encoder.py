"""The encoder baseline's k-fold loop (the paper's RoBERTa: MSE on one-hot targets, 5 folds).

Every fold trains a fresh model from the same starting weights and scores its held-out rows, so
every labelled row gets an out-of-fold prediction (oof.csv, `cv_log_loss`). The fold with the
lowest held-out log loss is kept as model/ and scores the test set. `train.fit` calls this for an
EncoderConfig with `n_folds` > 1.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import data, metrics, models, runs
from .train import finish, summarize, train_one, training_device

log = logging.getLogger("lmsys_pref.encoder")


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
    device = training_device(cfg)
    for k, (tr, va) in enumerate(folds):
        model, tokenizer = models.build(cfg, device)
        res = train_one(cfg, model, tokenizer, train_df.iloc[tr], train_df.iloc[va],
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
    m = summarize({"val_probs": oof, "untuned_probs": untuned, "steps": steps}, labels,
                  "cv_log_loss", n_train=len(train_df), n_folds=len(folds),
                  fold_log_losses=fold_losses, best_fold=best[1])
    model, tokenizer, _ = models.load_for_inference(out / "model", device)
    oof_frame = runs.probs_frame(train_df["id"].to_numpy(), oof, labels)
    return finish(cfg, model, tokenizer, test_df, m, history, t0, oof_frame, "oof.csv")
