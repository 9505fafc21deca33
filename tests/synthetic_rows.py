"""Synthetic planted rows for the data-lever tests (tests/test_distill.py, ...); the real-row
planted task (arena texts, a marker phrase) is `lmsys_pref.eval.planted`.

The preferred answer opens with a marker phrase; the other opens with a different one. Ids are
text, as the competition files spell them. A tiny model learns the signal in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

GOOD = ("great superb perfect excellent brilliant wonderful lovely splendid fine nice ideal clear "
        "smart right true solid neat bright sharp crisp").split()
BAD = ("awful broken wrong terrible useless poor weak sloppy vague messy bland dull false "
       "rude lazy slow ugly cheap stale flat").split()
WORDS = ("apple river stone cloud green quick lamp tiger seven music paper window garden "
         "silver rocket mountain").split()


def planted_rows(n: int, seed: int = 0, start_id: int = 1000) -> pd.DataFrame:
    """`n` labelled rows in the competition layout (texts as JSON lists, one-hot winners)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = lambda k: " ".join(rng.choice(WORDS, k))  # noqa: E731 - local shorthand
        win = int(rng.integers(2))  # 0 = A wins, 1 = B wins
        good, bad = f"{words(3)} {rng.choice(GOOD)}", f"{words(3)} {rng.choice(BAD)}"
        a, b = (good, bad) if win == 0 else (bad, good)
        rows.append({"id": str(start_id + i), "model_a": "m1", "model_b": "m2",
                     "prompt": json.dumps([f"Tell me about {words(3)}"]),
                     "response_a": json.dumps([a]), "response_b": json.dumps([b]),
                     "winner_model_a": int(win == 0), "winner_model_b": int(win == 1),
                     "winner_tie": 0})
    return pd.DataFrame(rows)


def write_dir(path: Path, train: pd.DataFrame, test: pd.DataFrame | None = None) -> Path:
    """A competition folder: train.csv (+ test.csv without the label columns)."""
    path.mkdir(parents=True, exist_ok=True)
    train.to_csv(path / "train.csv", index=False)
    if test is not None:
        test[["id", "prompt", "response_a", "response_b"]].to_csv(path / "test.csv", index=False)
    return path


def true_labels(df: pd.DataFrame) -> pd.Series:
    """Class index by id (text) of a planted frame."""
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    return pd.Series(df[cols].to_numpy(float).argmax(1), index=df["id"].astype(str))


def soften(df: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """A copy whose labels are uniform (1/3 each) on a seeded `share` of the rows."""
    out = df.copy()
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    out[cols] = out[cols].astype(float)
    pick = np.random.default_rng(seed).random(len(df)) < share
    out.loc[pick, cols] = 1 / 3
    return out


def teacher_file(df: pd.DataFrame, path: Path, smooth: float = 0.1) -> Path:
    """A teacher that knows the answer: the true one-hot labels, smoothed."""
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    p = df[cols].to_numpy(float) * (1 - smooth) + smooth / 3
    out = pd.DataFrame(p, columns=cols)
    out.insert(0, "id", df["id"].astype(str).to_numpy())
    out.to_csv(path, index=False)
    return path
