"""Adaptive swap TTA (`tta: adaptive`): every row scored once, then only the least certain rows
scored again swapped, as many as `tta_fraction` of the rows and the time budget allow.

The first pass gives each row's margin between its two most probable classes
(`uncertainty.least_certain`); the rows with the smallest margins, least certain first, get the
swap pass while their tokens fit the time the budget grants it (`Budget.extra_seconds`: the time
left, less what the models still to come need). Those rows get the swap TTA mean
(`data.combine_swapped`); every other row keeps its first score. Both passes run over all the
devices (the shared queue keeps them busy). The WSDM Cup 2025 4th place re-scored the least
certain rows that fit the remaining time; the 34th place swapped only rows with
|p_A - p_B| < 0.25.

`SecondPass` says what happened: the rows asked for (`target_rows`), the rows that got the swap
pass, and why it stopped: "fraction" (the target reached), "time" (the budget cut it), or
"all rows".
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np

from .. import data
from .devices import parse_devices
from .engine import InferStats, predict_ids
from .uncertainty import least_certain

log = logging.getLogger("lmsys_pref.infer.adaptive")


@dataclasses.dataclass
class SecondPass:
    """What the swap pass of an adaptive run did."""

    fraction: float  # tta_fraction asked for
    target_rows: int  # rows of that fraction
    rows: np.ndarray  # positions that got the swap pass, least certain first
    stopped_by: str  # "fraction", "time" or "all rows"
    tokens: int  # tokens of the swap pass

    def to_dict(self, ids=None) -> dict:
        """predict.json's figures; `ids` (the frame's ids) name the rows instead of positions."""
        named = [str(i) for i in np.asarray(ids)[self.rows]] if ids is not None \
            else self.rows.tolist()
        return {"tta_fraction": self.fraction, "target_rows": self.target_rows,
                "second_pass_rows": len(self.rows), "stopped_by": self.stopped_by,
                "second_pass_tokens": self.tokens, "second_pass_ids": named}


def pick(first: np.ndarray, lengths: np.ndarray, fraction: float, tokens_allowed: float
         ) -> SecondPass:
    """The rows of the swap pass: the least certain `fraction` of the rows, cut to the first
    ones whose swapped tokens (`lengths`, per row) fit `tokens_allowed`."""
    wanted = least_certain(first, fraction)
    fit = int(np.searchsorted(np.cumsum(lengths[wanted]), tokens_allowed, side="right"))
    rows = wanted[:fit]
    stopped = ("time" if fit < len(wanted) else
               "all rows" if len(rows) == len(first) else "fraction")
    return SecondPass(fraction, len(wanted), rows, stopped, int(lengths[rows].sum()))


def _no_cache(tag: str) -> None:
    return None


def score(model, input_ids: list[list[int]], swapped_ids: list[list[int]], *, fraction: float,
          budget=None, devices="auto", cache_path: Callable[[str], Any] = _no_cache, **kwargs
          ) -> tuple[np.ndarray, InferStats]:
    """Score every row, then the least certain ones swapped (see the module doc).

    Args:
        model: a classifier or one replica per device (see `infer.predict_ids`).
        input_ids: the encoded rows.
        swapped_ids: the encoded swapped rows, one per row.
        fraction: the largest share of the rows that get the swap pass (`tta_fraction`).
        budget: an `infer.budget.Budget` watching this model (None = no time limit).
        devices: as in `infer.predict_ids`.
        cache_path: the cache file of a pass by its tag ("first", "adaptive"; `tta._cache`
            names them), or None for that pass (the default: no cache).
        **kwargs: passed to `infer.predict_ids` (pad_id, token_budget, objective, ...).

    Returns:
        (probs, InferStats of both passes with `adaptive` = the `SecondPass`).
    """
    devs, t0 = parse_devices(devices), time.perf_counter()
    first, stats = predict_ids(model, input_ids, devices=devs, cache_path=cache_path("first"),
                               return_stats=True, desc="first pass", **kwargs)
    allowed = budget.tokens_within(budget.extra_seconds()) if budget is not None else np.inf
    lengths = np.fromiter((len(r) for r in swapped_ids), np.int64, len(swapped_ids))
    second = pick(first, lengths, fraction, allowed)
    probs, parts = first.copy(), [stats]
    if len(second.rows):
        swapped, more = predict_ids(model, [swapped_ids[i] for i in second.rows], devices=devs,
                                    cache_path=cache_path("adaptive"), return_stats=True,
                                    desc="swap pass", **kwargs)
        probs[second.rows] = data.combine_swapped(first[second.rows], swapped)
        parts.append(more)
    log.info("adaptive TTA: swap pass on %d of %d rows (tta_fraction %.2f asks %d; stopped by "
             "%s)", len(second.rows), len(first), fraction, second.target_rows,
             second.stopped_by)
    out = InferStats.combine(parts, time.perf_counter() - t0)
    out.adaptive = second
    return probs, out
