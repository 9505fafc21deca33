"""XGBoost's share of the data levers: what each booster of a run trains on when its rows or
targets differ by fold (per-fold `extra_train` files, `teachers`). Torch-free.

A booster fits weighted copies of its rows (`booster.weighted_matrix`), so any target that is a
probability row trains as it is. With teachers a row's target is the mixture
w_0 * label + sum_i w_i * teacher_i (`XGBConfig.mixture_weights`, the teachers' `weights`):
the 1st place's distillation, as far as trees can take it (no temperature: the probabilities
are used as they are). Fold k's boosters read fold k's files; the final booster, fitted on
every row, reads the folds' mean (`TrainingData.extra_rows(None)`, `TeacherSet.probs_of`).
Runs without such levers get no `FitRows`: their matrices are built exactly as before.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from ..data import labels, teachers


@dataclasses.dataclass
class FitRows:
    """What one booster trains on beyond `Features`' own rows and targets."""

    extra: np.ndarray
    """Positions (in `Features`) of the extra rows this booster trains on."""
    targets: np.ndarray
    """(rows of `Features`, 3) targets; rows this booster does not train on keep Features'."""


def mixture(frame: pd.DataFrame, teacher_set: teachers.TeacherSet | None) -> np.ndarray:
    """(n, 3) targets of a training frame: its labels, mixed with the teachers' probabilities
    (`teacher_set.weights`: [label, teacher_1, ...], summing to 1) when there are teachers."""
    target = labels.targets(frame)
    if teacher_set is None:
        return target
    w = np.asarray(teacher_set.weights, dtype=np.float64)
    probs = teachers.probabilities(frame, len(teacher_set.specs))  # (n, teachers, 3)
    return w[0] * target + np.einsum("t,ntc->nc", w[1:], probs)


def fit_rows(data: labels.TrainingData, feats, positions: np.ndarray, fold: int | None
             ) -> FitRows | None:
    """The extra rows and targets of the booster of `fold` (None: the final fit) trained on
    `positions` of the train rows; None when the run has no per-fold files and no teachers.

    `feats` is the run's `booster.Features`, built over the train rows and
    `data.extra_rows(None)` (every extra id once).
    """
    if data.teacher_set is None and data.extra_folds is None:
        return None
    frame = data.training_rows(positions, fold)
    extra_ids = frame["id"].astype(str).to_numpy()[len(positions):]
    where = pd.Index(feats.ids[feats.n:]).get_indexer(extra_ids)
    if (where < 0).any():  # every fold's extra ids are in data.extra_rows(None)
        raise ValueError(f"extra row id(s) {extra_ids[where < 0][:5].tolist()} of fold {fold} "
                         "are not in the run's features")
    extra = feats.n + where
    targets = feats.targets.copy()
    targets[np.concatenate([positions, extra])] = mixture(frame, data.teacher_set)
    return FitRows(extra, targets)


def plan(data: labels.TrainingData, feats, folds: Sequence[tuple[np.ndarray, np.ndarray]]
         ) -> list[FitRows | None]:
    """`fit_rows` of each fold's booster, then of the final booster (every train row)."""
    return [fit_rows(data, feats, tr, k) for k, (tr, _) in enumerate(folds)] + \
        [fit_rows(data, feats, np.arange(feats.n), None)]
