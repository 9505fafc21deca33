"""Writing and checking `submission.csv`: exactly the test ids, in order, rows summing to 1."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .data import LABEL_COLS

SUBMISSION_COLS = ("id",) + LABEL_COLS


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or score wrongly."""


def to_frame(ids: Sequence[int], probs: np.ndarray) -> pd.DataFrame:
    """Probabilities (n, 3) for `ids` as a submission frame; rows renormalised to sum to 1."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(ids), 3):
        raise SubmissionError(f"expected probabilities of shape ({len(ids)}, 3), got {probs.shape}")
    probs = probs / probs.sum(axis=1, keepdims=True)
    df = pd.DataFrame(probs, columns=list(LABEL_COLS))
    df.insert(0, "id", np.asarray(ids, dtype=np.int64))
    return df


def validate(sub: pd.DataFrame, test_ids: Sequence[int], name: str = "submission") -> pd.DataFrame:
    """Raise `SubmissionError` unless `sub` holds exactly `test_ids` in order with valid rows."""
    if list(sub.columns) != list(SUBMISSION_COLS):
        raise SubmissionError(f"{name}: columns {list(sub.columns)} != {list(SUBMISSION_COLS)}")
    ids, want = sub["id"].to_numpy(), np.asarray(test_ids)
    if len(ids) != len(want) or not (ids == want).all():
        missing = sorted(set(want.tolist()) - set(ids.tolist()))[:5]
        extra = sorted(set(ids.tolist()) - set(want.tolist()))[:5]
        raise SubmissionError(f"{name}: ids differ from the test ids in order "
                              f"({len(ids)} rows vs {len(want)}; missing {missing}, extra {extra})")
    p = sub[list(LABEL_COLS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p).all(1) | (p < 0).any(1) | (p > 1).any(1) | (np.abs(p.sum(1) - 1) > 1e-6)
    if bad.any():
        rid = ids[bad.argmax()]
        raise SubmissionError(f"{name}: row id {rid}: probabilities {p[bad.argmax()].tolist()} "
                              f"are not finite, in [0, 1] and summing to 1 ({int(bad.sum())} rows)")
    return sub


def write(ids: Sequence[int], probs: np.ndarray, path: str | Path) -> Path:
    """Validate and write a submission CSV; returns its path."""
    sub = validate(to_frame(ids, probs), ids, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sub.to_csv(path, index=False)
    return path


def read(path: str | Path, test_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Read a submission; validate it against `test_ids` when given."""
    sub = pd.read_csv(path)
    return validate(sub, test_ids, str(path)) if test_ids is not None else sub
