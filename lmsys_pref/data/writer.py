"""Writing rows back as a task's own data folder: the bundled samples (`data/make_sample.py`),
the planted task, WSDM-shaped folders built from 2024 rows (tests, benchmarks).

Rows arrive in the library's shape (`frames.load_split`: turn lists, a `label` column) and
leave in the task's (`configs.tasks`): JSON turn lists and one-hot winner columns in CSV for the
2024 format; plain strings (the turns of a cell joined by a blank line), a `winner` column, a
`language` column and parquet for the WSDM Cup's. A two-class task has no ties: tie rows are
left out, and the count is returned.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..configs.tasks import WINNER, Task
from ..files.atomic import atomic_path
from ..files.tables import TEXT_COLS

TURN_JOIN = "\n\n"  # how a plain-string task's cell holds several turns
# A text's dominant script -> a language name (the WSDM Cup's `language` column holds names).
SCRIPTS = (("Chinese", r"[\u4e00-\u9fff]"), ("Japanese", r"[\u3040-\u30ff]"),
           ("Korean", r"[\uac00-\ud7af]"), ("Russian", r"[\u0400-\u04ff]"),
           ("Arabic", r"[\u0600-\u06ff]"), ("Hindi", r"[\u0900-\u097f]"))


def guess_language(text: str) -> str:
    """The language of a text by its script (a stand-in for the WSDM Cup's `language` column
    where the rows have none): the non-Latin script with the most letters, else English."""
    counts = {name: len(re.findall(pattern, text)) for name, pattern in SCRIPTS}
    name, n = max(counts.items(), key=lambda kv: kv[1])
    return name if n >= 3 else "English"


def hashed_ids(ids: pd.Series) -> pd.Series:
    """Hash-like text ids (the WSDM Cup's train ids look so), stable for the same id."""
    return ids.astype(str).map(lambda i: hashlib.sha1(i.encode()).hexdigest()[:24])


def to_task_frame(df: pd.DataFrame, task: Task, labelled: bool) -> tuple[pd.DataFrame, int]:
    """Rows in the library's shape as `task`'s columns; returns (frame, tie rows left out)."""
    ties = (df["label"] == 2).to_numpy() if labelled and task.n_classes < 3 else \
        np.zeros(len(df), bool)
    rows = df[~ties].reset_index(drop=True)
    out = pd.DataFrame({"id": rows["id"].astype(str)})
    for col in ("model_a", "model_b"):
        if col in rows.columns and labelled:
            out[col] = rows[col]
    for col in TEXT_COLS:
        out[col] = [TURN_JOIN.join(t) if task.turns == "plain" else json.dumps(list(t))
                    for t in rows[col]]
    if labelled and task.winner_values:
        out[WINNER] = np.asarray(task.winner_values, dtype=object)[rows["label"].to_numpy()]
    elif labelled:
        out = out.join(pd.DataFrame(np.eye(task.n_classes, dtype=int)[rows["label"]],
                                    columns=list(task.prob_columns)))
    if task.name == "wsdm-2025" and labelled:  # its test file has `scored` instead
        out["language"] = rows["language"] if "language" in rows.columns else [
            guess_language(" ".join(p)) for p in rows["prompt"]]
    elif task.name == "wsdm-2025":
        out["scored"] = True
    return out, int(ties.sum())


def write_split(df: pd.DataFrame, path: str | Path) -> Path:
    """A task frame as CSV or parquet (by the suffix), whole or not at all."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


def write_folder(train: pd.DataFrame, test: pd.DataFrame | None, out_dir: str | Path,
                 task: Task, hash_train_ids: bool = False) -> dict:
    """train, test and sample_submission in `task`'s format under `out_dir`.

    Args:
        train, test: rows in the library's shape (test may carry labels: they are dropped).
        out_dir: the folder to write.
        task: the format.
        hash_train_ids: give train rows hash-like text ids (the WSDM Cup's), test rows keep
            theirs (integers there).

    Returns:
        What was written: file paths, row counts and the tie rows left out.
    """
    out, ext = Path(out_dir), "." + task.data_format
    frame, ties = to_task_frame(train, task, labelled=True)
    if hash_train_ids:
        frame["id"] = hashed_ids(frame["id"])
    done = {"train": str(write_split(frame, out / f"train{ext}")), "train_rows": len(frame),
            "ties_dropped": ties}
    if test is not None:
        tframe, _ = to_task_frame(test, task, labelled=False)
        if not task.integer_ids and tframe["id"].str.fullmatch(r"\d+").all():
            tframe["id"] = tframe["id"].astype(np.int64)  # the WSDM Cup's test ids are integers
        done["test"] = str(write_split(tframe, out / f"test{ext}"))
        sample = tframe[["id"]].assign(**(
            {WINNER: task.winner_values[0]} if task.submission == "labels"
            else {c: 1 / task.n_classes for c in task.prob_columns}))
        write_split(sample, out / "sample_submission.csv")
        done["test_rows"] = len(tframe)
    return done
