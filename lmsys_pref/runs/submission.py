"""Writing and checking `submission.csv`: exactly the test ids, in order, rows summing to 1.

Ids are text end to end: a submission carries the test file's id strings exactly (`007`,
`1e3`, ids beyond 2^63), compared as text.

Probabilities are validated before anything is normalised (`data.probabilities.check_rows`): a
row must hold numbers in [0, 1] summing to 1 within `PREDICTION_TOL` (rounding); only such rows
are renormalised. [-1, -1, -2], NaN or [5, 0, 0] are a `SubmissionError` naming the file and the
row id, never a silent fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data import probabilities
from ..files.atomic import atomic_path
from ..files.tables import LABEL_COLS, as_id_text, is_integer_text, read_csv

SUBMISSION_COLS = ("id",) + LABEL_COLS


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or score wrongly."""


def check_probs(ids: Sequence, probs, name: str = "submission") -> np.ndarray:
    """`probs` as float64 (n, 3), or `SubmissionError` naming the first bad row's id.

    A row is valid when every cell is in [0, 1] and the row sums to 1 within
    `probabilities.PREDICTION_TOL` (a prediction, rounded by its writer).
    """
    return probabilities.check_rows(probs, ids, LABEL_COLS, name, probabilities.PREDICTION_TOL,
                                    error=SubmissionError)


def _id_text(ids, name: str) -> np.ndarray:
    """The ids as text (`tables.as_id_text`), each an integer-valued number, or
    `SubmissionError` naming the first bad one."""
    text = as_id_text(ids)
    bad = [i for i, t in enumerate(text) if not is_integer_text(t)]
    if bad:
        raise SubmissionError(f"{name}: column 'id': {text[bad[0]]!r} is not an integer id "
                              f"({len(bad)} such row(s))")
    return text


def to_frame(ids: Sequence, probs: np.ndarray, name: str = "submission") -> pd.DataFrame:
    """Probabilities (n, 3) for `ids` as a submission frame, validated (`check_probs`), then
    renormalised (rounding only). The ids are written as given (text stays text)."""
    p = check_probs(ids, probs, name)
    df = pd.DataFrame(p / p.sum(axis=1, keepdims=True), columns=list(LABEL_COLS))
    df.insert(0, "id", _id_text(ids, name))
    return df


def validate(sub: pd.DataFrame, test_ids: Sequence | None, name: str = "submission"
             ) -> pd.DataFrame:
    """Raise `SubmissionError` unless `sub` holds valid rows with unique integer-valued ids,
    and exactly `test_ids` in order when they are given. Ids compare as text (`007` is not
    `7`); numbers given by a caller compare as their decimal text."""
    if list(sub.columns) != list(SUBMISSION_COLS):
        raise SubmissionError(f"{name}: columns {list(sub.columns)} != {list(SUBMISSION_COLS)}")
    ids = _id_text(sub["id"], name)
    if test_ids is not None:
        want = as_id_text(test_ids)
        if len(ids) != len(want) or not (ids == want).all():
            missing = [i for i in want.tolist() if i not in set(ids.tolist())][:5]
            extra = [i for i in ids.tolist() if i not in set(want.tolist())][:5]
            raise SubmissionError(f"{name}: ids differ from the test ids in order ({len(ids)} "
                                  f"rows vs {len(want)}; missing {missing}, extra {extra})")
    dup = pd.Series(ids)[pd.Series(ids).duplicated()]
    if len(dup):
        raise SubmissionError(f"{name}: duplicate id(s) {dup.head(5).tolist()} in column 'id'")
    values = sub[list(LABEL_COLS)].apply(pd.to_numeric, errors="coerce")
    check_probs(ids, values.to_numpy(dtype=np.float64), name)
    return sub


def write(ids: Sequence, probs: np.ndarray, path: str | Path) -> Path:
    """Validate and write a submission CSV atomically (whole or not at all); returns its path."""
    sub = validate(to_frame(ids, probs, str(path)), ids, str(path))
    path = Path(path)
    with atomic_path(path) as tmp:
        sub.to_csv(tmp, index=False)
    return path


def read(path: str | Path, test_ids: Sequence | None = None) -> pd.DataFrame:
    """Read and validate a submission (against `test_ids` when given); ids as the file's text.

    Raises:
        FileNotFoundError, SubmissionError: naming the file (and the row id where there is one).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        sub = read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{path}: not a readable CSV ({str(err).strip()})") from None
    return validate(sub, test_ids, str(path))
