"""The time budget of a scoring run: measure the throughput on warm batches, project the whole
run, log it, stop at once when it cannot end within the limit, and tell optional work (the
adaptive swap pass, a cascade's later stages) how much time it may take.

The projection counts tokens: every row's tokens x TTA passes x models (the folds a k-fold run
averages) at the warm batches' tokens/s, plus the time spent and one more start-up (load,
encoding) per model to come. Tokens, not rows: the engine runs the longest rows first, so the
first batches' rows/s would stop runs that fit (the log gives rows/s too). Cached rows count
as work to do: a resumed run's projection errs long.

Warm batches only: each device thread's first batch (`WARMUP_BATCHES`; 2 for a model compiled
per batch shape, whose second batch compiles the dynamic graph) pays kernel selection, lazy
init or compiles, and a second device starts cold, so those are never measured. A thread's time
is the span between its own batch ends; the run's speed is their pooled tokens/s times the
devices working at once. A run is projected after `MEASURE_BATCHES` warm batches or
`MEASURE_SECONDS`, or at the end of each model's scoring when shorter; one with no warm batch
(Kaggle's 3-row visible test on two devices) says it is too short to project (log,
predict.json).

With a limit (`predict -p time_limit_h 9`) a projection of the required work beyond `SAFETY` x
the limit raises `TimeBudgetExceeded`: one line saying how far over the run would go and what
would fit (no TTA, a shorter `score_max_length`, merged folds, 4-bit). Optional work (the
adaptive swap pass, `optional_passes`) is projected but never stops a run: it shrinks to fit
(`extra_seconds`). Forward hooks on the replicas see every batch as a device finishes it.
Torch-free itself.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time

import numpy as np

log = logging.getLogger("lmsys_pref.infer.budget")
SAFETY = 0.95  # the projection must end within this share of the limit (it is an estimate)
WARMUP_BATCHES = 1  # per device thread: kernel selection, allocator growth, lazy init
MEASURE_BATCHES = 8  # warm batches measured before projecting ...
MEASURE_SECONDS = 120.0  # ... or this long, whichever comes first
SHORTER_LENGTHS = (3072, 2560, 2048, 1536, 1024, 768, 512, 384, 256)
clock = time.perf_counter  # what a `Budget` reads the time from (tests fake a slow device)


class TimeBudgetExceeded(RuntimeError):
    """The projected run does not fit the time limit; the message says what would."""


@dataclasses.dataclass
class Plan:
    """The work of the whole run as the first model saw it."""

    lengths: np.ndarray  # tokens of each row of one pass
    passes: int  # required passes: 2 with swap TTA
    models: int  # folds scored one after the other
    max_length: int
    optional_passes: float = 0.0  # the adaptive swap pass's share of the rows (shrinks to fit)

    def tokens(self, max_length: int | None = None, passes=None, models=None) -> float:
        """Tokens of every pass of every model (rows cut to `max_length` when given)."""
        lengths = self.lengths if max_length is None else np.minimum(self.lengths, max_length)
        return float(lengths.sum()) * (passes or self.passes) * (models or self.models)


@dataclasses.dataclass
class _Worker:
    """One device thread's batches: the first `warmup` are not measured."""

    batches: int = 0
    last: float | None = None  # the clock at its previous batch's end
    measured: int = 0  # warm batches
    tokens: int = 0  # their tokens
    seconds: float = 0.0  # their time


