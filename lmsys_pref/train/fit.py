"""Runs of the transformer baselines: `fit(cfg)` trains, scores and writes a run folder.

With `n_folds` <= 1 (the LoRA presets' default) a run trains on a holdout split of `val_frac`;
with `n_folds` > 1 (the encoder's default, the winners' recipe) it trains one model per fold, so
every labelled row gets an out-of-fold prediction and the folds' test predictions are averaged.
Either way `cfg.out_dir` gets the run-folder contract (`lmsys_pref.runs`):
submission.csv, metrics.json, val.csv or oof.csv, model/ (adapter + head + tokenizer +
lmsys_pref.json), log_history.json, loss.png and checkpoints/ (for resuming).
"""
from __future__ import annotations

import logging
import time

from .. import runs
from ..data import check_n_folds, find_file, labels, splits
from ..data.task import resolve
from ..files import atomic
from ..model import models
from ..runs import postrules, resume
from . import kfold, loop
from .outputs import score_test, scored_rows, write_run

log = logging.getLogger("lmsys_pref.train.fit")


@runs.holds_out_dir  # one run per OUT_DIR, never DATA_DIR: a second run stops at once
def fit(cfg) -> dict:
    """Train a transformer baseline and write its run folder; returns the metrics.

    Args:
        cfg: an LMConfig or EncoderConfig (a holdout of `val_frac`, or k-fold when
            `n_folds` > 1, see `fit_kfold`).

    Returns:
        metrics.json (`runs.METRIC_KEYS`: `log_loss` of the holdout or the OOF rows, `eval`,
        ...; `untuned_log_loss` when asked, `weights_dtype`, `attn_implementation`).
    """
    t0 = time.time()
    cfg = cfg.replace(task=resolve(cfg.task, cfg.data_dir).name)  # recorded with the run
    loop.setup(cfg)
    out = runs.prepare_out_dir(cfg.out_dir)  # writable; a previous run's outputs moved aside
    if cfg.n_folds <= 1:  # k-fold runs check each fold's folder
        resume.check_resume(out, cfg)  # a changed config stops here, before any model loads
    cfg.save(out / "config.yaml")
    rows = labels.load_training(cfg.data)  # + extra_train rows and teacher files, all checked
    train_df, test_df = rows.train, rows.test
    check_n_folds(train_df, cfg.n_folds, str(find_file(cfg.data_dir, "train")), cfg.group_by)
    rules = postrules.fit(train_df)  # saved with the model: `predict -p post_rules true`
    if cfg.n_folds > 1:
        return kfold.fit_kfold(cfg, rows, t0, rules)
    tr, va = splits.holdout(splits.strata(train_df), cfg.val_frac, cfg.seed,
                            groups=splits.fold_groups(train_df, cfg.group_by))
    rows.prepare([(tr, va)])  # every teacher covers the training rows: before any model loads
    model, tokenizer = models.build(cfg.model, loop.training_device(cfg))
    started = loop.warm_start(model, cfg)  # -p init_from: a trained run's adapter and head
    pissa = loop.pissa_init(model, cfg, out)
    res = loop.train_one(cfg, model, tokenizer, rows.training_rows(tr), train_df.iloc[va], out)
    with atomic.atomic_dir(out / "model") as model_dir:  # whole or not at all
        models.save(model, tokenizer, cfg, model_dir, pissa)
        postrules.save(rules, model_dir)
    val = train_df.iloc[va]
    scored = scored_rows(res, val, "val", n_train=len(train_df), **started, **rows.report())
    loaded = models.describe(model)  # before score_test, which may release the model
    test_probs = score_test(cfg, model, tokenizer, test_df, out / "model")
    return write_run(cfg, test_df, test_probs, scored, res.history, t0, loaded,
                     runs.probs_frame(val["id"].to_numpy(), res.val_probs, val["label"]))
