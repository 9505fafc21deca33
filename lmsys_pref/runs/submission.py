"""Writing and checking `submission.csv` in the task's format (`configs.tasks`): exactly the
test ids, in order; probabilities summing to 1 (2024: id + winner_model_a/_b/_tie), or the
most probable class (WSDM 2025: id + winner, model_a / model_b).

Ids are text end to end: a submission carries the test file's id strings exactly (`007`,
`1e3`, ids beyond 2^63, hash-like text), compared as text.

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

from ..configs.tasks import LMSYS_2024, TASKS, WINNER, Task
from ..data import probabilities
from ..files.atomic import atomic_path
from ..files.tables import LABEL_COLS, as_id_text, is_integer_text, read_csv

SUBMISSION_COLS = LMSYS_2024.submission_columns  # the 2024 format; a task has its own


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or score wrongly."""


def check_probs(ids: Sequence, probs, name: str = "submission",
                columns: Sequence[str] = LABEL_COLS) -> np.ndarray:
    """`probs` as float64 (n, k), or `SubmissionError` naming the first bad row's id.

    A row is valid when every cell is in [0, 1] and the row sums to 1 within
    `probabilities.PREDICTION_TOL` (a prediction, rounded by its writer).
    """
    return probabilities.check_rows(probs, ids, columns, name, probabilities.PREDICTION_TOL,
                                    error=SubmissionError)


def _id_text(ids, name: str, integer: bool = True) -> np.ndarray:
    """The ids as text (`tables.as_id_text`), each non-empty (and with `integer` an
    integer-valued number), or `SubmissionError` naming the first bad one."""
    text = as_id_text(ids)
    ok = is_integer_text if integer else (lambda t: isinstance(t, str) and t.strip() != "")
    bad = [i for i, t in enumerate(text) if not ok(t)]
    if bad:
        raise SubmissionError(f"{name}: column 'id': {text[bad[0]]!r} is not "
                              f"{'an integer id' if integer else 'an id'} ({len(bad)} such "
                              "row(s))")
    return text


def to_frame(ids: Sequence, probs: np.ndarray, name: str = "submission",
             task: Task = LMSYS_2024) -> pd.DataFrame:
    """Probabilities (n, k) for `ids` as the task's submission frame: validated
    (`check_probs`), then renormalised (rounding only), or for a task scored on labels the
    most probable class (`winner`: model_a / model_b). The ids are written as given."""
    p = check_probs(ids, probs, name, task.prob_columns)
    p = p / p.sum(axis=1, keepdims=True)
    if task.submission == "labels":
        df = pd.DataFrame({WINNER: np.asarray(task.winner_values, dtype=object)[p.argmax(1)]})
    else:
        df = pd.DataFrame(p, columns=list(task.prob_columns))
    df.insert(0, "id", _id_text(ids, name, task.integer_ids))
    return df


def task_of(sub: pd.DataFrame) -> Task:
    """The task whose submission has `sub`'s header (the 2024 one when none has)."""
    return next((t for t in TASKS.values() if list(t.submission_columns) == list(sub.columns)),
                LMSYS_2024)


def validate(sub: pd.DataFrame, test_ids: Sequence | None, name: str = "submission",
             task: Task | None = None) -> pd.DataFrame:
    """Raise `SubmissionError` unless `sub` is a valid submission of `task` (None: the task its
    header names): the task's columns, unique ids (integer-valued where the task's are),
    exactly `test_ids` in order when they are given, and valid rows (probabilities, or winner
    labels the task knows). Ids compare as text (`007` is not `7`)."""
    task = task or task_of(sub)
    if list(sub.columns) != list(task.submission_columns):
        raise SubmissionError(f"{name}: columns {list(sub.columns)} != "
                              f"{list(task.submission_columns)} (task {task.name})")
    ids = _id_text(sub["id"], name, task.integer_ids)
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
    if task.submission == "labels":
        bad = ~sub[WINNER].isin(task.winner_values).to_numpy()
        if bad.any():
            raise SubmissionError(f"{name}: row id {ids[bad.argmax()]}: column '{WINNER}' is "
                                  f"{sub[WINNER].iloc[int(bad.argmax())]!r}, expected one of "
                                  f"{list(task.winner_values)}")
    else:
        check_probs(ids, sub[list(task.prob_columns)], name, task.prob_columns)
    return sub


def write(ids: Sequence, probs: np.ndarray, path: str | Path, task: Task = LMSYS_2024) -> Path:
    """Validate and write the task's submission CSV atomically (whole or not at all)."""
    sub = validate(to_frame(ids, probs, str(path), task), ids, str(path), task)
    path = Path(path)
    with atomic_path(path) as tmp:
        sub.to_csv(tmp, index=False)
    return path


def read(path: str | Path, test_ids: Sequence | None = None, task: Task | None = None
         ) -> pd.DataFrame:
    """Read and validate a submission (against `test_ids` when given; of `task`, or the task
    its header names); ids as the file's text.

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
    return validate(sub, test_ids, str(path), task)
