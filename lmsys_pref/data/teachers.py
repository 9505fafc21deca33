"""Teacher probabilities for distillation (`teachers`): read, checked against the splits, attached.

A teacher file holds `id` and the three winner columns as probabilities: any run's oof.csv or
val.csv, a run folder (its oof.csv, else val.csv), a `pseudo-label` output, or any such CSV.
Every training row of every split (extra rows included) needs every teacher's row: a missing
id is a `DataError` naming the teacher file and the first ids, before any model is built.

'{fold}' in a path names per-fold files (fold k of the run reads the file made for k, the 1st
place's teachers trained per fold); '{out_dir}' stands for the run's out_dir (grids chain runs
with it). A student's held-out figures stay honest only if no teacher that made its training
targets saw its held-out rows, so each file's provenance is checked where it is known:
 - a run's oof.csv: every row's probabilities come from a fold model that trained on the other
   folds, so each held-out row found in the file was seen;
 - a run's val.csv: its model trained on the rows outside the file;
 - a `pseudo-label` output: its record (pseudo_labels.json, `provenance.record_of`) lists the
   ids its models never trained on, and whether their own runs were cv-honest;
 - any other file: unknown (recorded as such).
A per-fold file that saw its fold's held-out rows is refused (the teacher's folds do not match);
any other leak is flagged in metrics.json (`teachers`: `leaked_rows` per file; `cv_leaks`).
XGBoost trains on a mixture of the label and the teachers' probabilities (`weights` are then
`XGBConfig.mixture_weights`); its final fit, which has no fold, reads the mean of a per-fold
teacher's files. Torch-free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..configs.parts import DataSpec
from . import frames
from . import provenance as prov
from .frames import LABEL_COLS, DataError
from .probabilities import PREDICTION_TOL, check_rows

log = logging.getLogger("lmsys_pref.teachers")
PSEUDO_LABELS, PSEUDO_META = "pseudo_labels.csv", "pseudo_labels.json"
RUN_FILES = ("oof.csv", "val.csv")


def columns(i: int, n_classes: int = 3) -> list[str]:
    """The columns of teacher `i`'s probabilities in a training frame."""
    return [f"teacher{i}_{c}" for c in LABEL_COLS[:n_classes]]


