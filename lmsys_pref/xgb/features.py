"""Hand-made features of a prompt and its two answers, computed column-wise with pandas.

Humans in the Arena reward length, structure and willingness to answer; these features measure
exactly that for each answer, then compare A with B (difference and log-ratio) so the trees can
learn preferences that flip cleanly under an A/B swap.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# One pattern per countable property of a text. They are counted by Arrow's RE2 kernels on the
# whole column at once: pandas' `str.count` falls back to a Python `findall` per row for half of
# them, which made feature building 3x slower.
PATTERNS = {
    "words": r"\S+",
    "lines": r"\n",
    "punct": r"[^\w\s]",
    "headers": r"(?m)^#{1,6} ",
    "list_items": r"(?m)^\s*(?:[-*+]|\d+[.)]) ",
    "bold": r"\*\*[^*\n]+\*\*",
    "code_blocks": r"```",
    "inline_code": r"`[^`\n]+`",
    "table_rows": r"(?m)^\s*\|.*\|\s*$",
    "links": r"https?://",
    "questions": r"\?",
    "exclaims": r"!",
    "digits": r"\d",
    "upper": r"[A-Z]",
    "paragraphs": r"\n\s*\n",
    "sentences": r"[.!?](?:\s|$)",
}
# Matched on lower-cased text and factored by first letter: a case-insensitive alternation is
# the slowest pattern by far, since the engine tries every branch at every position.
REFUSAL = (
    r"\b(?:i(?:'?m sorry| am sorry| apologi[sz]e| can(?:no|')t| cannot|'?m (?:not able|unable)|"
    r" am (?:not able|unable)| don'?t have (?:access|the ability)| won'?t)|as an? (?:ai|language "
    r"model)|not appropriate|unethical)")
HEDGE = r"\b(?:might|may|perhaps|possibly|however|it depends|generally|typically)\b"
# Per-answer features compared between A and B as difference and log-ratio.
COMPARED = ("chars", "words", "lines", "tokens", "headers", "list_items", "bold", "code_blocks",
            "paragraphs", "sentences", "refusal", "hedges", "prompt_overlap", "unique_word_ratio")


def text_stats(texts: pd.Series) -> pd.DataFrame:
    """Counts of every pattern in one text column (already joined into strings)."""
    s = pa.array(texts.tolist(), type=pa.large_string())
    lower = pc.utf8_lower(s)
    out = {"chars": pc.utf8_length(s)}
    for name, pat in PATTERNS.items():
        out[name] = pc.count_substring_regex(s, pat)
    out["refusal"] = pc.count_substring_regex(lower, REFUSAL)
    out["hedges"] = pc.count_substring_regex(lower, HEDGE)
    out = {k: v.to_numpy().astype(np.float32) for k, v in out.items()}
    out["tokens"] = out["words"] + out["punct"]  # a tokenizer-free proxy for subword tokens
    out["avg_word_len"] = out["chars"] / (out["words"] + 1)
    out["digit_share"] = out["digits"] / (out["chars"] + 1)
    out["upper_share"] = out["upper"] / (out["chars"] + 1)
    return pd.DataFrame(out, index=texts.index)


def _word_sets(texts: pd.Series) -> list[set]:
    return [set(t.lower().split()) for t in texts.tolist()]


def overlap(a: list[set], b: list[set]) -> np.ndarray:
    """Jaccard similarity of word sets, row by row."""
    return np.array([len(x & y) / (len(x | y) or 1) for x, y in zip(a, b)], dtype=np.float32)


def turn_flags(turns: pd.Series) -> pd.DataFrame:
    """Structure of one decoded column: turn count, empty turns, all-empty."""
    n = turns.map(len)
    empty = turns.map(lambda ts: sum(1 for t in ts if not t.strip()))
    return pd.DataFrame({"turns": n, "empty_turns": empty,
                         "is_empty": (n == empty).astype(int)}).astype(np.float32)


PARALLEL_MIN_ROWS = 20_000


def build(df: pd.DataFrame, n_jobs: int = 0) -> pd.DataFrame:
    """Feature table for a decoded frame (as `data.load_split` returns), one row per input row.

    Column order is fixed, so a booster trained on one call scores the output of another.
    Large frames are split across forked worker processes (the word-set overlap is pure
    Python); `n_jobs` 0 means all cores, 1 forces a single process.
    """
    n_jobs = n_jobs or os.cpu_count() or 1
    if n_jobs == 1 or len(df) < PARALLEL_MIN_ROWS or "fork" not in mp.get_all_start_methods():
        return build_serial(df)
    return _build_forked(df, np.linspace(0, len(df), n_jobs + 1).astype(int))


def _build_forked(df: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """`build_serial` of each slice `edges[k]:edges[k+1]` in a forked child process.

    A forked child inherits `df` (nothing is pickled on the way in, and no module state is set
    to hand it over); only each slice's features come back. A child that fails sends its error
    back, which is raised here; one that dies without a word is named by its exit code.
    """
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_slice_into, args=(df, k, a, b, results), daemon=True)
               for k, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    for w in workers:
        w.start()
    parts: dict[int, pd.DataFrame] = {}
    try:
        while len(parts) < len(workers):
            try:
                k, part = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a feature worker died (exit code {dead[0]})") from None
                continue
            if isinstance(part, BaseException):
                raise part
            parts[k] = part
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    return pd.concat([parts[k] for k in range(len(workers))])


def _slice_into(df: pd.DataFrame, k: int, start: int, stop: int, results) -> None:
    """A child's work: the features of rows start:stop, or the error, sent back with `k`."""
    try:
        results.put((k, build_serial(df.iloc[start:stop])))
    except BaseException as err:  # noqa: BLE001 - the parent raises it
        results.put((k, err))


def build_serial(df: pd.DataFrame) -> pd.DataFrame:
    """`build` in the calling process."""
    joined = {c: df[c].map(lambda ts: "\n".join(ts)) for c in ("prompt", "response_a",
                                                               "response_b")}
    words = {c: _word_sets(s) for c, s in joined.items()}
    parts = {"p": text_stats(joined["prompt"]).join(turn_flags(df["prompt"]))}
    for side, col in (("a", "response_a"), ("b", "response_b")):
        st = text_stats(joined[col]).join(turn_flags(df[col]))
        st["prompt_overlap"] = overlap(words[col], words["prompt"])
        st["unique_word_ratio"] = np.array([len(w) for w in words[col]]) / (st["words"] + 1)
        parts[side] = st
    cols = {f"{side}_{k}": v for side, frame in parts.items() for k, v in frame.items()}
    a, b = parts["a"], parts["b"]
    for k in COMPARED:
        cols[f"diff_{k}"] = a[k] - b[k]
        cols[f"logratio_{k}"] = np.log1p(a[k]) - np.log1p(b[k])
    cols["ab_overlap"] = overlap(words["response_a"], words["response_b"])
    cols["identical"] = (joined["response_a"] == joined["response_b"]).astype(np.float32)
    cols["both_refuse"] = ((a["refusal"] > 0) & (b["refusal"] > 0)).astype(np.float32)
    return pd.DataFrame(cols, index=df.index).astype(np.float32)
