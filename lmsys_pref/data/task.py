"""Which task a data folder holds (`detect`), or the one a run names (`resolve`); the tasks
themselves are data (`configs.tasks`).

Inside the library every task is the same shape: a `label` column of class indices (0 = a,
1 = b, 2 = tie) and probability columns `winner_model_a`, `winner_model_b` (+ `winner_tie` for
three classes) in oof.csv, val.csv, teacher and pseudo-label files. Only the doors that read
the competition's files (`frames.load_split`) and write its submission (`runs.submission`)
speak the task's own format. A run's task is detected from its data folder unless
`-p task NAME` says otherwise, and is recorded with the run (its config), so predict, blend,
bias, report and the kernels take it from there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..configs.tasks import AUTO, LMSYS_2024, TASKS, WINNER, Task, for_slug, get
from ..files.tables import DataError, read_csv

__all__ = ["AUTO", "LMSYS_2024", "TASKS", "WINNER", "Task", "detect", "for_slug", "get",
           "resolve", "to_task"]


def _header(path: Path) -> list[str]:
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(read_csv(path, nrows=0).columns)


def detect(data_dir: str | Path, default: Task = LMSYS_2024) -> Task:
    """The task of a data folder: from `sample_submission.csv`'s header, else from train's
    columns: a `winner` column means two classes (wsdm-2025), the winner_model_* columns three
    (lmsys-2024). A folder with neither (a test file alone) is `default`'s (at predict: the
    model's own task).

    Raises:
        DataError: a folder whose files fit no task, naming what was found.
    """
    data_dir = Path(data_dir)
    sample = data_dir / "sample_submission.csv"
    if sample.is_file():
        header = tuple(_header(sample))
        for task in TASKS.values():
            if header == task.submission_columns:
                return task
        raise DataError(f"{sample}: header {list(header)} is no known task's submission "
                        f"({'; '.join(str(list(t.submission_columns)) for t in TASKS.values())})")
    for ext in (".parquet", ".csv"):
        path = data_dir / f"train{ext}"
        if path.is_file():
            return TASKS["wsdm-2025"] if WINNER in _header(path) else LMSYS_2024
    return default  # nothing tells (a test file alone)


def resolve(name: str, data_dir: str | Path | None, default: Task = LMSYS_2024) -> Task:
    """`name`'s task, or with 'auto' the task `detect` finds in `data_dir` (else `default`).

    Raises:
        DataError: an unknown name, or a data folder that fits no task.
    """
    if name != AUTO:
        try:
            return get(name)
        except ValueError as err:
            raise DataError(str(err)) from None
    return detect(data_dir, default) if data_dir else default


def to_task(probs, task: Task):
    """A model's (n, k) probabilities as `task`'s classes: a three-class model scoring a
    two-class task drops the tie's mass and renormalises (what the 2nd place of the WSDM Cup
    did with its 2024 models before retraining them).

    Raises:
        DataError: a model with fewer classes than the task (a two-class model cannot say tie).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[1] == task.n_classes:
        return p
    if p.shape[1] < task.n_classes:
        raise DataError(f"a {p.shape[1]}-class model cannot score task {task.name} "
                        f"({task.n_classes} classes)")
    p = p[:, : task.n_classes]
    return p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
