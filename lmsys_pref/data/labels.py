"""Labels beyond the competition's one-hot rows: soft labels and extra training rows.

Soft labels: with `soft_labels` a labelled file's three winner columns may hold probabilities
(each in [0, 1], the row summing to 1 within `probabilities.LABEL_TOL`); `check_soft` is the
label check `frames.load_split` runs then, and without it the strict one-hot check stays. A soft
row trains with a soft cross-entropy (XGBoost: three weighted copies) and, when scored, counts
in `soft_log_loss`; the hard-label metrics of the one-hot rows (the competition's) stay the
headline (`scored`; every row by its most probable class when none is one-hot).

Extra rows (`extra_train`): labelled files added to the training rows only. Rows repeating a
train/test conversation (`repeats`: prompt and both answers, in either order) are dropped,
counted and listed by id, as the winners deduplicated the 33k Arena set against the competition
data; the rows of a pseudo-label output of the run's own test.csv are kept (unlabelled rows,
labelled by models), and a file left with no row stops the run. '{fold}' in a path names
per-fold files (fold k trains on the file of k). `load_training` loads everything a run trains
on (teacher files through `lmsys_pref.data.teachers`) and checks it before any model is built;
`TrainingData.report` says whether its held-out figures are honest (`provenance`). Torch-free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..configs.parts import DataSpec
from ..configs.tasks import LMSYS_2024, Task
from . import frames, metrics, probabilities, provenance, repeats, teachers
from .frames import LABEL_COLS, DataError
from .repeats import conversation_keys  # noqa: F401 (labels.conversation_keys, as before)
from .task import resolve

log = logging.getLogger("lmsys_pref.labels")


def check_soft(df: pd.DataFrame, name: str, columns: Sequence[str] = LABEL_COLS) -> np.ndarray:
    """The label check of a soft-labelled file (`frames.load_split(label_check=...)`).

    Each of the task's winner `columns` must be a number in [0, 1] and each row must sum to 1
    within `probabilities.LABEL_TOL` (`probabilities.check_rows`); the columns become floats in
    place.

    Returns:
        The most probable class of each row (0 = a, 1 = b, 2 = tie; the first on a tie).

    Raises:
        DataError: naming the file, the row id and the column of the first bad row.
    """
    values = probabilities.check_rows(df[list(columns)], df["id"], columns, name,
                                      probabilities.LABEL_TOL)
    for k, col in enumerate(columns):
        df[col] = values[:, k]
    return values.argmax(1)


def label_check(soft: bool):
    """The `label_check` of `frames.load_split` for a run: `check_soft`, or None (one-hot)."""
    return check_soft if soft else None


def targets(df: pd.DataFrame) -> np.ndarray:
    """(n, k) training targets: the task's winner columns as floats (one-hot rows stay
    one-hot; k = 3 with ties, 2 without: `frames.prob_columns`)."""
    return df[list(frames.prob_columns(df))].to_numpy(dtype=np.float64)


def hard_mask(df: pd.DataFrame) -> np.ndarray:
    """Which rows carry a one-hot label (the competition's kind)."""
    t = targets(df)
    return ((t == 0) | (t == 1)).all(1) & (t.sum(1) == 1)


def scored(rows: pd.DataFrame, probs: np.ndarray) -> tuple[np.ndarray, dict]:
    """Which held-out rows the headline metrics score, and the soft rows' own score.

    The headline scores hard labels: the one-hot rows (the competition's). When no row is
    one-hot (every label soft, e.g. a train.csv of a model's probabilities), it scores every row
    against its most probable class (the `label` column, `check_soft`) and says so
    (`hard_labels: "argmax"`), so the log loss is never null because the targets were soft.

    Returns:
        A mask of the rows the headline scores and, when some rows are soft, `soft_log_loss`
        and `n_soft_eval` of those ({} when every row is one-hot).
    """
    hard = hard_mask(rows)
    if hard.all():
        return hard, {}
    soft = ~hard
    extra = {"soft_log_loss": metrics.soft_log_loss(targets(rows)[soft], np.asarray(probs)[soft]),
             "n_soft_eval": int(soft.sum())}
    if not hard.any():
        return soft, {**extra, "hard_labels": "argmax"}
    return hard, extra


def load_extra(paths: Sequence[str | Path], known: Sequence[pd.DataFrame], *,
               soft: bool = False, lenient: bool = False, task: Task = LMSYS_2024,
               unlabelled: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """The extra training rows of `paths`, without the conversations of `known` (train/test).

    A row whose conversation (either A/B order) is in `known`, in `unlabelled` (the run's test
    rows) or in an earlier extra row is dropped and reported by id; a kept row whose id is also
    a train/test id or an earlier extra row's is a `DataError` (the ids of teachers, oof.csv and
    held_out.json must be unique). The exception: a pseudo-label output of a test file
    (`provenance.unlabelled_test_rows`) keeps its rows that repeat `unlabelled`, ids included:
    they are those unlabelled rows, labelled by models (the 2nd/3rd places' lever).

    Returns:
        The kept rows (train.csv's columns and `label`) and the report metrics.json records.

    Raises:
        DataError: an id clash, or a file all of whose rows were dropped (naming it and what
            they repeated), before any model is built.
    """
    seen = {("train/test" if unlabelled is None and len(known) > 1 else "train"): set().union(
        *(repeats.conversation_keys(df) for df in known))}
    if unlabelled is not None:
        seen["test"] = set(repeats.conversation_keys(unlabelled))
    seen["an earlier extra row"] = set()
    ids = set().union(*(df["id"].astype(str) for df in [*known, unlabelled] if df is not None))
    kept, report = [], {"files": {}, "rows": 0, "dropped": 0, "dropped_ids": []}
    for path in paths:
        df = frames.load_split(path, labelled=True, lenient=lenient, task=task,
                               label_check=label_check(soft))
        test_ok = unlabelled is not None and provenance.unlabelled_test_rows(path)
        df, entry, keys = repeats.without_repeats(df, path, seen, test_ok)
        entry["one_hot_rows"] = int(hard_mask(df).sum())
        entry["provenance"] = provenance.of_labels(path, bool(hard_mask(df).all())).kind
        clash = df["id"].astype(str).isin(ids).to_numpy() & ~entry.pop("_test_copy")
        if clash.any():
            raise DataError(f"{path}: row id {df['id'][clash].iloc[0]}: column 'id' repeats an id "
                            f"of train/test or an earlier extra_train file ({int(clash.sum())} "
                            "such row(s)); extra rows need ids of their own")
        seen["an earlier extra row"] |= keys
        ids |= set(df["id"].astype(str))
        report["files"][str(path)] = entry
        report["rows"] += len(df)
        report["dropped"] += entry["dropped"]
        report["dropped_ids"] += entry.pop("_dropped_ids")
        kept.append(df)
    return pd.concat(kept, ignore_index=True), report


@dataclass
class TrainingData:
    """Everything a run trains on: the competition rows, extra rows, teacher files.

    `prepare(folds)` checks the teachers and the per-fold files against every split before
    training and finds the leaks of the run's inputs (`cv_honest`, `cv_leaks`); then
    `training_rows(positions, fold)` is one split's training frame (its rows of `train`, the
    extra rows of that fold, each teacher's probabilities as columns, see `teachers.attach`).
    """

    train: pd.DataFrame
    test: pd.DataFrame | None
    extra: pd.DataFrame | None = None
    extra_report: dict | None = None
    teacher_set: teachers.TeacherSet | None = None
    extra_folds: dict[int, pd.DataFrame] | None = None
    """With '{fold}' in `extra_train`: fold k's extra rows (then `extra` is None)."""
    sources: list[tuple[str, str, int | None, provenance.Source]] = field(default_factory=list)
    """(input, spec, fold or None, source) of the extra files and a soft train.csv."""
    leaks: list[dict] | None = None

    def extra_rows(self, fold: int | None = 0) -> pd.DataFrame | None:
        """The extra rows a split trains on; `fold` None: a fit on every row (XGBoost's final
        booster), whose per-fold rows are the folds' mean label by id."""
        if self.extra_folds is None:
            return self.extra
        if fold is not None:
            return self.extra_folds[fold]
        rows = pd.concat(list(self.extra_folds.values()), ignore_index=True)
        cols = list(frames.prob_columns(rows))  # the task's classes
        mean = rows.groupby("id", sort=False)[cols].mean()
        out = rows.drop_duplicates("id").reset_index(drop=True)
        out[cols] = mean.loc[out["id"]].to_numpy()
        return out.assign(label=out[cols].to_numpy().argmax(1))

    def prepare(self, folds: Sequence[tuple[np.ndarray, np.ndarray]], final: bool = False
                ) -> None:
        """Check every teacher covers each split's training rows (and, with `final`, a fit on
        every row); leaks refused (a per-fold file's) or recorded (`report`)."""
        ids = self.train["id"].astype(str).to_numpy()
        splits = [(ids[tr].tolist() + self._extra_ids(k), ids[va].tolist())
                  for k, (tr, va) in enumerate(folds)]
        if self.teacher_set is not None:
            self.teacher_set.check(splits, ids.tolist() + self._extra_ids(None) if final
                                   else None)
        self.leaks = self._leak_entries([tr for tr, _ in folds], [va for _, va in splits])

    def _extra_ids(self, fold: int | None) -> list[str]:
        rows = self.extra_rows(fold)
        return [] if rows is None else rows["id"].astype(str).tolist()

    def _leak_entries(self, train_pos: list[np.ndarray], held_outs: list[list]) -> list[dict]:
        """`cv_leaks`: the teachers', then each extra file's and a soft train.csv's."""
        entries = [] if self.teacher_set is None else self.teacher_set.leak_entries()
        return entries + provenance.input_leaks(self.sources, ~hard_mask(self.train), train_pos,
                                                held_outs)

    def training_rows(self, positions: np.ndarray, fold: int | None = 0) -> pd.DataFrame:
        """The training frame of one split: `train` rows at `positions` + the fold's extra
        rows (`fold` None: a fit on every row, see `extra_rows`)."""
        rows, extra = self.train.iloc[positions], self.extra_rows(fold)
        if extra is not None:
            rows = pd.concat([rows, extra], ignore_index=True)
        return rows if self.teacher_set is None else self.teacher_set.attach(rows, fold)

    def report(self) -> dict:
        """The optional metrics.json keys of the levers used (`extra_train`, `teachers`) and
        the run's honesty (`cv_honest`, `cv_leaks`; the inputs alone when `prepare` saw no
        split)."""
        out = {}
        if self.extra_report is not None:
            out["extra_train"] = self.extra_report
        if self.teacher_set is not None:
            out["teachers"] = self.teacher_set.report()
        leaks = self.leaks if self.leaks is not None else self._leak_entries([], [])
        return {**out, **provenance.honesty(leaks)}


def extra_path(spec: str, fold: int, out_dir: str, root: Path) -> Path:
    """The file an `extra_train` entry names for `fold` ('{fold}', '{out_dir}' filled in; a
    folder gives its pseudo_labels.csv)."""
    path = root / spec.replace("{fold}", str(fold)).replace("{out_dir}", str(out_dir))
    return path / teachers.PSEUDO_LABELS if path.is_dir() else path


def _load_extra_rows(spec: DataSpec, root: Path, train: pd.DataFrame,
                     test: pd.DataFrame | None, out: TrainingData, task: Task) -> None:
    """`extra_train` into `out`: one set of rows, or with '{fold}' entries one per fold (each
    fold's files deduplicated together); the report lists every file once."""
    per_fold = any("{fold}" in p for p in spec.extra_train)
    folds = range(max(1, spec.n_folds)) if per_fold else [0]
    loaded, report = {}, {"files": {}, "rows": 0, "dropped": 0, "dropped_ids": []}
    for k in folds:
        paths = [extra_path(p, k, spec.out_dir, root) for p in spec.extra_train]
        loaded[k], rep = load_extra(paths, [train], soft=spec.soft_labels,
                                    lenient=spec.lenient, task=task, unlabelled=test)
        for p, path in zip(spec.extra_train, paths):
            if k == 0 or "{fold}" in p:
                entry = rep["files"][str(path)]
                report["files"][str(path)] = entry
                report["rows"] += entry["used"]
                report["dropped"] += entry["dropped"]
                out.sources.append(("extra_train", p, k if "{fold}" in p else None,
                                    provenance.of_labels(path, entry["one_hot_rows"] ==
                                                         entry["used"])))
        report["dropped_ids"] += [i for i in rep["dropped_ids"] if i not in report["dropped_ids"]]
    out.extra_report = {**report, "per_fold": per_fold}
    out.extra, out.extra_folds = (None, loaded) if per_fold else (loaded[0], None)


def load_training(spec: DataSpec, root: str | Path | None = None) -> TrainingData:
    """Load and check the rows of a run (a config's `.data`).

    train.csv with the run's label check (`soft_labels`), test.csv when there is one, every
    `extra_train` file (deduplicated against both; '{fold}' names per-fold files, see
    `extra_path`), every teacher file (`teachers`). Relative paths resolve against `root`
    (default: the working directory).

    Raises:
        DataError / FileNotFoundError: naming the file, row id and column of the first problem.
    """
    root = Path(root or ".")
    data_dir = root / spec.data_dir
    task = resolve(spec.task, data_dir)  # 'auto': the folder's
    train_path = frames.find_file(data_dir, "train")
    train = frames.load_split(train_path, labelled=True, task=task, lenient=spec.lenient,
                              label_check=label_check(spec.soft_labels))
    test_path = frames.find_file(data_dir, "test", required=False)
    test = frames.load_split(test_path, labelled=False, lenient=spec.lenient, task=task) \
        if test_path else None
    out = TrainingData(train, test)
    if spec.extra_train:
        _load_extra_rows(spec, root, train, test, out, task)
    if spec.max_train_rows:
        out.train = train.iloc[:spec.max_train_rows].reset_index(drop=True)
    if not hard_mask(out.train).all():  # soft rows are model outputs: where from?
        out.sources.append(("soft labels of train.csv", str(train_path), None,
                            provenance.of_labels(train_path, False)))
    if test is not None and spec.max_test_rows:
        out.test = test.iloc[:spec.max_test_rows].reset_index(drop=True)
    if spec.teachers:
        out.teacher_set = teachers.TeacherSet.load(spec, root, task.n_classes)
    return out
