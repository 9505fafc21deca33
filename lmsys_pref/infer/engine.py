"""The inference engine: sorted token-budget batches scored by one thread per device.

Rows are sorted longest first and cut into batches whose padded size (rows x longest row) stays
within a token budget, so padding is small and big batches of short rows keep a device busy.
Each device holds one model replica and runs one thread; the threads pull batches from one
shared queue, so the devices finish together (longest first = the big items go early). CUDA
kernels release the GIL, so threads suffice; on CPU two workers share the cores.

Rows are right-padded: a causal model's real tokens never see the padding and keep their
positions, so a row's score does not depend on the batch it lands in (within fp rounding).

The stats of a call (`InferStats`) come back with `return_stats=True`: rows, tokens (real
tokens scored), computed_tokens (padded tokens), padding_efficiency = tokens / computed_tokens,
seconds, tokens_per_s, batches, oom_retries, cached_rows (rows taken from the cache), devices
(and `adaptive`, the second pass of adaptive TTA).
Nothing is kept between calls: two runs in one process never see each other's figures.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..model.heads import to_probs
from . import scorecache
from .batching import (  # noqa: F401 (public here too)
    Shapes,
    collate,
    padding_efficiency,
    plan_batches,
    shape_policy,
    warm_order,
)
from .devices import parse_devices, replicate

log = logging.getLogger("lmsys_pref.infer.engine")
OOM_ERRORS = (getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError,)


class ScoringStopped(RuntimeError):
    """The run was stopped from outside before every row was scored."""


@dataclasses.dataclass
class InferStats:
    """What one scoring call did; `padding_efficiency` = tokens / computed_tokens."""

    rows: int = 0
    tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0
    batches: int = 0
    oom_retries: int = 0
    cached_rows: int = 0
    devices: list = dataclasses.field(default_factory=list)
    adaptive: object = None  # adaptive.SecondPass of an adaptive TTA run

    @property
    def padding_efficiency(self) -> float:
        return self.tokens / self.computed_tokens if self.computed_tokens else 1.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_dict(self, ids=None) -> dict:
        """The figures as JSON-able values; an adaptive run's second pass names its rows by
        `ids` (the scored frame's ids) when given, else by position."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["devices"] = list(self.devices)
        if self.adaptive is None:
            del out["adaptive"]
        else:
            out["adaptive"] = self.adaptive.to_dict(ids)
        return out | {"padding_efficiency": self.padding_efficiency,
                      "tokens_per_s": self.tokens_per_s}

    @classmethod
    def combine(cls, parts: Sequence["InferStats"], seconds: float) -> "InferStats":
        """Several passes (e.g. TTA) as one: counts add up, `seconds` is the wall time."""
        out = cls(seconds=seconds)
        for p in parts:
            for f in ("rows", "tokens", "computed_tokens", "batches", "oom_retries", "cached_rows"):
                setattr(out, f, getattr(out, f) + getattr(p, f))
            out.devices += p.devices  # one entry per worker thread
        return out


def _forward_params(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return set()


def _cache_off(model) -> dict:
    """`{"use_cache": False}` when the model (or, under peft, its base model) takes it.

    A peft model's forward takes `**kwargs`, so its own signature hides `use_cache`; without the
    flag a decoder builds a KV cache for every batch (about 100 KB per token on Gemma-2-2B)
    that nothing reads, and the out-of-memory back-off shrinks batches for nothing.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"use_cache": False} if "use_cache" in _forward_params(base) else {}


def run_model(model, ids: torch.Tensor, mask: torch.Tensor):
    """The model's raw output for one batch, without gradients and without a KV cache."""
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, **_cache_off(model))


def _forward(model, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Logits (rows, labels) of one batch as float32 numpy."""
    out = run_model(model, ids, mask)
    logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, tuple) else out)
    return logits.float().cpu().numpy()


class _Run:
    """Shared state of one `predict_ids` call: queue, results, progress, cache, first error."""

    def __init__(self, input_ids, lengths, pad_id, token_budget, logits, done, progress,
                 cache_file, stop=None, shapes=None):
        self.input_ids, self.lengths, self.budget = input_ids, lengths, token_budget
        self.pad_id = pad_id
        self.shapes = shapes or Shapes()  # batching.shape_policy of the model
        self.logits, self.done, self.cache_file = logits, done, cache_file
        self.work: queue.Queue = queue.Queue()
        self.stop = stop if stop is not None else threading.Event()
        self.lock = threading.Lock()
        self.stats = InferStats(rows=len(input_ids), cached_rows=int(done.sum()))
        self.bar = progress

    def record(self, rows: np.ndarray, logits: np.ndarray, computed: int) -> None:
        with self.lock:
            if self.logits is None:  # the label count is known from the first batch
                self.logits = np.full((len(self.done), logits.shape[1]), np.nan, np.float32)
            self.logits[rows] = logits
            self.done[rows] = True
            self.stats.tokens += int(self.lengths[rows].sum())
            self.stats.computed_tokens += computed
            self.stats.batches += 1
            if self.bar is not None:
                self.bar.update(int(self.lengths[rows].sum()))
                self.bar.set_postfix(rows=f"{int(self.done.sum())}/{len(self.done)}", refresh=False)
            if self.cache_file is not None:
                self.cache_file.maybe_save(self.logits, self.done)


def _score_batch(run: _Run, model, device, rows: np.ndarray, budget: list[int]) -> None:
    """Score `rows` on one device, halving this worker's budget on CUDA out-of-memory."""
    pending = [rows]
    while pending and not run.stop.is_set():
        chunk = pending.pop(0)
        width = int(run.lengths[chunk].max())
        if len(chunk) > 1 and len(chunk) * width > budget[0]:
            pending[:0] = [chunk[b] for b in plan_batches(run.lengths[chunk], budget[0])]
            continue
        try:
            ids, mask = collate([run.input_ids[i] for i in chunk], run.pad_id, device,
                                run.shapes)
            logits = _forward(model, ids, mask)[:len(chunk)]
        except OOM_ERRORS as err:
            del err  # drop the traceback's reference to the batch tensors before freeing
            if len(chunk) == 1:
                raise RuntimeError(f"{device}: out of memory on a single row of {width} tokens; "
                                   "lower max_length or use a larger device") from None
            budget[0] = max(width, budget[0] // 2)
            with run.lock:
                run.stats.oom_retries += 1
            log.warning("%s: out of memory on %d rows x %d tokens; token budget halved to %d",
                        device, len(chunk), width, budget[0])
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            pending.insert(0, chunk)
            continue
        run.record(chunk, logits, ids.numel())


def _worker(run: _Run, model, device, threads: int | None = None) -> None:
    """One device's loop: take the next batch from the shared queue until it is empty.

    `threads`: intra-op threads of this worker (CPU workers split the cores between them;
    more threads than cores makes OpenMP spin and can run 10x slower). A CUDA worker makes its
    device the thread's current one before its first batch.
    """
    budget = [run.budget]  # this worker's budget; shrinks after an out-of-memory error
    if threads:
        torch.set_num_threads(threads)  # predict_ids restores the setting afterwards
    if torch.device(device).type == "cuda":
        # the current device is per thread and starts at cuda:0: bitsandbytes launches its
        # kernels (and allocates their buffers) there, so a replica on cuda:1 would fail
        torch.cuda.set_device(device)
    try:
        while not run.stop.is_set():
            try:
                rows = run.work.get_nowait()
            except queue.Empty:
                return
            _score_batch(run, model, device, rows, budget)
    except BaseException:
        run.stop.set()  # the other workers stop at their next batch
        raise


def cpu_threads(devices: Sequence[torch.device]) -> int | None:
    """Intra-op threads per CPU worker: the cores split between them (None = one worker)."""
    n_cpu = sum(d.type == "cpu" for d in devices)
    return max(1, torch.get_num_threads() // n_cpu) if n_cpu > 1 else None


def predict_ids(model, input_ids: list[list[int]], *, pad_id: int, token_budget: int = 16384,
                devices: str | list = "auto", objective: str = "ce", progress: bool = True,
                cache_path: str | Path | None = None, cache_key: str = "",
                return_stats: bool = False, stop_event: threading.Event | None = None,
                desc: str = "scoring"):
    """Score token-id rows with a sequence classifier on one or more devices.

    Args:
        model: a torch classifier (`model(input_ids=, attention_mask=)` gives logits or an
            object with `.logits`), or a list of replicas, one per entry of `devices`.
        input_ids: one list of token ids per row (already truncated).
        pad_id: the padding id; must equal `model.config.pad_token_id` for HF classifiers,
            which pool the last non-pad token.
        token_budget: padded tokens (rows x longest row) per batch.
        devices: "auto" (all visible GPUs, else CPU), "cpu", "cuda:0,cuda:1", "cpu,cpu", a list.
        objective: "ce" (softmax) or "mse" (clip and renormalise).
        progress: show a tqdm bar over tokens (rows done, tokens/s, ETA).
        cache_path: .npz file of partial results, saved while scoring; a rerun on the same
            rows (same `cache_key`) scores only what is missing.
        cache_key: extra text that must match for the cache to be used (e.g. model folder).
        return_stats: return `(probs, InferStats)` instead of `probs`.
        stop_event: set by a failing worker; share one between concurrent calls (TTA passes on
            separate devices) so that a failure stops them all.
        desc: label of the progress bar.

    Returns:
        (n, 3) float64 probabilities in the input order (and the stats when asked).

    Raises:
        The first error of any worker; the other workers stop at their next batch.
    """
    from tqdm.auto import tqdm

    devs = parse_devices(devices)
    replicas = replicate(model, devs)
    lengths = np.fromiter((len(r) for r in input_ids), dtype=np.int64, count=len(input_ids))
    if len(input_ids) and lengths.min() == 0:
        raise ValueError(f"row {int(lengths.argmin())} has no tokens")
    store = scorecache.open_cache(cache_path, input_ids, f"{objective}|{cache_key}")
    logits, done = store.load() if store else (None, np.zeros(len(input_ids), bool))
    t0 = time.perf_counter()
    bar = tqdm(total=int(lengths[~done].sum()), unit="tok", unit_scale=True, desc=desc,
               disable=not progress, smoothing=0.1)
    shapes = shape_policy(replicas[0])
    run = _Run(input_ids, lengths, pad_id, token_budget, logits, done, bar, store, stop_event,
               shapes)
    todo = np.flatnonzero(~done)
    plan = plan_batches(lengths[todo], token_budget)
    if shapes != Shapes():  # compiled per shape: the second compile a dynamic one (batching)
        plan = warm_order(plan, lengths[todo], len(devs), shapes)
    for b in plan:
        run.work.put(todo[b])
    threads, previous = cpu_threads(devs), torch.get_num_threads()
    try:
        with ThreadPoolExecutor(len(devs), thread_name_prefix="lmsys-infer") as pool:
            futures = [pool.submit(_worker, run, m, d, threads if d.type == "cpu" else None)
                       for m, d in zip(replicas, devs)]
            for fut, dev in zip(futures, devs):
                err = fut.exception()
                if err is not None:
                    if hasattr(err, "add_note"):  # Python >= 3.11
                        err.add_note(f"lmsys_pref.infer.engine: the worker on {dev} failed; "
                                     "run stopped")
                    raise err
        if not run.done.all():  # stopped from outside (e.g. the other TTA pass failed)
            raise ScoringStopped(f"scoring stopped with {int((~run.done).sum())} rows unscored")
    finally:
        if threads:  # a worker's setting outlives its thread: put the process's back
            torch.set_num_threads(previous)
        bar.close()
        if store is not None:
            store.save(run.logits, run.done)
    run.stats.seconds = time.perf_counter() - t0
    run.stats.devices = [str(d) for d in devs]
    probs = to_probs(run.logits, objective) if len(input_ids) else np.zeros((0, 3))
    return (probs, run.stats) if return_stats else probs
