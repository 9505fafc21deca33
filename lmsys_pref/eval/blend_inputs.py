"""The inputs of a blend: each run folder's scored rows, the rows every run scored, and the
prompt groups of the blend's cross-fitting folds.

A run folder scored either every labelled row (k-fold, `oof.csv`) or a holdout (`val.csv`); its
metrics.json `eval` names which (`runs.EVAL_FILES`). A blend fits on the ids all its runs scored
and refuses fewer than `MIN_SHARED_ROWS`.
"""
from __future__ import annotations

import dataclasses
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, runs
from ..configs.tasks import LMSYS_2024, Task
from ..data import splits
from ..files.jsonio import load_json
from ..runs import submission
from .report import find_data_dir, load_predictions, run_task

MIN_SHARED_ROWS = 200
"""Fewest labelled rows every blended run must have scored: weights, temperature and bias fitted
on fewer are noise (`min_shared_rows` / `--min-shared-rows` lowers it, e.g. for tiny tests)."""


class SharedRowsError(data.DataError):
    """The runs to blend share too few scored rows; the message names each run's row count."""


class LeakyRunError(data.DataError):
    """A run to blend is not cv-honest (metrics.json `cv_honest` false) and leaks were not
    allowed; the message names the run and its leaks."""


def honesty(run_dir: str | Path) -> tuple[bool | None, list[dict]]:
    """A run's metrics.json `cv_honest` and `cv_leaks` (None, []: not recorded, older runs)."""
    path = Path(run_dir) / "metrics.json"
    m = load_json(path) if path.is_file() else {}
    return m.get("cv_honest"), list(m.get("cv_leaks") or [])


def leak_text(leaks: list[dict]) -> str:
    """The leaks of `cv_leaks` in a few words each: input, file and rows."""
    return "; ".join(f"{x.get('input')} {x.get('file')}: " + (
        "provenance unknown" if x.get("leaked_rows") is None else
        f"{x['leaked_rows']} held-out row(s) seen") for x in leaks)


def runs_honesty(run_dirs: list) -> dict:
    """`cv_honest` and `cv_leaks` of the output of a step on `run_dirs` (a blend, a
    calibration): honest when every input is, each input's leaks named with its run; {} when
    some input does not record it."""
    found = [(str(d), *honesty(d)) for d in run_dirs]
    if any(h is None for _, h, _ in found):
        return {}
    return {"cv_honest": all(h for _, h, _ in found),
            "cv_leaks": [{**leak, "run": run} for run, _, leaks in found for leak in leaks]}


def check_honest(run_dirs: list, allow_leaky: bool = False) -> dict[str, bool | None]:
    """Each run's `cv_honest`; a leaky one is refused unless `allow_leaky`.

    Raises:
        LeakyRunError: naming the first leaky run and its leaks, before any work.
    """
    found = {str(d): honesty(d) for d in run_dirs}
    for run, (honest, leaks) in found.items():
        if honest is False and not allow_leaky:
            raise LeakyRunError(f"blend: {run} is not cv-honest ({leak_text(leaks)}): its OOF "
                                "flatters it, so the blend would over-weight it; pass "
                                "--allow-leaky (allow_leaky=True) to blend it anyway")
    return {run: honest for run, (honest, _) in found.items()}


@dataclasses.dataclass
class Run:
    """The OOF and test predictions of one run folder."""

    path: Path
    ids: np.ndarray
    labels: np.ndarray
    oof: np.ndarray
    test_ids: np.ndarray | None
    test: np.ndarray | None
    source: Path | None = None
    """The file the OOF rows came from (oof.csv or val.csv, as metrics.json's `eval` names)."""
    task: Task = LMSYS_2024
    """The task the run was made for (metrics.json's `task`; runs before tasks: lmsys-2024)."""


