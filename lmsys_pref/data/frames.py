"""Loading, validating and reshaping competition data.

After `load_split` every text column (`prompt`, `response_a`, `response_b`) holds a Python list
of clean strings, one per conversation turn, and a labelled frame has an integer `label` column
(0 = model_a wins, 1 = model_b wins, 2 = tie). Every later stage relies on that shape.

Bad input is a `DataError` naming the file, the row id where there is one, and the column:
ids are kept as the file's text but must be integer-valued numbers (the competition's are;
`row_30614122` is an error, not an opaque string; see `tables`), label cells must be 0 or 1 (an
empty or NaN cell is an error), a turn must be a string or null (an object or a number is an
error naming the turn), files are UTF-8 and comma-separated with each column named once and no
row cut off, and a split must hold at least one row (a header-only test.csv fails at load time,
before any training, in every baseline). Rows whose prompt and answers have different turn
counts are reported (count and first ids) and evened out once, at load (`turns.even_turns`),
the same for every layout and feature: the shorter parts get empty turns at the end (an answer
with no turn stays empty). `check_n_folds` names a k-fold split the labelled rows cannot fill.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..configs.tasks import LMSYS_2024, WINNER, Task
from ..files.tables import LABEL_COLS, TEXT_COLS, DataError, check_ids, read_table
from .turns import clean_text, decode_column, decode_turns, even_turns, is_missing

__all__ = ["DataError", "check_ids", "clean_text", "decode_turns", "even_turns", "load_split",
           "load_competition", "read_table"]  # + the rest

log = logging.getLogger("lmsys_pref")

CLASS_NAMES = ("a", "b", "tie")
TEST_COLS = ("id",) + TEXT_COLS
TRAIN_COLS = ("id", "model_a", "model_b") + TEXT_COLS + LABEL_COLS
# Pairs exchanged by `swap`; every A/B-specific column a frame may carry is listed here once.
SWAP_PAIRS = (("response_a", "response_b"), ("model_a", "model_b"),
              ("winner_model_a", "winner_model_b"))


def _check_columns(df: pd.DataFrame, needed: Sequence[str], name: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and any(s in str(df.columns[0]) for s in (";", "\t", "|")):
            hint = " (one column: the file is not comma-separated)"
        raise DataError(f"{name}: missing column(s) {missing}; found {list(df.columns)[:12]}"
                        f"{hint}")


def _check_labels(df: pd.DataFrame, name: str, columns: Sequence[str] = LABEL_COLS
                  ) -> np.ndarray:
    """Class indices of one-hot label columns; an empty, non-numeric or non-one-hot row is a
    `DataError` naming the row id and the column."""
    raw = df[list(columns)]
    values = raw.apply(pd.to_numeric, errors="coerce")
    empty = values.isna().to_numpy()
    if empty.any():
        r, c = divmod(int(empty.argmax()), len(columns))
        cell = raw.iloc[r, c]
        shown = "empty" if is_missing(cell) else repr(cell)
        raise DataError(f"{name}: row id {df['id'].iloc[r]}: column '{columns[c]}' is {shown}, "
                        f"expected 0 or 1 ({int(empty.any(1).sum())} row(s) with an empty or "
                        "non-numeric label)")
    onehot = values.to_numpy()
    bad = ~((onehot == 0) | (onehot == 1)).all(1) | (onehot.sum(1) != 1)
    if bad.any():
        row = df.loc[bad].iloc[0]
        raise DataError(f"{name}: row id {row['id']}: columns {list(columns)} are not one-hot "
                        f"({[float(row[c]) for c in columns]}); {int(bad.sum())} such row(s)")
    return onehot.argmax(1)


def _winner_labels(df: pd.DataFrame, name: str, task: Task) -> np.ndarray:
    """Class indices of a `winner` column (model_a / model_b), written back as one-hot
    probability columns, the library's one shape for labels."""
    index = df[WINNER].map({v: k for k, v in enumerate(task.winner_values)})
    bad = index.isna().to_numpy()
    if bad.any():
        r = int(bad.argmax())
        cell = df[WINNER].iloc[r]
        raise DataError(f"{name}: row id {df['id'].iloc[r]}: column '{WINNER}' is "
                        f"{'empty' if is_missing(cell) else repr(cell)}, expected one of "
                        f"{list(task.winner_values)} ({int(bad.sum())} such row(s))")
    labels = index.to_numpy(dtype=int)
    for k, col in enumerate(task.prob_columns):
        df[col] = (labels == k).astype(np.float64)
    return labels


