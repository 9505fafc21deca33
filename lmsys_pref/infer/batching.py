"""Batches by token budget: longest rows first, each batch padded to its longest row."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[np.ndarray]:
    """Row indices cut into batches, longest rows first, each within `token_budget` padded tokens.

    A row longer than the budget gets a batch of its own (it cannot be split).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        size = max(1, int(token_budget) // max(int(lengths[order[start]]), 1))
        batches.append(order[start:start + size])
        start += size
    return batches


def padding_efficiency(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Real tokens / computed tokens when each batch is padded to its longest row."""
    lengths = np.asarray(lengths, dtype=np.int64)
    computed = sum(len(b) * int(lengths[np.asarray(b)].max()) for b in batches if len(b))
    return float(lengths.sum() / computed) if computed else 1.0


def collate(rows: Sequence[Sequence[int]], pad_id: int, device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` of a batch, on `device`."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
