"""Batches by token budget: longest rows first, each batch padded to its longest row.

A model that attends through `flex_attention` (Gemma-2's exact soft-capping kernel on GPUs
without flash-attn) is compiled by torch per batch shape: the block masks and the attention
kernel, each for the sliding and the global mask, guarded on rows, width, whether the batch has
padding and whether a dimension is 1. Length-sorted batches give a new shape nearly every batch:
dozens of compiles, then torch's recompile limit (8) and its unfused fallback, which
materialises every score matrix. `FLEX_SHAPES` bounds that: every batch gets one padding column
(one mask variant, never the unpadded one) and at least 2 rows and 129 columns (no dimension of
1: a lone row is scored twice, a narrow batch padded to two 128-blocks); `warm_order` makes each
worker's second batch differ from its first in both rows and width, so torch's automatic
dynamic shapes compile rows and width as symbols at once. A scoring run then compiles
2 x 2 x 2 = 8 graphs (static + dynamic; 2 masks; mask + kernel) whatever its length mix, at a
padding cost of about one column per row (tests/test_compile_count.py, BENCHMARKS.md).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

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


class Shapes(NamedTuple):
    """How a batch is shaped beyond its rows: padding columns after the longest row, and the
    fewest rows and columns it may have (a lone row is repeated, a narrow batch padded)."""

    pad_extra: int = 0
    min_rows: int = 1
    min_width: int = 0

    def of(self, lengths: np.ndarray) -> tuple[int, int]:
        """(rows, width) of the batch of rows with these `lengths`."""
        return (max(len(lengths), self.min_rows),
                max(int(lengths.max()) + self.pad_extra, self.min_width))


FLEX_BLOCK = 128  # flex_attention's mask block: a batch of <= 128 columns has 1-sized block dims
FLEX_SHAPES = Shapes(pad_extra=1, min_rows=2, min_width=FLEX_BLOCK + 1)


def padding_efficiency(lengths: Sequence[int], batches: Sequence[Sequence[int]],
                       shapes: Shapes = Shapes()) -> float:
    """Real tokens / computed tokens when each batch is padded to its longest row (and shaped
    by `shapes`)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    computed = sum(np.prod(shapes.of(lengths[np.asarray(b)])) for b in batches if len(b))
    return float(lengths.sum() / computed) if computed else 1.0


def compiles_per_shape(model) -> bool:
    """Whether `model` (or, under peft, its base) attends through `flex_attention`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return getattr(config, "_attn_implementation", None) == "flex_attention"


def shape_policy(model) -> Shapes:
    """`FLEX_SHAPES` under flex_attention (see the module doc), else batches as planned."""
    return FLEX_SHAPES if compiles_per_shape(model) else Shapes()


def warm_order(batches: list, lengths: Sequence[int], workers: int = 1,
               shapes: Shapes = FLEX_SHAPES) -> list:
    """`batches` reordered so that each worker's second batch differs from its first in rows
    and in width: the shortest such batch moves to just after the first `workers` batches.

    torch's second compile then treats both as dynamic; the rest keep their longest-first
    order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    out, rest = list(batches[:workers]), list(batches[workers:])
    for first in batches[:workers]:
        rows, width = shapes.of(lengths[first])
        pick = next((i for i in range(len(rest) - 1, -1, -1)
                     if all(a != b for a, b in zip(shapes.of(lengths[rest[i]]), (rows, width)))),
                    None)
        if pick is not None:
            out.append(rest.pop(pick))
    return out + rest


def collate(rows: Sequence[Sequence[int]], pad_id: int, device, shapes: Shapes = Shapes()
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` of a batch, on `device`, shaped by
    `shapes` (padding columns, fewest rows and columns: a lone row is repeated)."""
    rows = list(rows) + list(rows[:1]) * (shapes.min_rows - len(rows))
    _, width = shapes.of(np.array([len(r) for r in rows]))
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