def duration(seconds: float) -> str:
    """A time as a person reads it: '2.50 h', '12.5 min' or '40.2 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


class Budget:
    """Throughput measurement and projection of one `predict` run (shared by its folds).

    Args:
        limit_h: hours the run may take (0 = no limit); counted from the budget's creation.
        models: models scored one after the other (a k-fold run's folds).
        reserve_h: hours the optional work must leave for what comes after this run (a
            cascade's later stages).
    """

    def __init__(self, limit_h: float = 0.0, models: int = 1, reserve_h: float = 0.0):
        self.limit_s, self.reserve_s = float(limit_h) * 3600, float(reserve_h) * 3600
        self.models, self.started = models, clock()
        self.plan: Plan | None = None
        self.projection: dict | None = None
        self.note: str | None = None  # why there is no projection
        self.tokens_done, self.batches, self.models_done = 0, 0, 0
        self.warmup, self.devices = WARMUP_BATCHES, 1
        self._workers: dict = {}  # device thread -> _Worker
        self._measure_from = self._first_watch = None
        self._lock = threading.Lock()

    def restart(self, limit_h: float) -> None:  # a new run of the same models, from now
        self.__init__(limit_h, self.models)

    @contextlib.contextmanager
    def watch(self, replicas, lengths: np.ndarray, passes: int, max_length: int, *,
              optional_passes: float = 0.0, warmup_batches: int = WARMUP_BATCHES):
        """Watch the batches of one model's scoring (its replicas, one per device).

        Args:
            replicas: the modules the engine calls (a module or a list, one per device).
            lengths: tokens of each row of one pass.
            passes: required TTA passes (2 with swap).
            max_length: the tokens per row the rows were cut to.
            optional_passes: the share of a pass that may be dropped (adaptive TTA's fraction).
            warmup_batches: batches of each device thread that are not measured.
        """
        if self.plan is None:
            self.plan = Plan(np.asarray(lengths), passes, self.models, max_length,
                             optional_passes)
            self._first_watch = clock()  # load and encoding of the first model end here
        mods = replicas if isinstance(replicas, (list, tuple)) else [replicas]
        self.devices, self.warmup = len(mods), warmup_batches
        unique = list({id(m): m for m in mods}.values())
        handles = [m.register_forward_hook(self._after_batch, with_kwargs=True) for m in unique]
        try:
            yield self
            with self._lock:
                if self.projection is None:
                    self._conclude(clock(), at_end=True)
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
            worker = self._workers.setdefault(threading.current_thread(), _Worker())
            worker.batches += 1
            if worker.batches > self.warmup and worker.last is not None:
                worker.measured += 1
                worker.tokens += tokens
                worker.seconds += now - worker.last
            elif worker.batches == self.warmup and self._measure_from is None:
                self._measure_from = now  # the first device is warm: measuring starts
            worker.last = now
            if self.projection is not None or self.plan is None:
                return
            measured = self.measured_batches()
            if measured >= MEASURE_BATCHES or (
                    measured and now - self._measure_from >= MEASURE_SECONDS):
                self._conclude(now)

    def measured_batches(self) -> int:  # warm batches so far, every device together
        return sum(w.measured for w in self._workers.values())

    def tokens_per_s(self) -> float | None:
        """The run's speed: the warm batches' pooled tokens/s per device thread times the
        devices working at once; None before any warm batch."""
        tokens = sum(w.tokens for w in self._workers.values())
        seconds = sum(w.seconds for w in self._workers.values())
        return tokens / seconds * self.devices if seconds > 0 else None

    def _speed(self, now: float) -> float:
        """`tokens_per_s`, or before any warm batch every token so far over the time since the
        first model's load (slower: it holds the warm-up; a cut made with it errs short)."""
        return self.tokens_per_s() or self.tokens_done / max(now - self._first_watch, 1e-9)

    def _conclude(self, now: float, at_end: bool = False) -> None:
        """Project (with the lock held), log, and stop a run whose required work cannot fit."""
        if self.tokens_per_s() is None:
            if at_end and self.note is None:
                self.note = (f"too short to project: {self.batches} batch(es), each a device's "
                             f"warm-up (the first {self.warmup} of each device are not measured)")
                log.info("time budget: %s", self.note)
            return
        self.projection = self._project(now)
        log.info(self.describe())
        over = self.limit_s and self.projection["required_seconds"] > SAFETY * self.limit_s
        if over and self.projection["required_left"] > 0:
            raise TimeBudgetExceeded(self.describe() + "; " + self.advice())

    def _project(self, now: float) -> dict:
        """The run's projected wall time at `now` and what it rests on."""
        plan, tps = self.plan, self.tokens_per_s()
        startup = max(self._first_watch - self.started, 0.0)
        models_left = max(plan.models - self.models_done - 1, 0)
        required_left = max(plan.tokens() - self.tokens_done, 0.0)
        optional = plan.tokens(passes=plan.optional_passes) if plan.optional_passes else 0.0
        spent = (now - self.started) + models_left * startup
        return {"seconds": spent + (required_left + optional) / tps,
                "required_seconds": spent + required_left / tps, "required_left": required_left,
                "tokens_per_s": tps, "rows_per_s": tps / max(plan.lengths.mean(), 1.0),
                "startup_seconds": startup, "measured_batches": self.measured_batches(),
                "rows": len(plan.lengths), "passes": plan.passes, "models": plan.models,
                "optional_passes": plan.optional_passes, "tokens": plan.tokens() + optional}

    def seconds_left(self) -> float:
        """Time left within `SAFETY` x the limit (infinite without a limit)."""
        return SAFETY * self.limit_s - (clock() - self.started) if self.limit_s else math.inf

    def extra_seconds(self) -> float:
        """Seconds the current model's optional work (its adaptive swap pass) may take: the
        time left less the reserve and the required work of the models still to come, shared
        evenly with their own optional work."""
        left = self.seconds_left() - self.reserve_s
        if math.isinf(left) or self.plan is None:
            return left
        now, plan = clock(), self.plan
        models_left = max(plan.models - self.models_done - 1, 0)
        one_model = max(self._first_watch - self.started, 0.0) + plan.tokens(models=1) / \
            self._speed(now)
        return max(0.0, (left - models_left * one_model) / (models_left + 1))

    def tokens_within(self, seconds: float) -> float:  # at the measured speed
        return math.inf if math.isinf(seconds) else seconds * self._speed(clock())

    def rows_that_fit(self, seconds: float, reload: bool) -> int:
        """How many of the plan's rows, in their order, a new run of the same model(s) scores
        within `SAFETY` x `seconds`: every model loaded again first when `reload` (a k-fold
        run loads each fold per call), then the rows' tokens x passes x models."""
        plan = self.plan
        startup = max(self._first_watch - self.started, 0.0) * plan.models if reload else 0.0
        tokens = (SAFETY * seconds - startup) * self._speed(clock()) / (plan.passes * plan.models)
        return int(np.searchsorted(np.cumsum(plan.lengths), tokens, side="right"))

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
        extra = (f" + an adaptive swap pass on up to {p['optional_passes']:.0%} of the rows"
                 if p["optional_passes"] else "")
        text = (f"time budget: {p['rows']} rows x {p['passes']} TTA pass(es){extra} x "
                f"{p['models']} model(s) = {p['tokens']:,.0f} tokens at "
                f"{p['tokens_per_s']:,.0f} tokens/s ({p['rows_per_s']:,.2f} rows/s) after "
                f"{p['measured_batches']} warm batches: projected {duration(p['seconds'])}")
        if extra:
            text += f" ({duration(p['required_seconds'])} without the adaptive pass)"
        if not self.limit_s:
            return text + " (no time_limit_h)"
        over = p["required_seconds"] - self.limit_s
        return text + (f", {duration(abs(over))} {'over' if over > 0 else 'under'} the limit of "
                       f"{duration(self.limit_s)} (it stops above {SAFETY:.0%} of it)")

    def advice(self) -> str:
        """What would fit the limit, each with its projected time."""
        opts = self.options()
        fit = [(o, s) for o, s in opts if s is not None and s <= SAFETY * self.limit_s]
        shown = fit or [(o, s) for o, s in opts if s is not None]
        head = "would fit: " if fit else "none of these fits alone: "
        listed = [f"{o} ({duration(s)})" for o, s in shown] + [o for o, s in opts if s is None]
        return head + "; ".join(listed)

    def summary(self) -> dict:
        """The budget's figures for predict.json."""
        p = self.projection or {}
        return {"time_limit_h": self.limit_s / 3600 or None,
                "time_limit": duration(self.limit_s) if self.limit_s else None,
                "projected_h": p["seconds"] / 3600 if p else None,
                "projected": duration(p["seconds"]) if p else self.note,
                "measured_batches": p.get("measured_batches", 0),
                "measured_tokens_per_s": p.get("tokens_per_s"),
                "measured_rows_per_s": p.get("rows_per_s")}