def load_split(path: str | Path, *, labelled: bool | None = None, lenient: bool = False,
               label_check=None, task: Task = LMSYS_2024) -> pd.DataFrame:
    """Load and validate one split (train or test) from CSV or parquet.

    Args:
        path: the file.
        labelled: require the labels (True), ignore them (False) or use them when present
            (None).
        lenient: repair undecodable cells instead of raising; repaired rows are logged by id.
        label_check: `(df, name, columns) -> labels` checking probability label columns
            (default: one-hot; `labels.check_soft` for soft labels).
        task: the competition's format (`data.task`): turns as JSON lists or plain strings,
            labels as one-hot columns or a `winner` column, integer or text ids.

    Returns:
        The frame with decoded text columns and, when labelled, an int `label` column and the
        task's probability columns (`task.prob_columns`).

    Raises:
        DataError: naming the file, the row id and the column of the first problem.
    """
    name = str(path)
    df = read_table(path, lenient=lenient)
    _check_columns(df, TEST_COLS, name)
    winner = task.winner_values and WINNER in df.columns
    has_labels = winner or all(c in df.columns for c in task.prob_columns)
    if labelled and not has_labels:
        _check_columns(df, [WINNER] if task.winner_values else task.prob_columns, name)
    if df.empty:
        raise DataError(f"{name}: no data rows (only a header); a split needs at least one row")
    df = df.reset_index(drop=True)
    df["id"] = check_ids(df, name, integer=task.integer_ids)
    for col in TEXT_COLS:
        df[col] = decode_column(df, col, name, lenient, plain=task.turns == "plain")
    even_turns(df, name)
    for col in ("model_a", "model_b"):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    if has_labels and labelled is not False:
        df["label"] = _winner_labels(df, name, task) if winner else \
            (label_check or _check_labels)(df, name, task.prob_columns)  # labels.check_soft
    return df


def check_n_folds(train: pd.DataFrame, n_folds: int, name: str, group_by: str = "none"
                  ) -> None:
    """A k-fold run's folds must each hold every class (and, grouped by prompt, a prompt).

    Raises:
        DataError: naming `name` (the train file), the class (or the prompt count) and the
            number of rows, so `-p n_folds 500` on 120 rows stops before any training.
    """
    if n_folds <= 1:
        return
    n_classes = len(prob_columns(train)) or len(LABEL_COLS)  # the task's: 2 without ties
    counts = np.bincount(np.asarray(train["label"], dtype=int), minlength=n_classes)
    k = int(counts.argmin())
    if counts[k] < n_folds:
        raise DataError(f"{name}: n_folds {n_folds} needs at least {n_folds} rows of every class;"
                        f" class '{CLASS_NAMES[k]}' ({LABEL_COLS[k]}) has {counts[k]} of "
                        f"{len(train)} rows: lower n_folds")
    prompts = train["prompt"].map(json.dumps).nunique() if group_by == "prompt" else n_folds
    if prompts < n_folds:
        raise DataError(f"{name}: n_folds {n_folds} with group_by 'prompt' needs at least "
                        f"{n_folds} distinct prompts; the file has {prompts}: lower n_folds or "
                        "use group_by none")


