"""Calibration (temperature + per-class bias) and OOF-weighted blending of run folders.

Blending pools the runs' probabilities with weights on the simplex, either linearly (a
mixture) or log-linearly (a weighted geometric mean, the default: on the 1,500 real rows it beat
the mixture, see BENCHMARKS.md), then fits temperature and class bias on the pooled OOF.

Both are fitted on out-of-fold predictions (`oof.csv`, or `val.csv`) with scipy and applied to
the runs' test predictions (`submission.csv`). Because a fit on the OOF rows flatters itself,
every output also carries a cross-fitted figure: the same fit made on k-1 folds and scored on
the held-out fold (`*_cv_log_loss`), the honest estimate of what the step gains.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_softmax

from . import data, metrics, runs, submission
from .data import LABEL_COLS
from .report import load_predictions

log = logging.getLogger("lmsys_pref")


@dataclasses.dataclass
class Scaling:
    """p' = softmax(log p / temperature + bias)."""

    temperature: float = 1.0
    """Divides the log-probabilities; > 1 softens over-confident predictions."""
    bias: tuple = (0.0, 0.0, 0.0)
    """Added per class (a, b, tie) after scaling; the tie entry is fixed at 0."""

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

    theta0 = np.zeros(3 if per_class_bias else 1)
    bounds = [(-3.0, 3.0)] + [(-5.0, 5.0)] * (len(theta0) - 1)  # T in [0.05, 20]
    res = minimize(loss, theta0, method="L-BFGS-B", bounds=bounds)
    bias = tuple(float(b) for b in np.r_[res.x[1:], 0.0]) if per_class_bias else (0.0,) * 3
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
    logs = np.stack([np.log(metrics.normalise(p)) for p in probs], 0)  # (runs, n, 3)

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
              n_splits: int = 5, seed: int = 42) -> np.ndarray:
    """Out-of-fold outputs of `fit_predict(train_rows, held_rows)` (the honest estimate)."""
    out = np.zeros((len(labels), 3))
    for tr, va in data.kfold(labels, n_splits, seed):
        out[va] = fit_predict(tr, va)
    return out


@dataclasses.dataclass
class Run:
    """The OOF and test predictions of one run folder."""

    path: Path
    ids: np.ndarray
    labels: np.ndarray
    oof: np.ndarray
    test_ids: np.ndarray | None
    test: np.ndarray | None


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder's oof.csv|val.csv and, when present, submission.csv."""
    run_dir = Path(run_dir)
    preds, _ = load_predictions(run_dir)
    sub_path = run_dir / "submission.csv"
    sub = submission.read(sub_path) if sub_path.exists() else None
    return Run(run_dir, preds["id"].to_numpy(), preds["label"].to_numpy(dtype=int),
               preds[list(LABEL_COLS)].to_numpy(np.float64),
               None if sub is None else sub["id"].to_numpy(),
               None if sub is None else sub[list(LABEL_COLS)].to_numpy(np.float64))


def align(loaded: list[Run]) -> list[Run]:
    """Reorder every run's OOF rows to the first run's ids; the id sets and labels must agree.

    Raises:
        DataError: naming the run and the ids it lacks (or has in excess), or differing labels
            or test ids.
    """
    ref = loaded[0]
    out = [ref]
    for r in loaded[1:]:
        have, want = set(r.ids.tolist()), set(ref.ids.tolist())
        missing, extra = sorted(want - have), sorted(have - want)
        if missing or extra:
            raise data.DataError(f"{r.path}: OOF ids differ from {ref.path}: missing "
                                 f"{missing[:10]} ({len(missing)}), "
                                 f"extra {extra[:10]} ({len(extra)})")
        pos = pd.Series(np.arange(len(r.ids)), index=r.ids).loc[ref.ids].to_numpy()
        if (r.labels[pos] != ref.labels).any():
            bad = ref.ids[(r.labels[pos] != ref.labels).argmax()]
            raise data.DataError(f"{r.path}: column 'label' of row id {bad} differs from "
                                 f"{ref.path}")
        if (r.test_ids is None) != (ref.test_ids is None) or (
                r.test_ids is not None and not np.array_equal(r.test_ids, ref.test_ids)):
            raise data.DataError(f"{r.path}/submission.csv: test ids differ from {ref.path}")
        out.append(dataclasses.replace(r, ids=ref.ids, labels=ref.labels, oof=r.oof[pos]))
    return out


