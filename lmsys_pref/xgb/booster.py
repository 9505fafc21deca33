"""XGBoost on hand-made features: k-fold OOF, a final fit, swap augmentation and swap TTA.

A k-fold run keeps its fold boosters beside the final one (model/fold_k/, each a model folder
`predict` and `pseudo-label` load) and the ids each fold never trained on (model/held_out.json),
so per-fold teacher and pseudo-label files can be made from it (`pseudo-label --per-fold`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost
from tqdm.auto import tqdm

from .. import data, runs
from ..configs.tasks import get, n_classes
from ..configs.xgb import XGBConfig
from ..data import labels, metrics, splits
from ..data.task import resolve
from ..files import atomic
from ..runs import postrules, resume
from . import features, levers

log = logging.getLogger("lmsys_pref")
BOOSTER = "booster.json"


def booster_params(cfg: XGBConfig) -> dict[str, Any]:
    """XGBoost's native parameters from the config (the task's classes: 3, or 2 without ties)."""
    return {"objective": "multi:softprob", "num_class": n_classes(cfg.task),
            "eval_metric": "mlogloss",
            "eta": cfg.learning_rate, "max_depth": cfg.max_depth,
            "min_child_weight": cfg.min_child_weight, "subsample": cfg.subsample,
            "colsample_bytree": cfg.colsample_bytree, "lambda": cfg.reg_lambda,
            "tree_method": "hist", "seed": cfg.seed, "nthread": cfg.n_jobs or -1}


class Features:
    """Features of rows and of their swapped copies, built once and sliced per fold.

    `extra` rows (`extra_train`) follow the rows, at positions `self.extra`: every training
    matrix gets them (`with_extra`), no fold ever scores them. A booster whose extra rows or
    targets differ by fold (`levers.FitRows`) passes them as `fit`.
    """

    def __init__(self, df: pd.DataFrame, with_swap: bool = True,
                 extra: pd.DataFrame | None = None):
        rows = df if extra is None else pd.concat([df, extra], ignore_index=True)
        both = features.build(pd.concat([rows, data.swap(rows)], ignore_index=True)
                              if with_swap else rows.reset_index(drop=True))
        self.orig, self.swapped = both.iloc[: len(rows)], both.iloc[len(rows):]
        self.labels = rows["label"].to_numpy() if "label" in rows else None
        self.strata = splits.strata(rows) if self.labels is not None else None
        self.targets = None if self.labels is None else labels.targets(rows) \
            if data.prob_columns(rows) else data.onehot(self.labels)
        self.n, self.extra = len(df), np.arange(len(df), len(rows))
        self.ids = rows["id"].astype(str).to_numpy() if "id" in rows else None

    def with_extra(self, rows: np.ndarray, fit: levers.FitRows | None = None) -> np.ndarray:
        """`rows` and every extra row (those of `fit`): what a booster trains on."""
        return np.concatenate([rows, self.extra if fit is None else fit.extra])

    def matrix(self, rows: np.ndarray, swap_augment: bool, fit: levers.FitRows | None = None
               ) -> xgboost.DMatrix:
        """Training matrix of `rows` (plus their swapped copies, labels swapped); the targets
        of `fit` when given."""
        targets = self.targets if fit is None else fit.targets
        X, t = self.orig.iloc[rows], None if targets is None else targets[rows]
        if swap_augment:
            X = pd.concat([X, self.swapped.iloc[rows]])
            t = None if t is None else np.concatenate([t, data.swap(t)])
        return weighted_matrix(X, t)


def weighted_matrix(X: pd.DataFrame, targets: np.ndarray | None) -> xgboost.DMatrix:
    """A DMatrix of one-hot rows as they are; with soft labels every row as three copies, one
    per class, weighted by its probability (zero-weight copies left out)."""
    if targets is None or np.isin(targets, (0, 1)).all():
        return xgboost.DMatrix(X, None if targets is None else targets.argmax(1))
    pos, cls = np.nonzero(targets > 0)
    return xgboost.DMatrix(X.iloc[pos], cls, weight=targets[pos, cls])


def train_booster(cfg: XGBConfig, feats: Features, rows: np.ndarray,
                  rounds: int | None = None, groups: np.ndarray | None = None,
                  fit: levers.FitRows | None = None) -> xgboost.Booster:
    """Fit one booster on `rows`; with early stopping on, a stratified 15% of them picks the round.

    The stopping rows are held out of the fit (their swapped copies too, and with `groups`, the
    other rows of their prompt group), so out-of-fold scores stay honest: the validation fold
    never chooses its own stopping round. `fit`: this booster's extra rows and targets.
    """
    params = booster_params(cfg)
    if rounds is None and cfg.early_stopping_rounds > 0 and len(rows) >= 40:
        fit_pos, stop_pos = splits.holdout(feats.strata[rows], 0.15, cfg.seed,
                                           groups=None if groups is None else groups[rows])
        stop = feats.matrix(rows[stop_pos], False, fit)
        return xgboost.train(params, feats.matrix(feats.with_extra(rows[fit_pos], fit),
                                                  cfg.swap_augment, fit),
                             cfg.n_estimators, evals=[(stop, "stop")],
                             early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False)
    return xgboost.train(params, feats.matrix(feats.with_extra(rows, fit), cfg.swap_augment, fit),
                         rounds or cfg.n_estimators)


def predict_booster(booster: xgboost.Booster, feats: Features, rows: np.ndarray | None = None,
                    tta: str = "swap") -> np.ndarray:
    """Class probabilities (n, 3); with `tta="swap"` averaged with the mapped-back swapped rows."""
    rounds = (0, booster.best_iteration + 1) if _has_best(booster) else (0, 0)
    rows = np.arange(len(feats.orig)) if rows is None else rows
    p = booster.predict(xgboost.DMatrix(feats.orig.iloc[rows]), iteration_range=rounds)
    if tta == "none":
        return p
    if tta != "swap":
        raise ValueError(f"tta must be 'none' or 'swap', got {tta!r}")
    ps = booster.predict(xgboost.DMatrix(feats.swapped.iloc[rows]), iteration_range=rounds)
    return data.combine_swapped(p, ps)


def _has_best(booster: xgboost.Booster) -> bool:
    return "best_iteration" in booster.attributes()


def cross_validate(cfg: XGBConfig, feats: Features, groups: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[int]]:
    """Out-of-fold probabilities for every training row and the stopping round of each fold.

    `groups` (`splits.fold_groups`) keep the rows of one group inside one fold.
    """
    folds = splits.kfold(feats.strata[:feats.n], cfg.n_folds, cfg.seed, groups=groups)
    oof, best, _ = fit_folds(cfg, feats, folds, groups)
    return oof, best


def fit_folds(cfg: XGBConfig, feats: Features, folds: list, groups: np.ndarray | None = None,
              fits: list | None = None) -> tuple[np.ndarray, list[int], list[xgboost.Booster]]:
    """One booster per fold (`fits[k]`: fold k's `levers.FitRows`): the OOF probabilities, each
    fold's stopping round and the boosters."""
    oof = np.zeros((feats.n, n_classes(cfg.task)))  # extra rows: train every fold only
    best, boosters = [], []
    for k, (tr, va) in enumerate(tqdm(folds, desc="xgb folds")):
        booster = train_booster(cfg, feats, tr, groups=groups, fit=fits[k] if fits else None)
        oof[va] = predict_booster(booster, feats, va, cfg.tta)
        best.append(booster.best_iteration + 1 if _has_best(booster) else cfg.n_estimators)
        boosters.append(booster)
    return oof, best, boosters


@runs.holds_out_dir  # one run per OUT_DIR, never DATA_DIR
def fit(cfg: XGBConfig) -> dict:
    """Train the XGBoost baseline and write the run folder (see `lmsys_pref.runs`).

    Returns:
        The metrics written to `metrics.json`: the OOF rows scored against their hard labels
        (`labels.scored`), and whether those figures are honest (`cv_honest`, `cv_leaks`).
    """
    t0 = time.time()
    task = resolve(cfg.task, cfg.data_dir)
    cfg = cfg.replace(task=task.name)  # the run and its model record the task they used
    out = runs.prepare_out_dir(cfg.out_dir)  # writable, no stale outputs: before any work
    rows = labels.load_training(cfg.data)  # + extra_train rows and teachers: checked
    train, test = rows.train, rows.test
    data.check_n_folds(train, cfg.n_folds, str(data.find_file(cfg.data_dir, "train")),
                       cfg.group_by)
    groups = splits.fold_groups(train, cfg.group_by) if cfg.n_folds > 1 else None
    folds = splits.kfold(splits.strata(train), cfg.n_folds, cfg.seed, groups=groups) \
        if cfg.n_folds > 1 else []  # of the train rows alone: a teacher's folds match
    rows.prepare(folds, final=True)  # teachers cover every fit, per-fold files match the folds
    feats = Features(train, with_swap=cfg.swap_augment or cfg.tta == "swap",
                     extra=rows.extra_rows(None))
    fits = levers.plan(rows, feats, folds)
    oof, best, boosters = fit_folds(cfg, feats, folds, groups, fits) if folds else (None, [], [])
    rounds = (int(np.mean(best)) if cfg.early_stopping_rounds > 0 else None) if best else None
    booster = train_booster(cfg, feats, np.arange(len(train)), rounds or cfg.n_estimators,
                            fit=fits[-1])
    _save_run_model(out, cfg, train, booster, boosters, folds)
    test_probs = None if test is None else predict_booster(
        booster, Features(test, cfg.tta == "swap"), tta=cfg.tta)
    result = _run_metrics(cfg, rows, oof, best, time.time() - t0)
    runs.write_outputs(out, test_ids=None if test is None else test["id"], test_probs=test_probs,
                       metrics=result, oof=None if oof is None else runs.probs_frame(
                           train["id"], oof, train["label"]), task=task)
    log.info("xgb: cv log loss %s, %.0fs", result["log_loss"], result["seconds"])
    return result


def _save_run_model(out: Path, cfg: XGBConfig, train: pd.DataFrame, booster: xgboost.Booster,
                    boosters: list, folds: list) -> None:
    """model/: the final booster (what `predict` scores with), each fold's booster in
    model/fold_k/ and held_out.json (the ids each fold never trained on), the post-rules."""
    names = [f"fold_{k}" for k in range(len(boosters))]
    with atomic.atomic_dir(out / "model") as model_dir:  # whole or absent
        for name, fold_booster in zip(names, boosters):
            save(fold_booster, cfg, model_dir / name, fold=name)
        save(booster, cfg, model_dir, **({"fold_models": names} if names else {}))
        if names:
            runs.save_json(model_dir / runs.HELD_OUT, {
                name: train["id"].to_numpy()[va] for name, (_, va) in zip(names, folds)})
        postrules.save(postrules.fit(train), model_dir)  # for `predict -p post_rules true`


def _run_metrics(cfg: XGBConfig, rows: labels.TrainingData, oof: np.ndarray | None,
                 best: list[int], seconds: float) -> dict:
    """metrics.json: the OOF rows (none with n_folds <= 1: null scores) and the levers."""
    train, test = rows.train, rows.test
    scored = oof is not None
    hard, soft = labels.scored(train, oof) if scored else (np.zeros(len(train), bool), {})
    return runs.run_metrics(  # headline: the hard labels (`labels.scored`); soft_log_loss
        train["label"][hard] if hard.any() else None, oof[hard] if hard.any() else None,
        eval="oof" if scored else None, n_train=len(train),
        n_test=0 if test is None else len(test), seconds=seconds,
        n_eval=int(hard.sum()), n_folds=cfg.n_folds, fold_rounds=best, task=cfg.task,
        metric=get(cfg.task).metric, **soft, **_by_language(train, oof, hard), **rows.report())


def _by_language(train: pd.DataFrame, oof: np.ndarray | None, hard: np.ndarray) -> dict:
    """metrics.json's `by_language` of the OOF rows, when the data has a `language` column."""
    if oof is None or "language" not in train.columns or not hard.any():
        return {}
    return {"by_language": metrics.by_group(train["label"].to_numpy()[hard], oof[hard],
                                            train["language"].to_numpy()[hard])}


def save(booster: xgboost.Booster, cfg: XGBConfig, model_dir: str | Path, **meta: Any) -> Path:
    """Write the booster and its config so `load_predictor` can score new data; `meta`: more
    keys of model/lmsys_pref.json (`fold`, `fold_models`)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(model_dir / BOOSTER)
    runs.write_model_meta(model_dir, "xgb", cfg.to_dict(),
                          feature_names=list(booster.feature_names or []),
                          inputs=resume.input_digests(cfg, test=True), **meta)  # what it was fit on
    return model_dir


class XGBPredictor:
    """A saved booster as a `runs.Predictor` (`predict_proba(df, tta=None)`, `stats`)."""

    def __init__(self, booster: xgboost.Booster, cfg: XGBConfig):
        self.booster, self.cfg = booster, cfg
        self.stats: dict[str, Any] = {}

    def predict_proba(self, df: pd.DataFrame, tta: str | None = None) -> np.ndarray:
        t0 = time.time()
        tta = tta or self.cfg.tta
        probs = predict_booster(self.booster, Features(df, tta == "swap"), tta=tta)
        secs = time.time() - t0
        self.stats = {"rows": len(df), "seconds": round(secs, 3),
                      "rows_per_s": round(len(df) / max(secs, 1e-9), 1)}
        return probs


def load_predictor(model_dir: str | Path, **overrides: Any) -> XGBPredictor:
    """Load a model folder written by `fit`; `overrides` may change e.g. `tta`."""
    model_dir = runs.resolve_model_dir(model_dir)
    meta = runs.read_model_meta(model_dir)
    cfg = XGBConfig.from_dict(meta["config"])
    known = {k: v for k, v in overrides.items() if k in XGBConfig.field_names()}
    return XGBPredictor(load_booster(model_dir / BOOSTER), cfg.replace(**known))


def load_booster(path: Path) -> xgboost.Booster:
    """A saved booster; a missing, cut-off or corrupt file is one line naming it (XGBoost's own
    error carries a C++ stack trace)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the model folder is incomplete)")
    booster = xgboost.Booster()
    try:
        booster.load_model(path)
    except xgboost.core.XGBoostError as err:
        reason = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
        raise data.DataError(f"{path}: not a readable XGBoost model, cut off or corrupt "
                             f"({reason[:160]})") from None
    return booster


def plot_importance(run_dir: str | Path, top: int = 20):
    """Bar chart of the `top` features by total gain of a saved run's booster."""
    import matplotlib
    matplotlib.use("Agg")
    booster = load_predictor(run_dir).booster
    if not booster.get_score(importance_type="total_gain"):  # stumps only: nothing to rank
        log.warning("%s: the trees have no splits (tiny data or settings); no importance plot",
                    run_dir)
        return None
    return xgboost.plot_importance(booster, max_num_features=top, importance_type="total_gain",
                                   show_values=False)