def load_competition(data_dir: str | Path, *, lenient: bool = False, max_train_rows: int = 0,
                     max_test_rows: int = 0, task: Task | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Load `train.(csv|parquet)` and, when present, `test.(csv|parquet)` from a folder, in
    `task`'s format (None: the one the folder shows, `task.detect`).

    `max_train_rows` / `max_test_rows` keep only the first N rows of each (0 = all), for quick
    runs; the whole file is still validated.
    """
    from .task import detect  # task reads headers with files.tables, as this module does

    data_dir = Path(data_dir)
    task = task or detect(data_dir)
    train = load_split(find_file(data_dir, "train"), labelled=True, lenient=lenient, task=task)
    test_path = find_file(data_dir, "test", required=False)
    test = load_split(test_path, labelled=False, lenient=lenient, task=task) if test_path \
        else None
    if max_train_rows:
        train = train.iloc[:max_train_rows].reset_index(drop=True)
    if test is not None and max_test_rows:
        test = test.iloc[:max_test_rows].reset_index(drop=True)
    return train, test


def find_file(data_dir: str | Path, stem: str, required: bool = True) -> Path | None:
    """Return `data_dir/stem.csv` or `.parquet`, whichever exists."""
    for ext in (".csv", ".parquet"):
        p = Path(data_dir) / f"{stem}{ext}"
        if p.exists():
            return p
    if required:
        raise FileNotFoundError(f"{data_dir}: no {stem}.csv or {stem}.parquet")
    return None


def swap(obj):
    """Exchange the roles of A and B.

    Works on a data frame (responses, models, winner columns and `label` 0<->1) and on an
    (n, k) probability array of two or three classes (columns a<->b; a tie stays a tie). The
    same function serves training augmentation, test-time augmentation and the position-bias
    probe; `swap(swap(x))` equals `x`.
    """
    if isinstance(obj, np.ndarray):
        return obj[..., [1, 0, *range(2, obj.shape[-1])]]
    out = obj.copy()
    for a, b in SWAP_PAIRS:
        if a in out.columns and b in out.columns:
            out[a], out[b] = obj[b].copy(), obj[a].copy()
    if "label" in out.columns:
        out["label"] = obj["label"].map({0: 1, 1: 0, 2: 2}).astype(obj["label"].dtype)
    if WINNER in out.columns:  # a two-class task's raw label (model_a / model_b)
        out[WINNER] = obj[WINNER].replace({"model_a": "model_b", "model_b": "model_a"})
    return out


TTA_MODES = ("none", "swap", "swap_device", "adaptive")  # adaptive: infer.adaptive


def check_tta(mode) -> str:
    """The TTA mode, validated; None and False mean 'none', True means 'swap'."""
    if mode is None or mode is False:
        return "none"
    if mode is True:
        return "swap"
    if mode not in TTA_MODES:
        raise ValueError(f"tta: unknown mode {mode!r}; expected one of {TTA_MODES}")
    return mode


def combine_swapped(p: np.ndarray, p_swapped: np.ndarray) -> np.ndarray:
    """Swap TTA: the mean of the direct probabilities and the swapped rows' mapped back to A/B
    order; symmetric by construction (scoring the swapped rows gives the swapped result)."""
    p, p_swapped = np.asarray(p, dtype=np.float64), np.asarray(p_swapped, dtype=np.float64)
    if p.shape != p_swapped.shape:
        raise ValueError(f"swap TTA: shapes differ {p.shape} vs {p_swapped.shape}")
    return (p + swap(p_swapped)) / 2


def augment_with_swap(df: pd.DataFrame) -> pd.DataFrame:
    """Return the rows followed by their swapped copies (ids repeat; `swapped` marks copies)."""
    return pd.concat([df.assign(swapped=False), swap(df).assign(swapped=True)],
                     ignore_index=True)


def prob_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The probability (label) columns a frame carries: a, b and, for a three-class task, tie."""
    return tuple(c for c in LABEL_COLS if c in df.columns)


def onehot(labels: Iterable[int], n_classes: int = 3) -> np.ndarray:
    """Class indices (0/1/2) to an (n, n_classes) one-hot float array."""
    return np.eye(n_classes)[np.asarray(list(labels), dtype=int)]


def tile(df: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    """Repeat a frame to `n_rows` rows with fresh unique ids (for speed tests at real scale)."""
    reps = -(-n_rows // len(df))
    out = pd.concat([df] * reps, ignore_index=True).iloc[:n_rows].copy()
    out["id"] = np.arange(len(out)).astype(str)  # ids are text, as read from a file
    return out.reset_index(drop=True)


def join_turns(turns: Sequence[str], sep: str = "\n") -> str:
    """All turns of one cell as one string."""
    return sep.join(turns)
