"""Labels beyond the competition's one-hot rows: soft labels and extra training rows.

Soft labels: with `soft_labels` a labelled file's three winner columns may hold probabilities
(each in [0, 1], the row summing to 1 within `probabilities.LABEL_TOL`); `check_soft` is the
label check
`frames.load_split` runs then, and without it the strict one-hot check stays. A soft row trains
with a soft cross-entropy (XGBoost: three weighted copies) and, when scored, counts in
`soft_log_loss`; the hard-label metrics of the one-hot rows (the competition's) stay the
headline (`scored`).

Extra rows (`extra_train`): labelled files added to the training rows only. Rows repeating a
train/test conversation (prompt and both answers, in either order) are dropped, counted and
listed by id, as the winners deduplicated the 33k Arena set against the competition data.
`load_training` loads everything a run trains on (teacher files through `lmsys_pref.data.teachers`)
and checks it before any model is built. Torch-free.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..configs.parts import DataSpec
from . import frames, metrics, probabilities, teachers
from .frames import LABEL_COLS, DataError

log = logging.getLogger("lmsys_pref.labels")


def check_soft(df: pd.DataFrame, name: str) -> np.ndarray:
    """The label check of a soft-labelled file (`frames.load_split(label_check=...)`).

    Each winner column must be a number in [0, 1] and each row must sum to 1 within
    `probabilities.LABEL_TOL` (`probabilities.check_rows`); the columns become floats in place.

    Returns:
        The most probable class of each row (0 = a, 1 = b, 2 = tie; the first on a tie).

    Raises:
        DataError: naming the file, the row id and the column of the first bad row.
    """
    values = probabilities.check_rows(df[list(LABEL_COLS)], df["id"], LABEL_COLS, name,
                                      probabilities.LABEL_TOL)
    for k, col in enumerate(LABEL_COLS):
        df[col] = values[:, k]
    return values.argmax(1)


def label_check(soft: bool):
    """The `label_check` of `frames.load_split` for a run: `check_soft`, or None (one-hot)."""
    return check_soft if soft else None


def targets(df: pd.DataFrame) -> np.ndarray:
    """(n, 3) training targets: the winner columns as floats (one-hot rows stay one-hot)."""
    return df[list(LABEL_COLS)].to_numpy(dtype=np.float64)


def hard_mask(df: pd.DataFrame) -> np.ndarray:
    """Which rows carry a one-hot label (the competition's kind)."""
    t = targets(df)
    return ((t == 0) | (t == 1)).all(1) & (t.sum(1) == 1)


def scored(rows: pd.DataFrame, probs: np.ndarray) -> tuple[np.ndarray, dict]:
    """Which held-out rows the headline metrics score, and the soft rows' own score.

    Returns:
        A mask of the one-hot rows (the competition's: the headline's rows) and, when some rows
        are soft, `soft_log_loss` and `n_soft_eval` of those ({} when every row is one-hot).
    """
    hard = hard_mask(rows)
    if hard.all():
        return hard, {}
    soft = ~hard
    return hard, {"soft_log_loss": metrics.soft_log_loss(targets(rows)[soft],
                                                         np.asarray(probs)[soft]),
                  "n_soft_eval": int(soft.sum())}


def conversation_keys(df: pd.DataFrame, swapped: bool = False) -> pd.Series:
    """One text key per row: prompt and both answers (B before A when `swapped`)."""
    a, b = ("response_b", "response_a") if swapped else ("response_a", "response_b")
    return pd.Series([json.dumps([list(p), list(x), list(y)]) for p, x, y in
                      zip(df["prompt"], df[a], df[b])], index=df.index)


def load_extra(paths: Sequence[str | Path], known: Sequence[pd.DataFrame], *,
               soft: bool = False, lenient: bool = False) -> tuple[pd.DataFrame, dict]:
    """The extra training rows of `paths`, without the conversations of `known` (train/test).

    A row whose conversation (either A/B order) is in `known` or in an earlier extra row is
    dropped and reported by id; a kept row whose id is also a train/test id or an earlier extra
    row's is a `DataError` (the ids of teachers, oof.csv and held_out.json must be unique).

    Returns:
        The kept rows (train.csv's columns and `label`) and the report metrics.json records.
    """
    keys = set().union(*(conversation_keys(df) for df in known))
    ids = set().union(*(df["id"].astype(str) for df in known))
    kept, report = [], {"files": {}, "rows": 0, "dropped": 0, "dropped_ids": []}
    for path in paths:
        df = frames.load_split(path, labelled=True, lenient=lenient, label_check=label_check(soft))
        key, rev = conversation_keys(df), conversation_keys(df, swapped=True)
        dup = (key.isin(keys) | rev.isin(keys) | key.duplicated()).to_numpy()
        df, dropped = df[~dup].reset_index(drop=True), df["id"][dup].tolist()
        clash = df["id"].astype(str).isin(ids).to_numpy()
        if clash.any():
            raise DataError(f"{path}: row id {df['id'][clash].iloc[0]}: column 'id' repeats an id "
                            f"of train/test or an earlier extra_train file ({int(clash.sum())} "
                            "such row(s)); extra rows need ids of their own")
        if dropped:
            log.warning("extra_train %s: dropped %d row(s) repeating a train/test conversation: "
                        "ids %s", path, len(dropped), dropped[:20])
        keys |= set(key[~dup])
        ids |= set(df["id"].astype(str))
        report["files"][str(path)] = {"rows": len(df) + len(dropped), "used": len(df),
                                      "dropped": len(dropped)}
        report["rows"] += len(df)
        report["dropped"] += len(dropped)
        report["dropped_ids"] += dropped
        kept.append(df)
    return pd.concat(kept, ignore_index=True), report


@dataclass
class TrainingData:
    """Everything a run trains on: the competition rows, extra rows, teacher files.

    `prepare(folds)` checks the teachers against every split before training; then
    `training_rows(positions, fold)` is one split's training frame (its rows of `train`, every
    extra row, each teacher's probabilities as columns, see `teachers.attach`).
    """

    train: pd.DataFrame
    test: pd.DataFrame | None
    extra: pd.DataFrame | None = None
    extra_report: dict | None = None
    teacher_set: teachers.TeacherSet | None = None

    def prepare(self, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Check every teacher covers each split's training rows; leaks refused or flagged."""
        if self.teacher_set is not None:
            extra_ids = [] if self.extra is None else self.extra["id"].tolist()
            ids = self.train["id"].to_numpy()
            self.teacher_set.check([(ids[tr].tolist() + extra_ids, ids[va].tolist())
                                    for tr, va in folds])

    def training_rows(self, positions: np.ndarray, fold: int = 0) -> pd.DataFrame:
        """The training frame of one split: `train` rows at `positions` + every extra row."""
        rows = self.train.iloc[positions]
        if self.extra is not None:
            rows = pd.concat([rows, self.extra], ignore_index=True)
        return rows if self.teacher_set is None else self.teacher_set.attach(rows, fold)

    def report(self) -> dict:
        """The optional metrics.json keys of the levers used (`extra_train`, `teachers`)."""
        out = {}
        if self.extra_report is not None:
            out["extra_train"] = self.extra_report
        if self.teacher_set is not None:
            out["teachers"] = self.teacher_set.report()
        return out


def load_training(spec: DataSpec, root: str | Path | None = None) -> TrainingData:
    """Load and check the rows of a run (a config's `.data`).

    train.csv with the run's label check (`soft_labels`), test.csv when there is one, every
    `extra_train` file (deduplicated against both), every teacher file (`teachers`). Relative
    paths resolve against `root` (default: the working directory).

    Raises:
        DataError / FileNotFoundError: naming the file, row id and column of the first problem.
    """
    root = Path(root or ".")
    data_dir = root / spec.data_dir
    train = frames.load_split(frames.find_file(data_dir, "train"), labelled=True,
                              lenient=spec.lenient, label_check=label_check(spec.soft_labels))
    test_path = frames.find_file(data_dir, "test", required=False)
    test = frames.load_split(test_path, labelled=False, lenient=spec.lenient) if test_path \
        else None
    out = TrainingData(train, test)
    if spec.extra_train:
        out.extra, out.extra_report = load_extra(
            [root / p for p in spec.extra_train], [d for d in (train, test) if d is not None],
            soft=spec.soft_labels, lenient=spec.lenient)
    if spec.max_train_rows:
        out.train = train.iloc[:spec.max_train_rows].reset_index(drop=True)
    if test is not None and spec.max_test_rows:
        out.test = test.iloc[:spec.max_test_rows].reset_index(drop=True)
    if spec.teachers:
        out.teacher_set = teachers.TeacherSet.load(spec, root)
    return out
