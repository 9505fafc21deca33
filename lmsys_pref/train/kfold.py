"""k-fold runs of the transformer baselines (the winners' layout): one model per fold, an
out-of-fold prediction for every labelled row, the folds' test predictions averaged.

model/ holds one saved model per fold (`fold_k/`, each loadable on its own), a
`lmsys_pref.json` naming the folds `predict` averages (`fold_select`: all, or the best) and
`held_out.json`, the ids each fold never trained on (the bias probes and per-fold teachers use
it). The run folder is written by `outputs.write_run`, like a holdout run's.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs
from ..data import labels, metrics, splits
from ..files import atomic
from ..model import models
from ..runs import postrules
from . import loop
from .outputs import score_test, scored_rows, write_run

log = logging.getLogger("lmsys_pref.train.kfold")


def fit_kfold(cfg, rows: labels.TrainingData, t0: float | None = None,
              rules: dict | None = None) -> dict:
    """Train `cfg.n_folds` models; oof.csv for every row, the folds' test predictions averaged.

    Args:
        cfg: the run's LMConfig or EncoderConfig.
        rows: the run's rows (`labels.load_training`): train, test, extra rows, teachers.
        t0: when the run started (its `seconds` count from there).
        rules: post-rules saved with the model (None: fitted on the training rows).

    Returns:
        metrics.json (`eval` "oof"): `log_loss` of all OOF rows, `fold_log_losses`,
        `best_fold`, `untuned_log_loss` when `cfg.untuned_baseline`, `n_train`, `n_test`, ...
    """
    t0 = time.time() if t0 is None else t0
    out, train_df, test_df = Path(cfg.out_dir), rows.train, rows.test
    y = train_df["label"].to_numpy()
    folds = splits.kfold(splits.strata(train_df), cfg.n_folds, cfg.seed,
                         groups=splits.fold_groups(train_df, cfg.group_by))
    rows.prepare(folds)  # every teacher covers every fold's training rows, before training
    oof = np.full((len(train_df), cfg.model.n_labels), np.nan)
    untuned = np.full_like(oof, np.nan) if cfg.untuned_baseline else None
    fold_losses, fold_tests, history, steps, loaded = [], [], [], 0, {}
    with atomic.atomic_dir(out / "model") as model_dir:  # whole (every fold) or not at all
        for k, (tr, va) in enumerate(folds):
            res, fold_test, loaded = _fit_fold(cfg, rows.training_rows(tr, k), train_df.iloc[va],
                                               test_df, out / "folds" / f"fold{k}",
                                               model_dir / f"fold_{k}")
            oof[va], fold_tests = res.val_probs, fold_tests + [fold_test]
            if untuned is not None:
                untuned[va] = res.untuned_probs
            fold_losses.append(_fold_loss(train_df.iloc[va], res.val_probs))
            history += [{**h, "fold": k} for h in res.history]
            steps += res.steps
            log.info("fold %d/%d: log loss %.4f", k + 1, len(folds), fold_losses[-1])
        best = int(np.argmin(np.nan_to_num(fold_losses, nan=np.inf)))
        used = list(range(len(folds))) if cfg.fold_select == "mean" else [best]
        runs.write_model_meta(model_dir, cfg.kind, cfg.to_dict(),
                              folds=[f"fold_{k}" for k in used])
        runs.save_json(model_dir / runs.HELD_OUT, {  # which rows each fold never saw
            f"fold_{k}": train_df["id"].to_numpy()[va] for k, (_, va) in enumerate(folds)})
        postrules.save(rules or postrules.fit(train_df), model_dir)
    test_probs = None if test_df is None else np.mean([fold_tests[k] for k in used], axis=0)
    every_fold = loop.TrainResult(oof, untuned, history, steps)
    scored = scored_rows(every_fold, train_df, "oof", n_train=len(train_df),
                             n_folds=len(folds), fold_log_losses=fold_losses, best_fold=best,
                             **rows.report())
    oof_frame = runs.probs_frame(train_df["id"].to_numpy(), oof, y)
    return write_run(cfg, test_df, test_probs, scored, history, t0, loaded, oof_frame)


def _fit_fold(cfg, train_rows: pd.DataFrame, val_rows: pd.DataFrame, test_df, work_dir: Path,
              fold_dir: Path) -> tuple[loop.TrainResult, np.ndarray | None, dict]:
    """One fold: train, save to `fold_dir`, score the test set (swap TTA inside the fold)."""
    model, tokenizer = models.build(cfg.model, loop.training_device(cfg))
    loop.warm_start(model, cfg)  # -p init_from: a trained run's adapter and head, every fold
    pissa = loop.pissa_init(model, cfg, work_dir)
    res = loop.train_one(cfg, model, tokenizer, train_rows, val_rows, work_dir)
    models.save(model, tokenizer, cfg, fold_dir, pissa)
    loaded = models.describe(model)  # before score_test, which may release the model
    return res, score_test(cfg, model, tokenizer, test_df, fold_dir), loaded


def _fold_loss(rows: pd.DataFrame, probs: np.ndarray) -> float:
    """A fold's headline log loss: of its one-hot rows (NaN when it has none)."""
    hard, _ = labels.scored(rows, probs)
    return metrics.log_loss(rows["label"].to_numpy()[hard], probs[hard]) if hard.any() \
        else float("nan")
