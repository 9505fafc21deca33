"""Cascades (`predict -p cascade "runs/b:0.35 runs/c:0.15:1.5"`, `make predict CASCADE=...`):
the first model scores every row, each later model only the rows the blend so far is least
sure of. The 7th place of WSDM Cup 2025 ran Gemma-2-9B on every row, Qwen2.5-14B on the 35 %
least certain and a 32B on the 15 % most uncertain (weight 1.5).

A stage takes the `fraction` least certain rows of the current blend (`uncertainty`: the margin
between the two most probable classes), scores them with its model (any kind, through
`loaders.load_predictor`: XGBoost, LM, k-fold, merged) and blends them in: p <- (p + w q) /
(1 + w). Its weight `w` is the one given, else fitted on the out-of-fold rows the runs share
(oof.csv/val.csv; the same selection of least certain rows, then the weight of `WEIGHT_GRID`
with the lowest log loss), else `CASCADE_WEIGHT` when fewer than `MIN_FIT_ROWS` such rows exist.

Time: the later stages' share of the limit is set aside up front by their sizes (`reserve_h`:
the first model's optional work, its adaptive swap pass, leaves it to them). At each stage's
start the time left is split among the stages still to run in proportion to their rows; the
stage's model is watched by its own `Budget` with that share as its limit. When the projection
does not fit, the stage stops at once and is scored again on the least certain rows that fit
(`Budget.rows_that_fit`), at most `MAX_CUTS` times; the log and predict.json say so. An
XGBoost stage takes seconds and is not watched. Torch-free (torch loads with a transformer).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runs
from ..configs.predict import CASCADE_WEIGHT, CascadeStage, PredictConfig
from ..data import metrics
from ..files.tables import LABEL_COLS
from . import budget as timing  # its `clock`, which tests fake
from .budget import SAFETY, Budget, TimeBudgetExceeded, duration
from .loaders import TRANSFORMER_KINDS, load_predictor, tta_for
from .uncertainty import least_certain, share_of

log = logging.getLogger("lmsys_pref.infer.cascade")
MIN_FIT_ROWS = 30  # shared out-of-fold rows a stage's weight is fitted on, at least
WEIGHT_GRID = np.round(np.geomspace(0.05, 20, 41), 3)
MAX_CUTS = 3  # attempts after the first whose projection did not fit
STAGE_SETTINGS = ("devices", "token_budget", "dtype", "quantization")  # the machine's, not
# model_id / max_length / tta: those belong to the first model or to each stage's own run


def reserve_h(limit_h: float, stages: tuple[CascadeStage, ...]) -> float:
    """Hours the first model's optional work leaves to the later stages: their share of the
    limit by rows (first model 1, each stage its fraction)."""
    later = sum(s.fraction for s in stages)
    return limit_h * later / (1 + later)


def run(cfg: PredictConfig, test: pd.DataFrame, probs: np.ndarray, first: Budget,
        first_seconds: float | None) -> tuple[np.ndarray, list[dict]]:
    """The later stages of `cfg.cascade` on the first model's `probs` of `test`.

    Args:
        cfg: the predict run's config (`cfg.stages`, `time_limit_h`, the machine's settings).
        test: the rows, in the submission's order.
        probs: the first model's probabilities of `test`.
        first: the first model's budget (the limit counts from its start).
        first_seconds: the first model's wall time.

    Returns:
        (the cascade's probabilities, one record per stage for predict.json).
    """
    probs = np.array(probs, dtype=np.float64)
    records = [{"stage": 1, "model_dir": str(cfg.model_dir), "fraction": 1.0, "rows": len(test),
                "weight": 1.0, "weight_source": "first model", "seconds": first_seconds}]
    oof = read_oof(cfg.model_dir)
    stages = cfg.stages
    log.info("cascade: %s on all %d rows, then %s", cfg.model_dir, len(test), "; ".join(
        f"{s.model_dir} on the {share_of(len(test), s.fraction)} least certain" for s in stages))
    for k, stage in enumerate(stages):
        left = first.seconds_left()
        share = left * stage.fraction / sum(s.fraction for s in stages[k:])
        rows = least_certain(probs, stage.fraction)
        t0 = timing.clock()
        scored, note, extra = score_stage(cfg, stage, test.iloc[rows], share, k + 2)
        scored = np.zeros((0, probs.shape[1])) if scored is None else scored
        weight, source, oof = weight_for(stage, oof)
        done = rows[:len(scored)]
        probs[done] = (probs[done] + weight * scored) / (1 + weight)
        records.append({"stage": k + 2, "model_dir": stage.model_dir,
                        "fraction": stage.fraction, "target_rows": len(rows),
                        "rows": len(done), "weight": weight, "weight_source": source,
                        "seconds": timing.clock() - t0,
                        "time_share": None if math.isinf(share) else duration(share),
                        "cut": note, "ids": [str(i) for i in test["id"].iloc[done]], **extra})
        log.info("cascade stage %d: %s on %d of %d rows, weight %.3g (%s), %s%s", k + 2,
                 stage.model_dir, len(done), len(rows), weight, source,
                 duration(records[-1]["seconds"]), f"; {note}" if note else "")
    return probs, records


def score_stage(cfg: PredictConfig, stage: CascadeStage, rows: pd.DataFrame, share_s: float,
                number: int) -> tuple[np.ndarray | None, str | None, dict]:
    """The stage model's probabilities of the first rows of `rows` (least certain first) that
    fit `share_s` seconds: (probs, or None when no row fits; why it was cut, or None; the
    stage's budget figures)."""
    if share_s <= 0:  # the limit is spent: not even the model's load fits
        return None, "no time left in the limit for this stage", {}
    kind = runs.read_model_meta(stage.model_dir)["kind"]
    settings = {k: v for k, v in cfg.model_overrides().items() if k in STAGE_SETTINGS}
    budget = None
    if kind in TRANSFORMER_KINDS:
        budget = Budget(0.0 if math.isinf(share_s) else share_s / SAFETY / 3600)
        cache = str(Path(cfg.cache_dir) / f"stage_{number}") if cfg.cache_dir else None
        settings.update(progress=cfg.progress, cache_dir=cache, budget=budget,
                        tta_fraction=cfg.tta_fraction)
    t0, n, note = timing.clock(), len(rows), None
    predictor = load_predictor(stage.model_dir, **settings)
    for _ in range(MAX_CUTS + 1):
        try:
            probs = predictor.predict_proba(rows.iloc[:n], tta=tta_for(kind, cfg.tta))
            stats = getattr(predictor, "stats", {}) or {}
            extra = {"kind": kind, "tokens": stats.get("tokens")}
            return probs, note, extra | ({"time_budget": budget.summary()} if budget else {})
        except TimeBudgetExceeded:
            left = share_s - (timing.clock() - t0)
            fit = max(min(budget.rows_that_fit(left, reload=budget.models > 1), n - 1), 0)
            note = (f"{n} rows projected {duration(budget.projection['seconds'])}, over the "
                    f"stage's share of {duration(share_s)}: cut to the {fit} least certain "
                    "rows that fit")
            log.warning("cascade stage %d (%s): %s", number, stage.model_dir, note)
            if fit == 0:
                break
            n = fit
            budget.restart(left / SAFETY / 3600)
    return None, note, {}


def read_oof(model_dir: str | Path) -> pd.DataFrame | None:
    """The run's out-of-fold (or holdout) rows: id, label and the class probabilities; None
    when the model folder is not inside a run folder that scored any."""
    model = runs.resolve_model_dir(model_dir)
    run_dir = next((d for d in (Path(model_dir), model.parent)
                    if (d / "metrics.json").is_file()), None)
    if run_dir is None:
        return None
    scored = runs.read_metrics(run_dir)["eval"]
    path = run_dir / runs.EVAL_FILES.get(scored, "")
    return runs.read_probs(path) if scored and path.is_file() else None


def weight_for(stage: CascadeStage, oof: pd.DataFrame | None
               ) -> tuple[float, str, pd.DataFrame | None]:
    """The stage's weight, where it came from, and the blend so far on the out-of-fold rows
    every stage shares (for the next stage's fit; None when this stage has none)."""
    theirs = read_oof(stage.model_dir)
    shared = [] if oof is None or theirs is None else \
        sorted(set(oof["id"]) & set(theirs["id"]))
    if len(shared) == 0:
        weight = CASCADE_WEIGHT if stage.weight is None else stage.weight
        source = "given" if stage.weight is not None else \
            f"default {CASCADE_WEIGHT:g}: no out-of-fold rows shared with the runs before"
        return weight, source, None
    ours, q = _aligned(oof, shared), _aligned(theirs, shared)
    cols = [c for c in LABEL_COLS if c in ours.columns]  # two or three classes
    p, labels = ours[cols].to_numpy(float), ours["label"].to_numpy(int)
    q = q[cols].to_numpy(float)
    rows = least_certain(p, stage.fraction)
    if stage.weight is not None:
        weight, source = stage.weight, "given"
    elif len(rows) < MIN_FIT_ROWS:
        weight = CASCADE_WEIGHT
        source = (f"default {CASCADE_WEIGHT:g}: {len(rows)} shared out-of-fold rows in the "
                  f"stage's fraction, fewer than {MIN_FIT_ROWS}")
    else:
        losses = [metrics.log_loss(labels[rows], (p[rows] + w * q[rows]) / (1 + w))
                  for w in WEIGHT_GRID]
        weight = float(WEIGHT_GRID[int(np.argmin(losses))])
        source = f"fitted on {len(rows)} of {len(shared)} shared out-of-fold rows"
    p[rows] = (p[rows] + weight * q[rows]) / (1 + weight)
    ours.loc[:, cols] = p
    return weight, source, ours


def _aligned(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """`frame`'s rows of `ids`, in that order (one row per id)."""
    return frame.drop_duplicates("id").set_index("id").loc[ids].reset_index()
