"""Swap test-time augmentation: score each row and its A/B swap, map back, average.

Modes:
- "none": one pass.
- "swap": the rows and their swaps are scored as one job (2n rows) over all devices, so the
  shared queue keeps every device busy and both halves sort together (better padding).
- "swap_device": the 1st-place layout. The original pass runs on the even-numbered devices and
  the swapped pass on the odd-numbered ones, concurrently (with "cuda:0,cuda:1": originals on
  GPU 0, swaps on GPU 1). With one device it falls back to "swap".
- "adaptive": every row once, then the swap pass only on the least certain rows, as many as
  `fraction` of them and the time budget allow (`infer.adaptive`).

With TTA on, scoring a swapped test set gives exactly the swapped predictions (up to fp): the
combination `(p + swap(p_swapped)) / 2` is symmetric by construction.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from .. import data
from ..configs.predict import DEFAULT_TTA_FRACTION
from . import adaptive
from .devices import parse_devices, replicate
from .engine import InferStats, ScoringStopped, predict_ids

log = logging.getLogger("lmsys_pref.infer.tta")


def _cache(path: str | Path | None, tag: str) -> Path | None:
    return None if path is None else Path(path).with_name(f"{Path(path).stem}.{tag}.npz")


def score(model, input_ids: list[list[int]], swapped_ids: list[list[int]] | None = None, *,
          mode: str = "swap", devices="auto", cache_path=None,
          fraction: float = DEFAULT_TTA_FRACTION, budget=None, **kwargs):
    """Score rows with swap TTA through `infer.predict_ids`.

    Args:
        model: a classifier or one replica per device (see `infer.predict_ids`).
        input_ids: the encoded rows.
        swapped_ids: the encoded swapped rows (`prompt.encode(data.swap(df), ...)`); needed
            unless `mode` is "none".
        mode: "none", "swap", "swap_device" or "adaptive" (see the module doc).
        devices: as in `infer.predict_ids`.
        cache_path: base name of the cache file(s); each pass layout gets its own file.
        fraction: "adaptive": the largest share of the rows that get the swap pass.
        budget: "adaptive": the `infer.budget.Budget` that grants the swap pass its time.
        **kwargs: passed to `infer.predict_ids` (pad_id, token_budget, objective, progress, ...).

    Returns:
        (probs (n, 3), InferStats of all passes together).
    """
    mode = data.check_tta(mode)
    devs = parse_devices(devices)
    n = len(input_ids)
    if mode != "none" and (swapped_ids is None or len(swapped_ids) != n):
        raise ValueError(f"tta {mode!r} needs the {n} swapped rows")
    if mode == "swap_device" and len(devs) < 2:
        log.info("tta 'swap_device' with one device (%s): scoring both passes there", devs[0])
        mode = "swap"
    if mode == "adaptive":
        return adaptive.score(model, input_ids, swapped_ids, fraction=fraction, budget=budget,
                              devices=devs, cache_path=lambda tag: _cache(cache_path, tag),
                              **kwargs)
    if mode == "none":
        return predict_ids(model, input_ids, devices=devs, cache_path=_cache(cache_path, "none"),
                           return_stats=True, **kwargs)
    if mode == "swap":
        p, stats = predict_ids(model, list(input_ids) + list(swapped_ids), devices=devs,
                               cache_path=_cache(cache_path, "swap"), return_stats=True, **kwargs)
        return data.combine_swapped(p[:n], p[n:]), stats
    replicas = replicate(model, devs)
    t0, stop = time.perf_counter(), threading.Event()  # one failing pass stops the other
    with ThreadPoolExecutor(2, thread_name_prefix="lmsys-tta") as pool:
        jobs = [pool.submit(predict_ids, replicas[k::2], rows, devices=devs[k::2],
                            cache_path=_cache(cache_path, f"pass{k}"), return_stats=True,
                            stop_event=stop, desc=("original", "swapped")[k], **kwargs)
                for k, rows in enumerate((input_ids, swapped_ids))]
        wait(jobs)  # a failing worker sets `stop`: the other pass ends at its next batch
        errors = [j.exception() for j in jobs if j.exception() is not None]
        errors.sort(key=lambda e: isinstance(e, ScoringStopped))  # the cause, not the echo
        if errors:
            raise errors[0]
        (p, s0), (p_sw, s1) = [j.result() for j in jobs]
    return data.combine_swapped(p, p_sw), InferStats.combine([s0, s1], time.perf_counter() - t0)