def write_run(out_dir: Path, ref: Run, oof: np.ndarray, test: np.ndarray | None,
              metrics_: dict, name: str) -> Path:
    """submission.csv (when test predictions exist), oof.csv, metrics.json and `name`.json."""
    runs.write_outputs(out_dir, test_ids=ref.test_ids, test_probs=test, metrics=metrics_,
                       oof=runs.probs_frame(ref.ids, oof, ref.labels))
    runs.save_json(out_dir / name, metrics_)
    return out_dir


def calibrate(run_dir: str | Path, out_dir: str | Path, per_class_bias: bool = True) -> dict:
    """Fit scaling on a run's OOF, apply it to OOF and test; returns (and writes) the figures."""
    r = load_run(run_dir)
    scale = fit_scaling(r.labels, r.oof, per_class_bias)
    honest = cross_fit(r.labels, lambda tr, va: fit_scaling(r.labels[tr], r.oof[tr],
                                                            per_class_bias).apply(r.oof[va]))
    res = {"run": str(r.path), "n_oof": len(r.ids), **dataclasses.asdict(scale),
           "oof_log_loss_before": metrics.log_loss(r.labels, r.oof),
           "oof_log_loss_after": metrics.log_loss(r.labels, scale.apply(r.oof)),
           "cv_log_loss_after": metrics.log_loss(r.labels, honest)}
    write_run(Path(out_dir), r, scale.apply(r.oof),
              None if r.test is None else scale.apply(r.test), res, "calibration.json")
    return res


def _fit_blend(labels, probs, method: str, scale: bool, per_class_bias: bool):
    w = fit_weights(labels, probs, method)
    s = fit_scaling(labels, pool(probs, w, method), per_class_bias) if scale else Scaling()
    return w, s


def blend(run_dirs: Sequence[str | Path], out_dir: str | Path, method: str = "log",
          scale: bool = True, per_class_bias: bool = True) -> dict:
    """Blend runs with simplex weights fitted on their shared OOF rows, then (optionally) scale.

    Args:
        run_dirs: train-run folders with oof.csv (or val.csv) over the same ids, and
            submission.csv over the same test ids (or none of them).
        out_dir: gets submission.csv, oof.csv, weights.json and metrics.json.
        method: "log" (log-linear pool; with scaling, non-negative free weights on the runs'
            log-probabilities) or "linear" (mixture of probabilities).
        scale: fit temperature (+ per-class bias when `per_class_bias`) on the pooled OOF.

    Raises:
        DataError: the runs' OOF ids, labels or test ids differ (naming the run and the ids).
    """
    if not run_dirs:
        raise ValueError("blend: give at least one run folder")
    loaded = align([load_run(d) for d in run_dirs])
    ref, labels, oofs = loaded[0], loaded[0].labels, [r.oof for r in loaded]
    w, s = _fit_blend(labels, oofs, method, scale, per_class_bias)

    def held_out(tr, va):
        wf, sf = _fit_blend(labels[tr], [p[tr] for p in oofs], method, scale, per_class_bias)
        return sf.apply(pool([p[va] for p in oofs], wf, method))

    singles = {str(r.path): metrics.log_loss(labels, r.oof) for r in loaded}
    blended = s.apply(pool(oofs, w, method))
    res = {"runs": singles, "n_oof": len(labels), "method": method,
           "weights": dict(zip(singles, w.tolist())), **dataclasses.asdict(s),
           "best_single_log_loss": min(singles.values()),
           "blend_oof_log_loss": metrics.log_loss(labels, blended),
           "blend_cv_log_loss": metrics.log_loss(labels, cross_fit(labels, held_out))}
    test = None if ref.test is None else s.apply(pool([r.test for r in loaded], w, method))
    out = write_run(Path(out_dir), ref, blended, test, res, "weights.json")
    log.info("blend of %d runs -> %s: OOF log loss %.4f (cross-fitted %.4f), best single %.4f",
             len(loaded), out, res["blend_oof_log_loss"], res["blend_cv_log_loss"],
             res["best_single_log_loss"])
    return res


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref blend --runs R1 R2 ... --out-dir O [--method log|linear] [--no-scale]
    [--no-bias]`."""
    ap = argparse.ArgumentParser(prog="lmsys_pref blend")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--method", choices=POOLS, default="log", help="pool of the runs")
    ap.add_argument("--no-scale", action="store_true", help="skip temperature scaling")
    ap.add_argument("--no-bias", action="store_true", help="temperature only, no class bias")
    args = ap.parse_args(argv)
    res = blend(args.runs, args.out_dir, args.method, not args.no_scale, not args.no_bias)
    print(f"weights {res['weights']}\nOOF log loss: best single {res['best_single_log_loss']:.4f}"
          f", blend {res['blend_oof_log_loss']:.4f} (cross-fitted {res['blend_cv_log_loss']:.4f})")
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
