"""Training targets beyond one-hot labels: soft labels, teacher distillation, pair swap.

With `soft_labels` or `teachers` the Trainer's loss is `loss` (`DistillTrainer.compute_loss`):

    w_0 CE(target, student) + sum_i [w_2i-1 T^2 KL(teacher_i,T || student_T)
                                     + w_2i (1 - cos(student_T, teacher_i,T))]

the 1st place's `(CE + KL(qwen) + cos(qwen) + KL(llama) + cos(llama)) / 5` for any number of
teachers (`distill_weights`; default 1 / (1 + 2 n) each). `target` is the row's label as three
probabilities (one-hot or soft), CE a soft cross-entropy (MSE against it with `objective: mse`);
`X_T` is a distribution softened by the temperature T (`distill_temperature`). The student's
distribution is its softmax (`ce`) or its clipped, renormalised outputs (`mse`), as it scores.

Without either the model's own loss is used, exactly as before. `swap_augment` adds each row's
A/B-swapped copy (`data.augment_with_swap`; teacher rows through `data.swap`, a tie stays a tie);
'pair' keeps a row and its twin in the same batch (`PairDataset` + `PairCollator`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding, Trainer

from .. import data
from ..configs.parts import DistillSpec
from ..data import labels, teachers

TEACHER_KEY = "teacher_probs"  # a batch's (rows, teachers, 3) teacher probabilities
TWIN_KEY = "twin"  # a pair item's swapped twin


def training_rows(train_df: pd.DataFrame, spec: DistillSpec
                  ) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The rows a Trainer sees, their targets and extra per-row fields.

    Args:
        train_df: the training rows (teacher columns attached by `teachers.TeacherSet.attach`).
        spec: the run's targets (`cfg.distill`).

    Returns:
        rows (with their swapped copies after them under `swap_augment`), targets (class
        indices, or (n, 3) probabilities with `spec.custom_loss`) and {TEACHER_KEY: (n, k, 3)}
        when the run has teachers.
    """
    n_teachers = len(spec.teachers)
    teach = teachers.probabilities(train_df, n_teachers) if n_teachers else None
    rows = data.augment_with_swap(train_df) if spec.swap_augment else train_df
    if teach is not None and spec.swap_augment:
        teach = np.concatenate([teach, data.swap(teach)])  # each teacher row swapped with its row
    target = labels.targets(rows) if spec.custom_loss else rows["label"].to_numpy()
    return rows, target, {} if teach is None else {TEACHER_KEY: teach}


class PairDataset(torch.utils.data.Dataset):
    """Row i and its swapped twin (row i + n of a row dataset built from
    `data.augment_with_swap`) as one item: a shuffle or length grouping moves them together."""

    def __init__(self, rows: torch.utils.data.Dataset):
        self.rows, self.n = rows, len(rows) // 2

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {**self.rows[i], TWIN_KEY: self.rows[i + self.n]}


class PairCollator(DataCollatorWithPadding):
    """Pads a batch of pairs as 2 x batch_size rows: each row followed by its twin."""

    def __call__(self, features: list[dict]) -> dict:
        flat = []
        for f in features:
            flat += [{k: v for k, v in f.items() if k != TWIN_KEY}, f[TWIN_KEY]]
        return super().__call__(flat)


def dataset(rows_ds: torch.utils.data.Dataset, spec: DistillSpec) -> torch.utils.data.Dataset:
    """The training dataset: `rows_ds` as is, or as pairs with `swap_augment: pair`."""
    return PairDataset(rows_ds) if spec.swap_augment == "pair" else rows_ds


def collator(tokenizer, spec: DistillSpec) -> DataCollatorWithPadding:
    """The batch collator matching `dataset`."""
    return (PairCollator if spec.swap_augment == "pair" else DataCollatorWithPadding)(tokenizer)


def _log_student(logits: torch.Tensor, objective: str, temperature: float) -> torch.Tensor:
    """log of the student's distribution softened by `temperature`."""
    if objective == "ce":
        return F.log_softmax(logits / temperature, -1)
    p = logits.clamp(1e-3, 1.0)  # how an `mse` model's outputs become probabilities
    return F.log_softmax(torch.log(p / p.sum(-1, keepdim=True)) / temperature, -1)


def loss(logits: torch.Tensor, target: torch.Tensor, teacher_probs: torch.Tensor | None, *,
         objective: str = "ce", temperature: float = 1.0,
         weights: Sequence[float] = (1.0,)) -> torch.Tensor:
    """The distillation loss of one batch (see the module docstring).

    Args:
        logits: (n, 3) head outputs; target: (n, 3) label probabilities.
        teacher_probs: (n, k, 3) probabilities of k teachers, or None.
        weights: 1 + 2 k weights: CE, then KL and cosine per teacher.
    """
    logits, target = logits.float(), target.float()
    base = F.mse_loss(logits, target) if objective == "mse" else F.cross_entropy(logits, target)
    total = weights[0] * base
    if teacher_probs is None:
        return total
    log_p = _log_student(logits, objective, temperature)
    for i in range(teacher_probs.shape[1]):
        q = F.softmax(torch.log(teacher_probs[:, i].float().clamp_min(1e-12)) / temperature, -1)
        kl = F.kl_div(log_p, q, reduction="batchmean") * temperature ** 2
        cos = (1 - F.cosine_similarity(log_p.exp(), q, dim=-1)).mean()
        total = total + weights[1 + 2 * i] * kl + weights[2 + 2 * i] * cos
    return total


class DistillTrainer(Trainer):
    """The Trainer with `loss` as its loss; everything else (steps, accumulation, checkpoints,
    resuming) is the Trainer's. The loss is a per-batch mean: the Trainer divides it by the
    accumulation steps."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args, distill: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill = distill

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        target = inputs.pop("labels")
        teach = inputs.pop(TEACHER_KEY, None)
        outputs = model(**inputs)
        value = loss(outputs.logits, target, teach, **self.distill)
        return (value, outputs) if return_outputs else value


def trainer(spec: DistillSpec, **kwargs) -> Trainer:
    """The run's Trainer: `DistillTrainer` with `spec.custom_loss`, else the plain one."""
    if not spec.custom_loss:
        return Trainer(**kwargs)
    return DistillTrainer(distill={
        "objective": spec.objective, "temperature": spec.distill_temperature,
        "weights": teachers.loss_weights(spec.distill_weights, len(spec.teachers))}, **kwargs)
