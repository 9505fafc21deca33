"""The time budget of a scoring run: measure the throughput on the first batches, project the
whole run, log it, and stop at once when it cannot end within the limit.

The projection counts the work in tokens: every row's tokens x TTA passes x models (the folds a
k-fold run averages), at the real tokens per second measured after one warm-up batch, plus the
time already spent and one more start-up (model load, encoding) per model still to come. Tokens
rather than rows because the engine runs the longest rows first: the first batches' rows/s
understates the run's and would stop runs that fit; the log gives the rows/s too. Rows taken
from the score cache still count as work to do: a resumed run's projection errs long.

With a limit (`predict -p time_limit_h 9`) a projection beyond `SAFETY` x the limit raises
`TimeBudgetExceeded` from the batch that completed the measurement: one line saying how far
over the limit the run would go and what would fit (no TTA, a shorter `score_max_length`, one
merged model instead of k folds, 4-bit weights). The budget watches from outside the engine:
forward hooks on the model replicas see every batch as a device finishes it. Torch-free itself.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time

import numpy as np

log = logging.getLogger("lmsys_pref.infer.budget")
SAFETY = 0.95  # the projection must end within this share of the limit (it is an estimate)
WARMUP_BATCHES = 1  # kernel selection, allocator growth, lazy init: not measured
MEASURE_BATCHES = 8  # batches measured before projecting ...
MEASURE_SECONDS = 120.0  # ... or this long, whichever comes first
SHORTER_LENGTHS = (3072, 2560, 2048, 1536, 1024, 768, 512, 384, 256)
clock = time.perf_counter  # what a `Budget` reads the time from (tests fake a slow device)


class TimeBudgetExceeded(RuntimeError):
    """The projected run does not fit the time limit; the message says what would."""


@dataclasses.dataclass
class Plan:
    """The work of the whole run as the first model saw it."""

    lengths: np.ndarray  # tokens of each row of one pass
    passes: int  # 2 with swap TTA
    models: int  # folds scored one after the other
    max_length: int

    def tokens(self, max_length: int | None = None, passes=None, models=None) -> float:
        """Tokens of every pass of every model (rows cut to `max_length` when given)."""
        lengths = self.lengths if max_length is None else np.minimum(self.lengths, max_length)
        return float(lengths.sum()) * (passes or self.passes) * (models or self.models)


class Budget:
    """Throughput measurement and projection of one `predict` run (shared by its folds)."""

    def __init__(self, limit_h: float = 0.0, models: int = 1):
        self.limit_s = float(limit_h) * 3600
        self.models = models
        self.started = clock()
        self.plan: Plan | None = None
        self.projection: dict | None = None
        self.tokens_done, self.batches, self.models_done = 0, 0, 0
        self._measure_from = self._measure_tokens = self._first_watch = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def watch(self, replicas, lengths: np.ndarray, passes: int, max_length: int):
        """Watch the batches of one model's scoring (its replicas, one per device).

        Args:
            replicas: the modules the engine calls (a module or a list).
            lengths: tokens of each row of one pass.
            passes: TTA passes (2 with swap).
            max_length: the tokens per row the rows were cut to.
        """
        if self.plan is None:
            self.plan = Plan(np.asarray(lengths), passes, self.models, max_length)
            self._first_watch = clock()  # load and encoding of the first model end here
        mods = replicas if isinstance(replicas, (list, tuple)) else [replicas]
        unique = list({id(m): m for m in mods}.values())
        handles = [m.register_forward_hook(self._after_batch, with_kwargs=True) for m in unique]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self.models_done += 1

    def _after_batch(self, module, args, kwargs, output) -> None:
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        tokens = int(mask.sum()) if mask is not None else int(ids.numel())
        with self._lock:
            now = clock()
            self.tokens_done += tokens
            self.batches += 1
            if self.projection is not None or self.plan is None:
                return
            if self.batches <= WARMUP_BATCHES:
                self._measure_from, self._measure_tokens = now, 0
                return
            self._measure_tokens += tokens
            measured = self.batches - WARMUP_BATCHES
            if measured >= MEASURE_BATCHES or now - self._measure_from >= MEASURE_SECONDS:
                self.projection = self._project(now)
                log.info(self.describe())
                if self.limit_s and self.projection["seconds"] > SAFETY * self.limit_s:
                    raise TimeBudgetExceeded(self.describe() + "; " + self.advice())

    def _project(self, now: float) -> dict:
        """The run's projected wall time at `now` and what it rests on."""
        plan = self.plan
        tps = self._measure_tokens / max(now - self._measure_from, 1e-9)
        startup = max(self._first_watch - self.started, 0.0)
        models_left = max(plan.models - self.models_done - 1, 0)
        remaining = max(plan.tokens() - self.tokens_done, 0.0)
        rows = len(plan.lengths)
        return {"seconds": (now - self.started) + remaining / tps + models_left * startup,
                "tokens_per_s": tps, "rows_per_s": tps / max(plan.lengths.mean(), 1.0),
                "startup_seconds": startup, "measured_batches": self.batches - WARMUP_BATCHES,
                "rows": rows, "passes": plan.passes, "models": plan.models,
                "tokens": plan.tokens()}

    def _fresh(self, tokens: float, models: int) -> float:
        """Seconds of a new run of `tokens` over `models` models at the measured speed."""
        p = self.projection
        return models * p["startup_seconds"] + tokens / p["tokens_per_s"]

    def options(self) -> list[tuple[str, float | None]]:
        """(change, projected seconds of a run with it; None = not projected) per remedy."""
        plan, out = self.plan, []
        if plan.passes > 1:
            out.append(("-p tta none", self._fresh(plan.tokens(passes=1), plan.models)))
        if plan.models > 1:
            out.append((f"one model from the {plan.models} folds with lmsys-pref merge-folds",
                        self._fresh(plan.tokens(models=1), 1)))
        shorter = [n for n in SHORTER_LENGTHS if n < plan.max_length]
        fits = [n for n in shorter if self._fresh(plan.tokens(n), plan.models)
                <= SAFETY * self.limit_s]
        if shorter:
            n = fits[0] if fits else shorter[-1]
            out.append((f"-p max_length {n}, a shorter score_max_length",
                        self._fresh(plan.tokens(n), plan.models)))
        if plan.passes > 1 and plan.models > 1:
            out.append(("-p tta none and merge-folds", self._fresh(plan.tokens(passes=1,
                                                                               models=1), 1)))
        out.append(("-p quantization 4bit: a quarter of the weights' memory, so one GPU holds "
                    "a larger model (its speed is not projected)", None))
        return out

    def describe(self) -> str:
        """One line: the work, the measured speed, the projected time and the limit."""
        p = self.projection
        text = (f"time budget: {p['rows']} rows x {p['passes']} TTA pass(es) x {p['models']} "
                f"model(s) = {p['tokens']:,.0f} tokens at {p['tokens_per_s']:,.0f} tokens/s "
                f"({p['rows_per_s']:,.2f} rows/s) after {p['measured_batches']} batches: "
                f"projected {_hours(p['seconds'])}")
        if not self.limit_s:
            return text + " (no time_limit_h)"
        over = p["seconds"] - self.limit_s
        return text + (f", {_hours(abs(over))} {'over' if over > 0 else 'under'} the limit of "
                       f"{_hours(self.limit_s)} (it stops above {SAFETY:.0%} of it)")

    def advice(self) -> str:
        """What would fit the limit, each with its projected time."""
        opts = self.options()
        fit = [(o, s) for o, s in opts if s is not None and s <= SAFETY * self.limit_s]
        shown = fit or [(o, s) for o, s in opts if s is not None]
        head = "would fit: " if fit else "none of these fits alone: "
        listed = [f"{o} ({_hours(s)})" for o, s in shown] + [o for o, s in opts if s is None]
        return head + "; ".join(listed)

    def summary(self) -> dict:
        """The budget's figures for predict.json."""
        p = self.projection or {}
        return {"time_limit_h": self.limit_s / 3600 or None,
                "projected_h": p["seconds"] / 3600 if p else None,
                "measured_tokens_per_s": p.get("tokens_per_s"),
                "measured_rows_per_s": p.get("rows_per_s")}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"
