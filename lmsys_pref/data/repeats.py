"""Extra rows that repeat a conversation the run already has (`extra_train` deduplication): the
winners deduplicated the 33k Arena rows against the competition data, prompt and both answers,
in either A/B order. Torch-free."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from .frames import DataError

log = logging.getLogger("lmsys_pref.labels")


def conversation_keys(df: pd.DataFrame, swapped: bool = False) -> pd.Series:
    """One text key per row: prompt and both answers (B before A when `swapped`)."""
    a, b = ("response_b", "response_a") if swapped else ("response_a", "response_b")
    return pd.Series([json.dumps([list(p), list(x), list(y)]) for p, x, y in
                      zip(df["prompt"], df[a], df[b])], index=df.index)


def without_repeats(df: pd.DataFrame, path, seen: dict[str, set], test_ok: bool
                    ) -> tuple[pd.DataFrame, dict, set]:
    """An extra file's rows without those repeating a conversation of `seen` (named sets of
    keys: "train", "test", "an earlier extra row"); with `test_ok` (a pseudo-label output of
    test rows) the rows repeating "test" stay. Returns the kept rows, the file's report entry
    (`_test_copy`: which kept rows are test rows; `_dropped_ids`) and the kept rows' keys.

    Raises:
        DataError: every row repeats one (naming the file and what its rows repeated).
    """
    key, rev = conversation_keys(df), conversation_keys(df, swapped=True)
    hits = {name: np.array(key.isin(keys) | rev.isin(keys)) for name, keys in seen.items()}
    hits["an earlier extra row"] |= key.duplicated().to_numpy()
    test_copy = hits.pop("test") if test_ok else np.zeros(len(df), bool)
    dup = np.any(list(hits.values()), axis=0)
    repeats = {name: int(hit.sum()) for name, hit in hits.items()}
    if dup.all():
        raise DataError(f"extra_train {path}: every one of its {len(df)} row(s) repeats a "
                        f"conversation of {', '.join(f'{k} ({v})' for k, v in repeats.items())}"
                        f": it would add nothing; {repeat_hint(repeats)}")
    dropped = df["id"][dup].tolist()
    if dropped:
        log.warning("extra_train %s: dropped %d row(s) repeating a conversation (%s): ids %s",
                    path, len(dropped), repeats, dropped[:20])
    out = df[~dup].reset_index(drop=True)
    entry = {"rows": len(df), "used": len(out), "dropped": len(dropped), "repeats": repeats,
             "test_rows_kept": int((test_copy & ~dup).sum()),
             "_test_copy": (test_copy & ~dup)[~dup], "_dropped_ids": dropped}
    return out, entry, set(key[~dup])


def repeat_hint(repeats: dict[str, int]) -> str:
    """What to do about a file whose every row repeats one the run already has."""
    most = max(repeats, key=repeats.get)
    if most in ("test", "train/test"):
        return ("labelled copies of test rows are never trained on; a pseudo-label output of the "
                "run's test.csv is kept when its record (pseudo_labels.json, split 'test') is "
                "beside it")
    if most == "train":
        return ("a pseudo-label output of train.csv (--split train) is a teacher file "
                "(-p teachers), not extra rows")
    return "the same rows are already in an earlier extra_train file"