def load_run(run_dir: str | Path) -> Run:
    """Read and validate a run folder's oof.csv|val.csv and, when present, submission.csv.

    Raises:
        FileNotFoundError, DataError, SubmissionError: naming the run folder's file and the
            row id (bad ids, probabilities out of range or not summing to 1).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    preds, src = load_predictions(run_dir)
    task = run_task(run_dir)
    ids = data.check_ids(preds, str(src), integer=task.integer_ids)  # as train.csv's
    probs = submission.check_probs(ids, preds[list(task.prob_columns)], str(src),
                                   task.prob_columns)
    sub = runs.read_test_probs(run_dir)  # test_probs.csv where the submission holds labels
    return Run(run_dir, ids.to_numpy(), preds["label"].to_numpy(dtype=int), probs,
               None if sub is None else sub["id"].to_numpy(),
               None if sub is None else sub[list(task.prob_columns)].to_numpy(np.float64), src,
               task)



def align(loaded: list[Run], min_rows: int = MIN_SHARED_ROWS) -> list[Run]:
    """Keep the OOF rows every run scored, in the first run's order; labels and test ids agree.

    Raises:
        SharedRowsError: fewer than `min_rows` shared rows (naming each run and its row count).
        DataError: a shared row's label, or the test ids, differ (naming the run and row id).
    """
    ref = loaded[0]
    other = next((r for r in loaded if r.task.n_classes != ref.task.n_classes), None)
    if other is not None:
        raise data.DataError(f"{other.path}: a {other.task.name} run ({other.task.n_classes} "
                             f"classes) cannot blend with {ref.path}, a {ref.task.name} run")
    shared = np.isin(ref.ids, reduce(np.intersect1d, [r.ids for r in loaded]))
    if shared.sum() < min_rows:
        counts = ", ".join(f"{r.source or r.path} ({len(r.ids)} rows)" for r in loaded)
        raise SharedRowsError(f"blend: the runs share {int(shared.sum())} scored row(s), fewer "
                              f"than min_shared_rows={min_rows}: {counts}")
    ids = ref.ids[shared]
    out = []
    for r in loaded:
        pos = pd.Series(np.arange(len(r.ids)), index=r.ids).loc[ids].to_numpy()
        if (r.labels[pos] != ref.labels[shared]).any():
            bad = ids[(r.labels[pos] != ref.labels[shared]).argmax()]
            raise data.DataError(f"{r.source or r.path}: column 'label' of row id {bad} differs "
                                 f"from {ref.source or ref.path}")
        if (r.test_ids is None) != (ref.test_ids is None) or (
                r.test_ids is not None and not np.array_equal(r.test_ids, ref.test_ids)):
            raise data.DataError(f"{r.path}/submission.csv: test ids differ from {ref.path} "
                                 "(a blend needs every run's predictions of the same test ids, "
                                 "in the same order)")
        out.append(dataclasses.replace(r, ids=ids, labels=ref.labels[shared], oof=r.oof[pos]))
    return out


def cv_groups(loaded: list[Run], group_by: str = "prompt", data_dir: str | Path | None = None
              ) -> tuple[np.ndarray | None, str]:
    """Prompt groups of the shared rows for the cross-fitting folds, and a note saying which.

    The prompts come from `data_dir`/train.csv, else from the first run whose saved config names
    a data_dir that exists; without one (or when some shared id is not in it) the folds are
    stratified by label only, and the note says so.
    """
    if group_by == "none":
        return None, "none (group_by: none)"
    found = [data_dir] if data_dir else [find_data_dir(r.path) for r in loaded]
    folder = next((Path(d) for d in found if d), None)
    path = folder and data.find_file(folder, "train", required=False)
    if path is None:
        return None, "none (no train.csv with the runs' prompts: pass data_dir)"
    train = data.load_split(path, labelled=False, lenient=True, task=loaded[0].task)
    groups = pd.Series(splits.fold_groups(train, group_by), index=train["id"])
    ids = loaded[0].ids
    if not np.isin(ids, groups.index).all():
        return None, f"none ({path} lacks some of the shared ids)"
    return groups.loc[ids].to_numpy(), f"{group_by} ({path})"
