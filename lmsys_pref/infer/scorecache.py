"""Partial predictions on disk, so that a long scoring run can resume after a crash."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("lmsys_pref.infer.scorecache")


def fingerprint(input_ids: Sequence[Sequence[int]], key: str = "") -> str:
    """A hash of the rows (their order and every token) and of `key`."""
    h = hashlib.sha256(key.encode())
    h.update(np.fromiter((len(r) for r in input_ids), np.int64, len(input_ids)).tobytes())
    for row in input_ids:
        h.update(np.asarray(row, dtype=np.int64).tobytes())
    return h.hexdigest()


class ScoreCache:
    """An .npz file of `logits` (n, labels) and `done` (n,) for rows with a given fingerprint.

    Saves are atomic (temp file + rename) and throttled to one per `every_s` seconds while
    scoring; `predict_ids` also saves at the end and when a worker fails.
    """

    def __init__(self, path: str | Path, key: str, n_rows: int, every_s: float = 30.0):
        self.path, self.key, self.n, self.every_s = Path(path), key, n_rows, every_s
        self._last = time.monotonic()

    def load(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(logits or None, done mask); an absent or stale file gives nothing done."""
        done = np.zeros(self.n, dtype=bool)
        if not self.path.exists():
            return None, done
        with np.load(self.path, allow_pickle=False) as z:
            if str(z["key"]) != self.key or len(z["done"]) != self.n:
                log.warning("%s: cache is for other rows or another model; ignoring it", self.path)
                return None, done
            logits, done = z["logits"], z["done"].astype(bool)
        log.info("%s: resuming, %d of %d rows already scored", self.path, int(done.sum()), self.n)
        return (logits if logits.ndim == 2 else None), done

    def save(self, logits: np.ndarray | None, done: np.ndarray) -> None:
        if logits is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, key=np.array(self.key), logits=logits, done=done)
        os.replace(tmp, self.path)
        self._last = time.monotonic()

    def maybe_save(self, logits: np.ndarray, done: np.ndarray) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.save(logits, done)


def open_cache(path: str | Path | None, input_ids, key: str = "") -> ScoreCache | None:
    """A `ScoreCache` for these rows, or None when `path` is None."""
    if path is None:
        return None
    return ScoreCache(path, fingerprint(input_ids, key), len(input_ids))
