"""Runs of the transformer baselines: `fit(cfg)` trains, scores and writes a run folder.

With `n_folds` <= 1 (the LoRA presets' default) a run trains on a holdout split of `val_frac`;
with `n_folds` > 1 (the encoder's default, the winners' recipe) it trains one model per fold, so
every labelled row gets an out-of-fold prediction and the folds' test predictions are averaged.
Either way `cfg.out_dir` gets the run-folder contract (`lmsys_pref.runs`):
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

from .. import runs
from ..data import check_n_folds, find_file, labels, metrics, splits
from ..files import atomic
from ..infer import predictor
from ..infer.devices import release
from ..model import models
from ..runs import postrules, resume
from . import loop

log = logging.getLogger("lmsys_pref.train.fit")
HISTORY = "log_history.json"


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
    loop.setup(cfg)
    out = runs.prepare_out_dir(cfg.out_dir)  # writable; a previous run's outputs moved aside
    if cfg.n_folds <= 1:  # k-fold runs check each fold's folder
        resume.check_resume(out, cfg)  # a changed config stops here, before any model loads
    cfg.save(out / "config.yaml")
    rows = labels.load_training(cfg)  # + extra_train rows and teacher files, all checked
    train_df, test_df = rows.train, rows.test
    check_n_folds(train_df, cfg.n_folds, str(find_file(cfg.data_dir, "train")), cfg.group_by)
    rules = postrules.fit(train_df)  # saved with the model: `predict -p post_rules true`
    if cfg.n_folds > 1:
        return fit_kfold(cfg, train_df, test_df, t0, rules, rows)
    tr, va = splits.holdout(train_df["label"].to_numpy(), cfg.val_frac, cfg.seed,
                            groups=splits.fold_groups(train_df, cfg.group_by))
    rows.prepare([(tr, va)])  # every teacher covers the training rows: before any model loads
    model, tokenizer = models.build(cfg, loop.training_device(cfg))
    pissa = loop.pissa_init(model, cfg, out)
    res = loop.train_one(cfg, model, tokenizer, rows.training_rows(tr), train_df.iloc[va], out)
    with atomic.atomic_dir(out / "model") as model_dir:  # whole or not at all
        models.save(model, tokenizer, cfg, model_dir, pissa)
        postrules.save(rules, model_dir)
    val_labels = train_df["label"].to_numpy()[va]
    m = scored_rows(res, train_df.iloc[va], "val", n_train=len(train_df), **rows.report())
    loaded = models.describe(model)  # before score_test, which may release the model
    test_probs = score_test(cfg, model, tokenizer, test_df, out / "model")
    return write_run(cfg, test_df, test_probs, m, res["history"], t0, loaded,
                     runs.probs_frame(train_df["id"].to_numpy()[va], res["val_probs"], val_labels))


def scored_rows(res: dict, rows: pd.DataFrame, eval: str, **extra) -> dict:
    """What `write_run` turns into metrics.json: the scored rows (`res` from `train_one`, or
    its k-fold equivalent) and the optional keys of the vocabulary (`runs.METRIC_KEYS`).

    The headline scores the one-hot rows (all of the competition's); soft-labelled rows are
    scored as `soft_log_loss` (`labels.scored`)."""
    hard, soft = labels.scored(rows, res["val_probs"])
    y = rows["label"].to_numpy()[hard] if hard.any() else None
    m = {"labels": y, "probs": res["val_probs"][hard] if hard.any() else None, "eval": eval,
         "n_eval": int(hard.sum()), **soft, **extra, "steps": res.get("steps"),
         "train_loss_first": res.get("train_loss_first"),
         "train_loss_last": res.get("train_loss_last")}
    if res.get("untuned_probs") is not None and y is not None:
        m["untuned_log_loss"] = metrics.log_loss(y, res["untuned_probs"][hard])
    return m


def score_test(cfg, model, tokenizer, test_df: pd.DataFrame | None, model_dir: Path
               ) -> np.ndarray | None:
    """Test-set probabilities (with `cfg.tta`) of a trained model.

    One device: the model in memory scores on the device it trained on. Several devices: one
    replica per device is loaded from the saved model/ (a copy of a trained or quantized model
    in memory is never made) after the trained model's weights are released from its device
    (`devices.release`: a quantized one cannot move to the CPU, and a second replica beside it
    on cuda:0 would not fit a 16 GB T4); the model cannot be used afterwards.
    """
    if test_df is None:
        return None
    cfg = models.scoring_config(cfg)
    devices = predictor.parse_devices(cfg.devices)
    if len(devices) == 1:
        return loop.predict(model, tokenizer, test_df, cfg)
    release(model)
    scorer = predictor.LMPredictor(model_dir, devices=cfg.devices)
    return scorer.predict_proba(test_df)


def write_run(cfg, test_df, test_probs, scored: dict, history: list, t0: float, loaded: dict,
              oof: pd.DataFrame) -> dict:
    """Write the run folder and the loss curve; returns metrics.json.

    `loaded` is `models.describe` of the trained model: the attention kernel and weights dtype
    that were actually used.
    """
    out = Path(cfg.out_dir)
    m = runs.run_metrics(scored.pop("labels"), scored.pop("probs"), **scored,
                         n_test=0 if test_df is None else len(test_df),
                         seconds=time.time() - t0, model_id=cfg.model_id, **loaded)
    runs.save_json(out / HISTORY, history)
    runs.write_outputs(out, test_ids=None if test_df is None else test_df["id"].to_numpy(),
                       test_probs=test_probs, metrics=m, oof=oof,
                       oof_name=runs.EVAL_FILES[m["eval"]])
    plot_history(out)
    log.info("%s: %s", out, json.dumps({k: v for k, v in m.items() if "loss" in k}))
    return m


def plot_history(run_dir: str | Path):
    """Training loss and validation log loss per step from log_history.json -> loss.png.

    Returns:
        The figure, closed once saved: pyplot keeps no reference to it (a test session or a
        grid of runs would pile up open figures); it can still be saved again or shown. The
        notebooks show loss.png from the file (`eval.notebook_view.show_report`).
    """
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
    plt.close(fig)
    return fig


def fit_kfold(cfg, train_df: pd.DataFrame, test_df: pd.DataFrame | None,
              t0: float | None = None, rules: dict | None = None,
              rows: labels.TrainingData | None = None) -> dict:
    """Train `cfg.n_folds` models; oof.csv for every row, the folds' test predictions averaged.

    model/ holds one saved model per fold (`fold_k/`, each loadable on its own) and a
    `lmsys_pref.json` naming the folds `predict` averages (`fold_select`: all, or the best).
    Metrics (`runs.METRIC_KEYS`, `eval` "oof"): `log_loss` of all OOF rows, `fold_log_losses`,
    `best_fold`, `untuned_log_loss` when `cfg.untuned_baseline`, `n_train`, `n_test`, `seconds`.
    """
    t0 = time.time() if t0 is None else t0
    out = Path(cfg.out_dir)
    y = train_df["label"].to_numpy()
    folds = splits.kfold(y, cfg.n_folds, cfg.seed,
                         groups=splits.fold_groups(train_df, cfg.group_by))
    rows = rows or labels.TrainingData(train_df, test_df)
    rows.prepare(folds)  # every teacher covers every fold's training rows, before training
    oof = np.full((len(train_df), 3), np.nan)
    untuned = np.full_like(oof, np.nan) if cfg.untuned_baseline else None
    fold_losses, fold_tests, history, steps, loaded = [], [], [], 0, {}
    with atomic.atomic_dir(out / "model") as model_dir:  # whole (every fold) or not at all
        for k, (tr, va) in enumerate(folds):
            res, fold_test, loaded = _fit_fold(cfg, rows.training_rows(tr, k), train_df.iloc[va],
                                               test_df, out / "folds" / f"fold{k}",
                                               model_dir / f"fold_{k}")
            oof[va], fold_tests = res["val_probs"], fold_tests + [fold_test]
            if untuned is not None:
                untuned[va] = res["untuned_probs"]
            fold_losses.append(_fold_loss(train_df.iloc[va], res["val_probs"]))
            history += [{**h, "fold": k} for h in res["history"]]
            steps += res["steps"]
            log.info("fold %d/%d: log loss %.4f", k + 1, len(folds), fold_losses[-1])
        best = int(np.argmin(np.nan_to_num(fold_losses, nan=np.inf)))
        used = list(range(len(folds))) if cfg.fold_select == "mean" else [best]
        runs.write_model_meta(model_dir, cfg.kind, cfg.to_dict(),
                              folds=[f"fold_{k}" for k in used])
        runs.save_json(model_dir / runs.HELD_OUT, {  # which rows each fold never saw
            f"fold_{k}": train_df["id"].to_numpy()[va] for k, (_, va) in enumerate(folds)})
        postrules.save(rules or postrules.fit(train_df), model_dir)
    test_probs = None if test_df is None else np.mean([fold_tests[k] for k in used], axis=0)
    losses = [h["loss"] for h in history if "loss" in h]  # first fold's first, last fold's last
    m = scored_rows({"val_probs": oof, "untuned_probs": untuned, "steps": steps,
                     "train_loss_first": losses[0] if losses else None,
                     "train_loss_last": losses[-1] if losses else None}, train_df, "oof",
                    n_train=len(train_df), n_folds=len(folds), fold_log_losses=fold_losses,
                    best_fold=best, **rows.report())
    oof_frame = runs.probs_frame(train_df["id"].to_numpy(), oof, y)
    return write_run(cfg, test_df, test_probs, m, history, t0, loaded, oof_frame)


def _fit_fold(cfg, train_rows: pd.DataFrame, val_rows: pd.DataFrame, test_df, work_dir: Path,
              fold_dir: Path) -> tuple[dict, np.ndarray | None, dict]:
    """One fold: train, save to `fold_dir`, score the test set (swap TTA inside the fold)."""
    model, tokenizer = models.build(cfg, loop.training_device(cfg))
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
