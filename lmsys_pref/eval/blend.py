"""Calibration (temperature + per-class bias) and OOF-weighted blending of run folders.

Blending pools the runs' probabilities with weights on the simplex, either linearly (a
mixture) or log-linearly (a weighted geometric mean, the default: on the 1,500 real rows it beat
the mixture, see BENCHMARKS.md), then fits temperature and class bias on the pooled OOF.

Both are fitted on out-of-fold predictions (`oof.csv`, or `val.csv`) with scipy and applied to
the runs' test predictions (`submission.csv`). Runs that scored different rows (a k-fold run's
every row, a holdout run's fifth) are fitted on the ids they all scored (`blend_inputs`, at least
`MIN_SHARED_ROWS`); the test prediction pools every run. Because a fit on the OOF rows flatters
itself, the output's oof.csv and metrics.json hold the cross-fitted rows: the same fit made on
k-1 folds (rows sharing a prompt kept in one fold) and applied to the held-out fold
(`*_cv_log_loss`), the honest estimate of what the step gains; weights.json / calibration.json
also give the in-sample figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from .. import runs
from ..data import metrics, splits
from .blend_inputs import (
    MIN_SHARED_ROWS,
    Run,
    align,
    check_honest,
    cv_groups,
    load_run,
    runs_honesty,
)
from .report import honesty_lines

log = logging.getLogger("lmsys_pref")
CV_FOLDS = 5  # folds of the cross-fitted estimate


@dataclasses.dataclass
class Scaling:
    """p' = softmax(log p / temperature + bias)."""

    temperature: float = 1.0
    """Divides the log-probabilities; > 1 softens over-confident predictions."""
    bias: tuple = (0.0, 0.0, 0.0)
    """Added per class (a, b[, tie]) after scaling; the last entry is fixed at 0."""

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Scaled probabilities, rows summing to 1."""
        z = np.log(metrics.normalise(probs)) / self.temperature + np.asarray(self.bias)
        return np.exp(log_softmax(z, axis=1))


def _nll(labels: np.ndarray, logp: np.ndarray) -> float:
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_scaling(labels: Sequence[int], probs: np.ndarray, per_class_bias: bool = True) -> Scaling:
    """Temperature (and per-class bias) minimising the log loss of `probs` (L-BFGS-B)."""
    labels = np.asarray(labels, dtype=int)
    z = np.log(metrics.normalise(probs))

    def loss(theta: np.ndarray) -> float:
        bias = np.r_[theta[1:], 0.0] if per_class_bias else 0.0
        return _nll(labels, log_softmax(z * np.exp(-theta[0]) + bias, axis=1))

    k = z.shape[1]  # classes: 3, or 2 without ties
    theta0 = np.zeros(k if per_class_bias else 1)
    bounds = [(-3.0, 3.0)] + [(-5.0, 5.0)] * (len(theta0) - 1)  # T in [0.05, 20]
    res = minimize(loss, theta0, method="L-BFGS-B", bounds=bounds)
    bias = tuple(float(b) for b in np.r_[res.x[1:], 0.0]) if per_class_bias else (0.0,) * k
    return Scaling(float(np.exp(res.x[0])), bias)


POOLS = ("linear", "log")


def pool(probs: Sequence[np.ndarray], weights: np.ndarray, method: str = "linear") -> np.ndarray:
    """Linear pool Σ w_i p_i, or log-linear pool softmax(Σ w_i log p_i) (a weighted geometric
    mean: it lets a confident, well-ranked run dominate where the others are unsure)."""
    if method == "linear":
        return sum(w * metrics.normalise(p) for w, p in zip(weights, probs))
    if method == "log":
        return np.exp(log_softmax(sum(w * np.log(metrics.normalise(p))
                                      for w, p in zip(weights, probs)), axis=1))
    raise ValueError(f"pool method must be one of {POOLS}, got {method!r}")


def _pool_loss(labels: np.ndarray, probs: Sequence[np.ndarray], method: str):
    """Log loss of the pool as a function of the weights, with its exact gradient."""
    rows = np.arange(len(labels))
    if method == "linear":
        own = np.stack([metrics.normalise(p)[rows, labels] for p in probs], 1)  # (n, runs)

        def loss(w):
            mix = np.maximum(own @ w, metrics.EPS)
            return float(-np.log(mix).mean()), -(own / mix[:, None]).mean(0)
        return loss
    logs = np.stack([np.log(metrics.normalise(p)) for p in probs], 0)  # (runs, n, classes)

    def loss(w):
        logq = log_softmax(np.tensordot(w, logs, 1), axis=1)
        grad = (logs[:, rows, labels] - (logs * np.exp(logq)).sum(2)).mean(1)
        return float(-logq[rows, labels].mean()), -grad
    return loss


def fit_weights(labels: Sequence[int], probs: Sequence[np.ndarray], method: str = "linear"
                ) -> np.ndarray:
    """Simplex weights of a pool (see `pool`) minimising log loss (SLSQP, exact gradient)."""
    if method not in POOLS:
        raise ValueError(f"pool method must be one of {POOLS}, got {method!r}")
    k = len(probs)
    res = minimize(_pool_loss(np.asarray(labels, dtype=int), probs, method), np.full(k, 1 / k),
                   jac=True, method="SLSQP", bounds=[(0, 1)] * k,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    w = np.clip(res.x, 0, None)
    return w / w.sum()


def cross_fit(labels: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
              n_splits: int = CV_FOLDS, seed: int = 42, groups: np.ndarray | None = None
              ) -> np.ndarray:
    """Out-of-fold outputs of `fit_predict(train_rows, held_rows)` (the honest estimate);
    `groups` (`splits.fold_groups`) keep rows that share a prompt in one fold."""
    out = None
    for tr, va in splits.kfold(labels, n_splits, seed, groups=groups):
        held = fit_predict(tr, va)
        out = np.zeros((len(labels), held.shape[1])) if out is None else out
        out[va] = held
    return out


def write_run(out_dir: Path, ref: Run, oof: np.ndarray, test: np.ndarray | None,
              metrics_: dict, details: dict, name: str) -> Path:
    """submission.csv (when test predictions exist), oof.csv, metrics.json and `name`.json."""
    runs.write_outputs(out_dir, test_ids=ref.test_ids, test_probs=test, metrics=metrics_,
                       oof=runs.probs_frame(ref.ids, oof, ref.labels), task=ref.task)
    runs.save_json(out_dir / name, details)
    return out_dir


def _metrics(ref: Run, honest: np.ndarray, t0: float, **optional) -> dict:
    """metrics.json of a blend or calibration: the cross-fitted rows in the run vocabulary."""
    n = len(ref.ids)
    return runs.run_metrics(ref.labels, honest, eval="oof", n_train=n, seconds=time.time() - t0,
                            n_test=0 if ref.test_ids is None else len(ref.test_ids), n_eval=n,
                            n_folds=CV_FOLDS, task=ref.task.name, metric=ref.task.metric,
                            **optional)


@runs.holds_out_dir  # never one of the input runs; one run per OUT_DIR
def calibrate(run_dir: str | Path, out_dir: str | Path, per_class_bias: bool = True,
              group_by: str = "prompt", data_dir: str | Path | None = None) -> dict:
    """Fit scaling on a run's OOF and apply it to the test predictions.

    Returns:
        metrics.json (the cross-fitted scaled OOF rows, also in oof.csv; `runs.METRIC_KEYS`)
        merged with calibration.json (temperature, bias, in-sample and cross-fitted figures).
    """
    t0 = time.time()
    r = load_run(run_dir)
    groups, grouped = cv_groups([r], group_by, data_dir)
    runs.prepare_out_dir(out_dir)  # the input is read: now OUT_DIR may be checked and cleared
    scale = fit_scaling(r.labels, r.oof, per_class_bias)
    honest = cross_fit(r.labels, lambda tr, va: fit_scaling(r.labels[tr], r.oof[tr],
                                                            per_class_bias).apply(r.oof[va]),
                       groups=groups)
    res = {"run": str(r.path), "n_oof": len(r.ids), **dataclasses.asdict(scale),
           "oof_log_loss_before": metrics.log_loss(r.labels, r.oof),
           "oof_log_loss_after": metrics.log_loss(r.labels, scale.apply(r.oof)),
           "cv_log_loss_after": metrics.log_loss(r.labels, honest), "cv_groups": grouped}
    m = _metrics(r, honest, t0, **runs_honesty([run_dir]))
    write_run(Path(out_dir), r, honest, None if r.test is None else scale.apply(r.test), m, res,
              "calibration.json")
    return {**m, **res}


def _fit_blend(labels, probs, method: str, scale: bool, per_class_bias: bool):
    w = fit_weights(labels, probs, method)
    s = fit_scaling(labels, pool(probs, w, method), per_class_bias) if scale else Scaling()
    return w, s


@runs.holds_out_dir  # never one of the input runs; one run per OUT_DIR
def blend(run_dirs: Sequence[str | Path], out_dir: str | Path, method: str = "log",
          scale: bool = True, per_class_bias: bool = True, *,
          min_shared_rows: int = MIN_SHARED_ROWS, group_by: str = "prompt",
          data_dir: str | Path | None = None, allow_leaky: bool = False) -> dict:
    """Blend runs with simplex weights fitted on the OOF rows they all scored, then scale.

    Args:
        run_dirs: train-run folders, each with oof.csv or val.csv (the one its metrics.json
            `eval` names; the id sets may differ, the shared ids are used) and submission.csv
            over the same test ids in the same order (or none of them).
        out_dir: gets submission.csv (every run's test predictions pooled), oof.csv and
            metrics.json (the cross-fitted blend of the shared rows) and weights.json.
        method: "log" (log-linear pool; with scaling, non-negative free weights on the runs'
            log-probabilities) or "linear" (mixture of probabilities).
        scale: fit temperature (+ per-class bias when `per_class_bias`) on the pooled OOF.
        min_shared_rows: refuse a blend fitted on fewer shared rows than this.
        group_by, data_dir: prompt groups of the cross-fitting folds (see `cv_groups`).
        allow_leaky: blend a run whose metrics.json says `cv_honest: false` (its OOF came
            from inputs that saw its held-out rows, so it flatters the run and the weights
            favour it); refused by default.

    Returns:
        metrics.json (`runs.METRIC_KEYS`: `log_loss` is the cross-fitted blend's, `n_shared_rows`,
        `blend_weights`; `cv_honest`/`cv_leaks` of the runs when every run records them) merged
        with weights.json (per-run log losses and row counts, weights, temperature, bias,
        in-sample `blend_oof_log_loss`, `blend_cv_log_loss`, `cv_groups`, `runs_cv_honest`).

    Raises:
        LeakyRunError: a run is not cv-honest and `allow_leaky` is off (naming it and its
            leaks), before any work.
        SharedRowsError: fewer than `min_shared_rows` shared rows (naming each run's count).
        DataError: the runs' labels or test ids differ (naming the run and the row id).
        ConfigError: `out_dir` is or contains one of `run_dirs` (its model would be moved).
    """
    if not run_dirs:
        raise ValueError("blend: give at least one run folder")
    t0 = time.time()
    honest = check_honest(list(run_dirs), allow_leaky)
    inputs = [load_run(d) for d in run_dirs]
    loaded = align(inputs, min_shared_rows)
    groups, grouped = cv_groups(loaded, group_by, data_dir)
    runs.prepare_out_dir(out_dir)  # the inputs are read: now OUT_DIR may be checked and cleared
    ref, labels, oofs = loaded[0], loaded[0].labels, [r.oof for r in loaded]
    w, s = _fit_blend(labels, oofs, method, scale, per_class_bias)

    def held_out(tr, va):
        wf, sf = _fit_blend(labels[tr], [p[tr] for p in oofs], method, scale, per_class_bias)
        return sf.apply(pool([p[va] for p in oofs], wf, method))

    crossed = cross_fit(labels, held_out, groups=groups)
    singles = {str(r.path): metrics.log_loss(labels, r.oof) for r in loaded}
    res = {"runs": singles, "run_rows": {str(r.path): {"file": str(r.source), "n_rows": len(r.ids)}
                                         for r in inputs},
           "n_shared_rows": len(labels), "n_oof": len(labels), "method": method,
           "weights": dict(zip(singles, w.tolist())), **dataclasses.asdict(s),
           "best_single_log_loss": min(singles.values()),
           "blend_oof_log_loss": metrics.log_loss(labels, s.apply(pool(oofs, w, method))),
           "blend_cv_log_loss": metrics.log_loss(labels, crossed), "cv_groups": grouped,
           "runs_cv_honest": honest}
    test = None if ref.test is None else s.apply(pool([r.test for r in loaded], w, method))
    m = _metrics(ref, crossed, t0, n_shared_rows=len(labels), blend_weights=res["weights"],
                 **runs_honesty(run_dirs))
    out = write_run(Path(out_dir), ref, crossed, test, m, res, "weights.json")
    log.info("blend of %d runs on %d shared rows -> %s: cross-fitted log loss %.4f (in-sample "
             "%.4f), best single %.4f", len(loaded), len(labels), out, res["blend_cv_log_loss"],
             res["blend_oof_log_loss"], res["best_single_log_loss"])
    return {**m, **res}


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref blend --runs R1 R2 ... --out-dir O [--method log|linear] [--no-scale]
    [--no-bias] [--min-shared-rows N] [--group-by prompt|none] [--data-dir D] [--allow-leaky]`.
    """
    ap = argparse.ArgumentParser(prog="lmsys_pref blend")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--method", choices=POOLS, default="log", help="pool of the runs")
    ap.add_argument("--no-scale", action="store_true", help="skip temperature scaling")
    ap.add_argument("--no-bias", action="store_true", help="temperature only, no class bias")
    ap.add_argument("--min-shared-rows", type=int, default=MIN_SHARED_ROWS,
                    help="refuse fewer rows scored by every run (default %(default)s)")
    ap.add_argument("--group-by", choices=splits.GROUP_BY, default="prompt",
                    help="keep rows sharing a prompt in one cross-fitting fold")
    ap.add_argument("--data-dir", help="train.csv with the runs' prompts (default: the runs' "
                    "saved data_dir)")
    ap.add_argument("--allow-leaky", action="store_true",
                    help="blend runs whose metrics.json says cv_honest false (refused by default:"
                         " their OOF flatters them)")
    args = ap.parse_args(argv)
    res = blend(args.runs, args.out_dir, args.method, not args.no_scale, not args.no_bias,
                min_shared_rows=args.min_shared_rows, group_by=args.group_by,
                data_dir=args.data_dir, allow_leaky=args.allow_leaky)
    for run in args.runs:
        print(f"{run}: " + "\n  ".join(honesty_lines(run) or ["cv_honest not recorded"])
              .replace("**", ""))
    print(f"{res['n_shared_rows']} rows scored by every run; folds grouped by {res['cv_groups']}"
          f"\nweights {res['weights']}\nlog loss on the shared rows: best single "
          f"{res['best_single_log_loss']:.4f}, blend {res['blend_oof_log_loss']:.4f} in-sample, "
          f"{res['blend_cv_log_loss']:.4f} cross-fitted")
    return 0


def calibrate_main(argv: list[str]) -> int:
    """`python -m lmsys_pref calibrate --run-dir R --out-dir O [--no-bias]`."""
    ap = argparse.ArgumentParser(prog="lmsys_pref calibrate")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--no-bias", action="store_true", help="temperature only, no class bias")
    args = ap.parse_args(argv)
    res = calibrate(args.run_dir, args.out_dir, not args.no_bias)
    print(f"temperature {res['temperature']:.3f}, bias {res['bias']}; OOF log loss "
          f"{res['oof_log_loss_before']:.4f} -> {res['oof_log_loss_after']:.4f} "
          f"(cross-fitted {res['cv_log_loss_after']:.4f})")
    return 0
