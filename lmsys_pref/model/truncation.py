"""How a row's token budget is shared between its parts and each part cut to its share, and the
batched tokenizing that only reads what a budget can keep.

`allocate` shares what is left of `max_length` between prompt, answer A and answer B (equal
water-filled shares with `spread_max_length`, reading order without, in proportion to the
lengths for `truncation_side: middle`); `keep_tokens` cuts one part, a list of turns, from the
side truncation drops.

Speed: every column is tokenized in one batched call of the Rust tokenizer. A text far longer
than any budget is first cut at a word boundary on the side that truncation drops; when the cut
text still has more tokens than any budget, its kept tokens are those of the full text, else
(rare: very long tokens) it is re-tokenized whole. With `truncation_side: middle` texts are
tokenized whole: the parts' budgets follow their true lengths.
"""
from __future__ import annotations

import re
from typing import Sequence

SIDES = ("left", "right", "middle")
CHARS_PER_TOKEN_CAP = 8  # texts longer than budget x this are cut before tokenizing (see doc)
_BOUNDARY = re.compile(r"\S\s")  # a cut between a word and the next space keeps tokens intact


def allocate(lengths: Sequence[int], avail: int, spread: bool = True,
             proportional: bool = False) -> list[int]:
    """Token budgets of (prompt, answer A, answer B) that sum to at most `avail`.

    Args:
        lengths: tokens each part would need untruncated.
        avail: tokens left after the special tokens and headers.
        spread: water-fill equal shares (unused share goes to the others); else fill in
            reading order after reserving min(length, avail // 4) for each answer.
        proportional: when the parts do not fit, each keeps up to half an equal share and the
            rest is shared in proportion to what is left of each (the WSDM Cup's 2nd place
            truncated in proportion to the lengths; `truncation_side: middle`).
    """
    lengths = [max(int(n), 0) for n in lengths]
    if proportional and sum(lengths) > avail:
        return _proportional(lengths, avail)
    if spread:
        out, left, todo = [0, 0, 0], avail, sorted(range(3), key=lambda i: (lengths[i], i))
        for k, i in enumerate(todo):  # shortest first: what it leaves goes to the longer ones
            out[i] = min(lengths[i], left // (3 - k))
            left -= out[i]
        return out
    out = [0] + [min(lengths[i], avail // 4) for i in (1, 2)]
    left = avail - sum(out)
    for i in range(3):
        extra = min(lengths[i] - out[i], left)
        out[i] += extra
        left -= extra
    return out


def _proportional(lengths: list[int], avail: int) -> list[int]:
    """Budgets in proportion to the lengths, after a floor: each part first keeps up to half an
    equal share (`avail // 6`), so a short prompt is never starved by two long answers."""
    floor = [min(n, avail // 6) for n in lengths]
    rest, left = [n - f for n, f in zip(lengths, floor)], avail - sum(floor)
    out = [f + r * left // max(sum(rest), 1) for f, r in zip(floor, rest)]
    for i in sorted(range(len(out)), key=lambda i: -rest[i])[:avail - sum(out)]:
        out[i] += 1  # the rounding's leftover to the longest parts
    return out


def keep_tokens(turns: list[list[int]], budget: int, side: str) -> list[list[int]]:
    """Cut a part (a list of turns) to `budget` tokens from its end ('right'), its start
    ('left'), or its middle ('middle': the first half of the budget from the start, the rest
    from the end, each turn keeping its place)."""
    if side == "middle":
        head = keep_tokens(turns, (budget + 1) // 2, "right")
        tail = keep_tokens(turns, budget - (budget + 1) // 2, "left")
        return [t if len(h) + len(e) >= len(t) else h + e for t, h, e in zip(turns, head, tail)]
    out = [[] for _ in turns]
    order = range(len(turns)) if side == "right" else range(len(turns) - 1, -1, -1)
    for i in order:
        take = min(budget, len(turns[i]))
        out[i] = turns[i][:take] if side == "right" else turns[i][len(turns[i]) - take:]
        budget -= take
    return out


def _cut(text: str, cap: int, side: str) -> str | None:
    """The text cut to about `cap` characters at a word boundary (non-space | space), keeping
    the start ('right') or the end ('left'); None when no boundary is near (e.g. a long run of
    one character, whose tokens depend on the whole run)."""
    if side == "right":
        last = None
        for last in _BOUNDARY.finditer(text, cap // 2, cap):
            pass
        return text[:last.start() + 1] if last else None
    m = _BOUNDARY.search(text, len(text) - cap, len(text) - cap // 2)
    return text[m.start() + 1:] if m else None


def tokenize_texts(tokenizer, texts: list[str], need: int, side: str = "right") -> list[list[int]]:
    """Token ids of many texts in one batched call; only the first/last `need` tokens matter.

    Texts longer than `need * CHARS_PER_TOKEN_CAP` characters are cut on the dropped side at a
    word boundary first; a cut text that then has fewer than `need` (+ margin) tokens is
    tokenized again in full, so the kept tokens equal those of the full text.
    """
    cap = max(need, 1) * CHARS_PER_TOKEN_CAP
    # 'middle' shares the budget in proportion to the true lengths: those texts stay whole
    short = [_cut(t, cap, side) if len(t) > cap and side != "middle" else None for t in texts]
    ids = _encode(tokenizer, [t if c is None else c for t, c in zip(texts, short)])
    redo = [i for i, c in enumerate(short) if c is not None and len(ids[i]) < need + 8]
    if redo:
        for i, row in zip(redo, _encode(tokenizer, [texts[i] for i in redo])):
            ids[i] = row
    return ids


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "_tokenizer", None)  # the Rust tokenizer: no per-call overhead
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        backend.no_truncation()
        backend.no_padding()
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]
