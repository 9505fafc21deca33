"""The preference tasks as data: one `Task` per competition format (files, labels, classes,
metric, submission, ids, kernel limit), chosen by `-p task NAME` or detected from a data folder
(`data.task.detect`). Pure data, no file is read here, so every layer can name a task.

| | `lmsys-2024` / `llm-classification-finetuning` | `wsdm-2025` |
|---|---|---|
| files | train.csv, test.csv; turns as JSON lists | train.parquet, test.parquet; plain strings |
| target | winner_model_a/_b/_tie one-hot | `winner`: model_a or model_b (no ties) |
| ids | integers | text (hash-like in train, integers in test) |
| submission | id + three probabilities | id + winner (model_a/model_b) |
| metric | log loss | accuracy |
| kernel limit | 9 h | 12 h |
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..files.tables import LABEL_COLS

WINNER = "winner"  # the one label column of a two-class task
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Task:
    """One competition's format and rules."""

    name: str
    """The preset's name (`-p task NAME`)."""
    slugs: tuple[str, ...]
    """Kaggle competition slugs with this format (the kernels' `competition_sources`)."""
    n_classes: int
    """3 (a, b, tie) or 2 (a, b)."""
    turns: str
    """'json' (each text cell a JSON list of turns) or 'plain' (one string, one turn)."""
    winner_values: tuple[str, ...] = ()
    """Values of the `winner` column, class by class ('' when the labels are one-hot columns)."""
    submission: str = "probabilities"
    """'probabilities' (id + one column per class) or 'labels' (id + winner)."""
    metric: str = "log_loss"
    """The competition's score: 'log_loss' (lower is better) or 'accuracy' (higher)."""
    integer_ids: bool = True
    """Ids must spell integers (a shifted column is caught); False: any unique text."""
    kernel_hours: float = 9.0
    """The competition's notebook time limit."""
    data_format: str = "csv"
    """The file format the competition ships (either is read)."""

    @property
    def prob_columns(self) -> tuple[str, ...]:
        """The probability columns of oof/val/teacher files and of a probability submission."""
        return LABEL_COLS[: self.n_classes]

    @property
    def submission_columns(self) -> tuple[str, ...]:
        """The header of the competition's submission.csv."""
        return ("id", WINNER) if self.submission == "labels" else ("id",) + self.prob_columns

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


LMSYS_2024 = Task("lmsys-2024", ("lmsys-chatbot-arena",), 3, "json")
TASKS = {t.name: t for t in (
    LMSYS_2024,
    dataclasses.replace(LMSYS_2024, name="llm-classification-finetuning",
                        slugs=("llm-classification-finetuning",)),
    Task("wsdm-2025", ("wsdm-cup-multilingual-chatbot-arena",), 2, "plain",
         winner_values=("model_a", "model_b"), submission="labels", metric="accuracy",
         integer_ids=False, kernel_hours=12.0, data_format="parquet"),
)}
"""The presets by name; `lmsys-2024` and `llm-classification-finetuning` share one format."""
NAMES = (AUTO, *TASKS)
TASK_NAMES = Literal[NAMES]  # the `task` field's choices


def get(name: str) -> Task:
    """The task preset `name` (not 'auto': `data.task.resolve` detects that one)."""
    if name not in TASKS:
        raise ValueError(f"task {name!r} is unknown here; the tasks are {', '.join(TASKS)}"
                         + (" ('auto' is resolved from the data folder first)"
                            if name == AUTO else ""))
    return TASKS[name]


def n_classes(name: str) -> int:
    """The classes of task `name`; a task still 'auto' (a config used straight, before a run
    resolved it from its data folder, or saved before tasks were recorded) is the 2024 task's
    three."""
    return LMSYS_2024.n_classes if name == AUTO else get(name).n_classes


def for_slug(slug: str) -> Task:
    """The task of a Kaggle competition slug."""
    found = [t for t in TASKS.values() if slug in t.slugs]
    if not found:
        known = sorted(s for t in TASKS.values() for s in t.slugs)
        raise ValueError(f"competition {slug!r} is none this project scores; known: {known}")
    return found[0]
