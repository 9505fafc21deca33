"""One check for rows of class probabilities, whatever holds them: a soft label of a training
file, a teacher's row, a submission's or an out-of-fold file's prediction.

A row is valid when every cell is a finite number in [0, 1] and the row sums to 1 within the
tolerance of what the row is (one tolerance per meaning):

- `LABEL_TOL` (1e-6): a label. A soft label is data, written at full precision, so it sums to 1
  up to float noise; anything more is a wrong label, not rounding.
- `PREDICTION_TOL` (1e-3): a model's output written to a file (a submission, oof.csv, a teacher
  or pseudo-label file). Writers round (Kaggle's own sample rows hold 3 decimals), so such rows
  are accepted within rounding and renormalised by the reader that uses them.

The first bad row is named by file (`name`), row id and column; the error is a `DataError`, or
the caller's own subclass of ValueError (`error`, e.g. a submission's `SubmissionError`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..files.tables import DataError

LABEL_TOL = 1e-6
PREDICTION_TOL = 1e-3


def _shown(cell) -> str:
    """A cell as the user wrote it: `empty`, a quoted string, or the number."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return "empty"
    return repr(cell) if isinstance(cell, str) else f"{cell:g}" if isinstance(
        cell, (int, float, np.number)) else repr(cell)


def check_rows(values, ids: Sequence, columns: Sequence[str], name: str, tol: float,
               error: type[ValueError] = DataError) -> np.ndarray:
    """`values` as a float64 (n, k) array of valid probability rows, else `error` naming the first
    bad row.

    Args:
        values: (n, k) probabilities: a frame of the `columns` (cells may be text) or an array.
        ids: the rows' ids, for the message.
        columns: the k column names, for the message.
        name: what holds the rows (a file's path, "teacher <path>"), for the message.
        tol: how far a row's sum may be from 1 (`LABEL_TOL` or `PREDICTION_TOL`).
        error: the exception class raised (a `ValueError` subclass taking one message).

    Raises:
        `error`: a cell that is empty, not a number or outside [0, 1], or a row whose sum is off
            by more than `tol`; naming `name`, the row id and the column(s).
    """
    raw = values if isinstance(values, pd.DataFrame) else pd.DataFrame(np.asarray(values,
                                                                                  dtype=object))
    p = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ids = np.asarray(ids, dtype=object)
    if p.ndim != 2 or p.shape != (len(ids), len(columns)):
        raise error(f"{name}: expected probabilities of shape ({len(ids)}, {len(columns)}) for "
                    f"columns {list(columns)}, got {p.shape}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        r, c = divmod(int(bad.argmax()), p.shape[1])
        raise error(f"{name}: row id {ids[r]}: column '{columns[c]}' is "
                    f"{_shown(raw.iloc[r, c])}, expected a probability in [0, 1] "
                    f"({int(bad.any(1).sum())} such row(s))")
    off = np.abs(p.sum(1) - 1) > tol
    if off.any():
        r = int(off.argmax())
        raise error(f"{name}: row id {ids[r]}: columns {list(columns)} sum to "
                    f"{p[r].sum():.9g} ({p[r].tolist()}), expected 1 within {tol:g}; "
                    f"{int(off.sum())} such row(s)")
    return p