def resolve(spec: str, fold: int = 0, out_dir: str | Path = ".", root: Path = Path(".")
            ) -> Path:
    """The file a teacher entry names for `fold` (a run folder gives its oof.csv or val.csv)."""
    path = root / spec.replace("{fold}", str(fold)).replace("{out_dir}", str(out_dir))
    if path.is_dir():
        found = [path / name for name in RUN_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"teacher {path}: a folder without {' or '.join(RUN_FILES)}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"teacher {path}: no such file")
    return path


def read(path: Path, n_classes: int = 3) -> pd.DataFrame:
    """A teacher file as (n, n_classes) probabilities indexed by id (text), rows renormalised;
    a three-class teacher of a two-class run gives its a and b columns, the tie's mass
    dropped (as a three-class model scores a two-class task).

    Raises:
        DataError: a missing column, a duplicate id, or a row whose cells are not probabilities
            (in [0, 1], summing to 1 within `PREDICTION_TOL`: a teacher row is a
            model's output), naming the file, the id and the column.
    """
    df = frames.read_table(path)
    cols = LABEL_COLS if LABEL_COLS[2] in df.columns or n_classes == 3 else LABEL_COLS[:2]
    missing = [c for c in ("id",) + cols if c not in df.columns]
    if missing:
        raise DataError(f"teacher {path}: missing column(s) {missing}; a teacher file holds "
                        f"'id' and {list(LABEL_COLS[:n_classes])}; found {list(df.columns)[:12]}")
    ids = df["id"].astype(str)
    if ids.duplicated().any():
        raise DataError(f"teacher {path}: duplicate id(s) {ids[ids.duplicated()].head(5).tolist()}"
                        " in column 'id'")
    p = check_rows(df[list(cols)], ids, cols, f"teacher {path}", PREDICTION_TOL)[:, :n_classes]
    return pd.DataFrame(p / p.sum(1, keepdims=True), index=ids.to_numpy(),
                        columns=LABEL_COLS[:n_classes])


def provenance(path: Path, ids: pd.Index) -> prov.Source:
    """What the teacher's models trained on, where its folder tells: 'saw' `ids` for a run's
    oof.csv, 'never_saw' for a run's val.csv or a pseudo-label output (its record), else
    'unknown' (`provenance.Source`)."""
    record = prov.record_of(path)
    if record is not None:
        return prov.from_record(record)
    if path.name in RUN_FILES and (path.parent / "metrics.json").is_file():
        return prov.Source("saw" if path.name == "oof.csv" else "never_saw", frozenset(ids))
    return prov.Source("unknown")


@dataclass
class TeacherFile:
    """One teacher file of one fold: its probabilities and provenance."""

    spec: str
    path: Path
    probs: pd.DataFrame
    sight: prov.Source

    def leaked(self, held_out: Sequence) -> int | None:
        """How many `held_out` ids the models behind this file trained on (None: unknown)."""
        return self.sight.leaked(held_out)


class TeacherSet:
    """The `teachers` of a run: one file per teacher, or per teacher and fold ('{fold}')."""

    def __init__(self, files: dict[tuple[int, int], TeacherFile], specs: list[str],
                 temperature: float, weights: list[float]):
        self.files, self.specs = files, specs
        self.temperature, self.weights = temperature, weights
        self.leaks: list[int | None] = [0] * len(specs)

    @classmethod
    def load(cls, run: DataSpec, root: str | Path = ".", n_classes: int = 3) -> TeacherSet:
        """Read every teacher file of `run.teachers` (per-fold ones for each of the run's
        folds) as the task's `n_classes`; `run` is a config's `.data`."""
        n_folds = max(1, run.n_folds)
        files = {}
        for i, spec in enumerate(run.teachers):
            for k in range(n_folds) if "{fold}" in spec else [0]:
                path = resolve(spec, k, run.out_dir, Path(root))
                probs = read(path, n_classes)
                files[i, k] = TeacherFile(spec, path, probs, provenance(path, probs.index))
        return cls(files, list(run.teachers), run.distill_temperature,
                   loss_weights(run.distill_weights, len(run.teachers)))

    def file(self, i: int, fold: int) -> TeacherFile:
        return self.files[i, fold] if "{fold}" in self.specs[i] else self.files[i, 0]

    def probs_of(self, i: int, fold: int | None) -> pd.DataFrame:
        """Teacher `i`'s probabilities for `fold`; `fold` None (a fit on every row, XGBoost's
        final booster) reads the mean of a per-fold teacher's files, row by id."""
        if fold is not None or "{fold}" not in self.specs[i]:
            return self.file(i, fold or 0).probs
        mean = pd.concat([f.probs for (n, _), f in self.files.items() if n == i]).groupby(
            level=0, sort=False).mean()
        return mean.div(mean.sum(1), axis=0)

    def check(self, splits: Sequence[tuple[Sequence, Sequence]],
              final_ids: Sequence | None = None) -> None:
        """Each split's (training ids, held-out ids): every teacher must cover the training ids
        (`DataError` naming the file and the first missing ids); its leaks are counted.
        `final_ids`: the rows of a fit on every row (no fold), covered the same way."""
        self.leaks = [None if self.file(i, 0).sight.leaked([]) is None else 0  # unknown: None
                      for i in range(len(self.specs))]
        for k, (train_ids, held_out) in enumerate(splits):
            for i, spec in enumerate(self.specs):
                leak = self._check_split(i, k, train_ids, held_out)
                self.leaks[i] = None if leak is None or self.leaks[i] is None \
                    else self.leaks[i] + leak
        for i in range(len(self.specs)) if final_ids is not None else ():
            self._covers(self.probs_of(i, None), final_ids, self.file(i, 0).path, "the final fit")
        for spec, leak in zip(self.specs, self.leaks):
            if leak is None or leak:
                log.warning("teacher %s: %s", spec, "provenance unknown: its held-out honesty is "
                            "unchecked" if leak is None else f"trained on {leak} held-out row(s) "
                            "of this run (its OOF came from models that saw them); flagged in "
                            "metrics.json")

    def _check_split(self, i: int, k: int, train_ids: Sequence, held_out: Sequence
                     ) -> int | None:
        """Teacher `i` in split `k`: covers its training ids; its leak (a per-fold file's is
        refused)."""
        f = self.file(i, k)
        self._covers(f.probs, train_ids, f.path, f"fold {k}")
        if "{fold}" in self.specs[i]:
            return prov.check_fold_file("teacher", f.path, k, f.sight, held_out)
        return f.leaked(held_out)

    @staticmethod
    def _covers(probs: pd.DataFrame, ids: Sequence, path: Path, where: str) -> None:
        need = pd.Index(pd.Series(ids, dtype=object).astype(str))
        missing = need[~need.isin(probs.index)]
        if len(missing):
            raise DataError(f"teacher {path}: no probabilities for {len(missing)} training "
                            f"row(s) of {where}: ids {missing[:5].tolist()}; every training row "
                            "needs every teacher's row")

    def attach(self, rows: pd.DataFrame, fold: int | None) -> pd.DataFrame:
        """`rows` with each teacher's probabilities as columns (`columns(i)`); `fold` None: the
        final fit's (`probs_of`)."""
        ids = rows["id"].astype(str).to_numpy()
        extra = {}
        for i in range(len(self.specs)):
            values = self.probs_of(i, fold).loc[ids].to_numpy()
            extra.update(dict(zip(columns(i, values.shape[1]), values.T)))
        return rows.assign(**extra)

    def report(self) -> dict:
        """metrics.json's `teachers`: the files, temperature, weights and leaks."""
        return {"temperature": self.temperature, "weights": self.weights,
                "files": [{"teacher": spec, "per_fold": "{fold}" in spec,
                           "paths": sorted({str(f.path) for (i, _), f in self.files.items()
                                            if i == n}),
                           "leaked_rows": leak, "provenance": self.file(n, 0).sight.kind}
                          for n, (spec, leak) in enumerate(zip(self.specs, self.leaks))]}

    def leak_entries(self) -> list[dict]:
        """The `cv_leaks` entries of the teachers that saw held-out rows (or may have)."""
        return [prov.leak_entry("teachers", spec, self.file(i, 0).sight, leak)
                for i, (spec, leak) in enumerate(zip(self.specs, self.leaks))
                if leak is None or leak]


def loss_weights(weights: Sequence[float], n_teachers: int) -> list[float]:
    """The weights of [CE, KL_1, cos_1, ...]: as given, or 1 / (1 + 2 n) each."""
    n_terms = 1 + 2 * n_teachers
    return [float(w) for w in weights] if weights else [1.0 / n_terms] * n_terms


def probabilities(rows: pd.DataFrame, n_teachers: int) -> np.ndarray:
    """(n, n_teachers, k) teacher probabilities of a training frame (`TeacherSet.attach`; k:
    the task's classes)."""
    k = sum(c in rows.columns for c in columns(0))
    return np.stack([rows[columns(i, k)].to_numpy(dtype=np.float64)
                     for i in range(n_teachers)], axis=1)
