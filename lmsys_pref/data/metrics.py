"""Scores of preference predictions (three classes a/b/tie, or two a/b), computed the way Kaggle
scores them: log loss after Kaggle's normalising and clipping, accuracy of the top class."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.metrics import log_loss as _sk_log_loss

from .frames import CLASS_NAMES

EPS = 1e-15  # Kaggle clips to [eps, 1 - eps] after normalising each row


def normalise(probs: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Rows scaled to sum to 1, then clipped, as Kaggle does before scoring."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    return np.clip(p, eps, 1 - eps)


def log_loss(labels, probs) -> float:
    """Multi-class log loss (the 2024 competition's metric); `labels` are class indices of the
    (n, k) `probs`' columns."""
    p = normalise(probs)
    return float(_sk_log_loss(np.asarray(labels), p, labels=list(range(p.shape[1]))))


def soft_log_loss(targets, probs) -> float:
    """Cross-entropy against soft targets ((n, 3) probabilities, e.g. pseudo-labels): the log
    loss of one-hot targets, generalised; reported as such, never as the competition metric."""
    t = np.asarray(targets, dtype=np.float64)
    return float(-(t * np.log(normalise(probs))).sum(1).mean())


def accuracy(labels, probs) -> float:
    """Share of rows whose most probable class is the label."""
    return float((np.asarray(probs).argmax(1) == np.asarray(labels)).mean())


def calibration(labels, probs, n_bins: int = 10) -> dict:
    """Reliability summary of the top-class probability.

    Returns:
        `ece` (expected calibration error) and per-bin `confidence`, `accuracy`, `count`.
    """
    p = normalise(probs)
    conf, correct = p.max(1), (p.argmax(1) == np.asarray(labels))
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    rows, ece = [], 0.0
    for b in range(n_bins):
        m = bins == b
        if not m.any():
            continue
        c, a = float(conf[m].mean()), float(correct[m].mean())
        ece += m.mean() * abs(c - a)
        rows.append({"bin": b, "confidence": c, "accuracy": a, "count": int(m.sum())})
    return {"ece": float(ece), "bins": rows}


def by_group(labels, probs, groups) -> dict[str, dict]:
    """Rows, log loss and accuracy of each group (e.g. each `language`), largest group first."""
    labels, probs, groups = np.asarray(labels), np.asarray(probs), np.asarray(groups, dtype=str)
    names, counts = np.unique(groups, return_counts=True)
    out = {}
    for name in names[np.argsort(-counts, kind="stable")]:
        m = groups == name
        out[str(name)] = {"rows": int(m.sum()), "log_loss": log_loss(labels[m], probs[m]),
                          "accuracy": accuracy(labels[m], probs[m])}
    return out


def evaluate(labels, probs) -> dict:
    """All metrics of one prediction set: log loss, accuracy, per-class P/R/F1, calibration."""
    labels = np.asarray(labels)
    pred = np.asarray(probs).argmax(1)
    classes = list(range(np.asarray(probs).shape[1]))
    prec, rec, f1, support = precision_recall_fscore_support(
        labels, pred, labels=classes, zero_division=0)
    per_class = {CLASS_NAMES[i]: {"precision": float(prec[i]), "recall": float(rec[i]),
                                  "f1": float(f1[i]), "support": int(support[i])}
                 for i in classes}
    return {"log_loss": log_loss(labels, probs), "accuracy": accuracy(labels, probs),
            "per_class": per_class, "ece": calibration(labels, probs)["ece"],
            "confusion": confusion_matrix(labels, pred, labels=classes).tolist()}
