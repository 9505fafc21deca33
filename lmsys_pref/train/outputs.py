"""What a transformer run writes once its models are trained: the scored held-out rows as
metrics.json, the test set's probabilities, the Trainer's log and its loss curve (the run-folder
contract, `lmsys_pref.runs`). Shared by holdout runs (`fit`) and k-fold runs (`kfold`)."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs
from ..configs.tasks import get
from ..data import labels, metrics
from ..infer import predictor
from ..infer.devices import release
from . import loop

log = logging.getLogger("lmsys_pref.train.outputs")
HISTORY = "log_history.json"


@dataclasses.dataclass
class Scored:
    """The held-out rows metrics.json scores, and what else it says of the run."""

    labels: np.ndarray | None
    """Class indices of the one-hot rows the headline scores (None: no row was scored)."""
    probs: np.ndarray | None
    """Their (n, k) probabilities."""
    eval: str
    """'val' (a holdout) or 'oof' (k folds)."""
    optional: dict
    """Keys of `runs.OPTIONAL_METRIC_KEYS` (n_eval, steps, training losses, levers, ...)."""


def scored_rows(res: loop.TrainResult, rows: pd.DataFrame, eval: str, **extra) -> Scored:
    """What `write_run` turns into metrics.json: the scored rows of `res` (one holdout, or
    every fold's OOF rows) and optional keys of the vocabulary (`runs.OPTIONAL_METRIC_KEYS`).

    The headline scores the one-hot rows (all of the competition's); soft-labelled rows are
    scored as `soft_log_loss` (`labels.scored`)."""
    hard, soft = labels.scored(rows, res.val_probs)
    y = rows["label"].to_numpy()[hard] if hard.any() else None
    optional = {"n_eval": int(hard.sum()), **soft, **extra, "steps": res.steps,
                "train_loss_first": res.train_loss_first,
                "train_loss_last": res.train_loss_last,
                **{k: v for h in res.history for k, v in h.items()
                   if k in ("best_step", "ends_at")}}
    if "language" in rows.columns and y is not None:
        optional["by_language"] = metrics.by_group(y, res.val_probs[hard],
                                                   rows["language"].to_numpy()[hard])
    if res.untuned_probs is not None and y is not None:
        optional["untuned_log_loss"] = metrics.log_loss(y, res.untuned_probs[hard])
    return Scored(y, res.val_probs[hard] if hard.any() else None, eval, optional)


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
    cfg = cfg.for_scoring()
    devices = predictor.parse_devices(cfg.devices)
    if len(devices) == 1:
        return loop.predict(model, tokenizer, test_df, cfg)
    release(model)
    scorer = predictor.LMPredictor(model_dir, devices=cfg.devices)
    return scorer.predict_proba(test_df)


def write_run(cfg, test_df, test_probs, scored: Scored, history: list, t0: float,
              loaded: dict, oof: pd.DataFrame) -> dict:
    """Write the run folder and the loss curve; returns metrics.json.

    `loaded` is `models.describe` of the trained model: the attention kernel and weights dtype
    that were actually used.
    """
    out, task = Path(cfg.out_dir), get(cfg.task)
    m = runs.run_metrics(scored.labels, scored.probs, eval=scored.eval, **scored.optional,
                         n_test=0 if test_df is None else len(test_df),
                         seconds=time.time() - t0, model_id=cfg.model_id, task=task.name,
                         metric=task.metric, **loaded)
    runs.save_json(out / HISTORY, history)
    runs.write_outputs(out, test_ids=None if test_df is None else test_df["id"].to_numpy(),
                       test_probs=test_probs, metrics=m, oof=oof,
                       oof_name=runs.EVAL_FILES[m["eval"]], task=task)
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
    names = {"loss": "train loss", "eval_log_loss": "val log loss",
             "eval_loss": "stop-row loss (keep_best)"}
    for key, style in (("loss", "-"), ("eval_log_loss", "o--"), ("eval_loss", "s:")):
        pts = [(h["step"], h[key]) for h in hist if key in h and h[key] is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=names[key])
    ax.axhline(np.log(3), color="grey", lw=0.8, ls=":", label="uniform (1.0986)")
    ax.set(xlabel="optimizer step", ylabel="loss", title=Path(run_dir).name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(run_dir) / "loss.png", dpi=100)
    plt.close(fig)
    return fig


