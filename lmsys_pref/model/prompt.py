"""Text layouts of prompt + answer A + answer B, and the length control that fits them in a budget.

Two layouts, both multi-turn aware:

- `gemma` (the paper's): `<prompt>: p1\\np2 … <response_a>: a1\\na2 … <response_b>: b1\\nb2 …`
- `turns` (the winners'): one block per turn, `<prompt>: p_i <response_a>: a_i <response_b>: b_i`

The tokenizer's own special tokens (BOS/CLS/SEP/EOS) and the headers are always kept. What is
left of `max_length` is shared between the three parts: with `spread_max_length` each part gets
a third and budget a short part does not use goes to the others (water-filling); without it the
parts are filled in reading order, but each answer still keeps at least a quarter. Inside a part,
`truncation_side="right"` keeps the start, `"left"` keeps the end (the last turns).

Options for the layouts of public solutions (`PromptSpec` fields, fixed tokens like the headers):
`turn_joiner` (the text between the turns of a part in the `gemma` layout: ours is "\\n", public
ones use " " or "\\n\\n"; it is tokenized on its own, so the tokens at a join can differ from
those of the joined text), `suffix` (text after answer B, e.g. "\\n\\nWhich response is
better?") and `eos` (the tokenizer's EOS token last). An A/B-token judge (`head: ab_tokens`)
closes every row with a judging question (`suffix`, else `JUDGE_QUESTIONS` for the task's
classes) whose answer is the next token (`model.judge`).

Speed: every column is tokenized in one batched call of the Rust tokenizer. A text far longer
than any budget is first cut at a word boundary on the side that truncation drops; when the cut
text still has more tokens than any budget, its kept tokens are those of the full text, else
(rare: very long tokens) it is re-tokenized whole. With `truncation_side: middle` texts are
tokenized whole: the parts' budgets follow their true lengths.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np
import pandas as pd

from ..configs.lm import AB_TOKENS
from ..configs.parts import PromptSpec
from ..data import TEXT_COLS

LAYOUTS = ("gemma", "turns")
SIDES = ("left", "right", "middle")
CHARS_PER_TOKEN_CAP = 8  # texts longer than budget x this are cut before tokenizing (see doc)
_BOUNDARY = re.compile(r"\S\s")  # a cut between a word and the next space keeps tokens intact
JUDGE_QUESTIONS = {  # task classes -> the A/B-token judge's question after answer B
    3: "\n\nWhich response is better? Answer A, B or tie (same quality).\nAnswer:",
    2: "\n\nWhich response is better? Answer A or B.\nAnswer:",
}
_HEADERS = {  # (first prompt header, later prompt header, answer A header, answer B header, sep)
    "gemma": ("<prompt>: ", None, "\n\n<response_a>: ", "\n\n<response_b>: ", "\n"),
    "turns": ("<prompt>: ", "\n\n<prompt>: ", "\n<response_a>: ", "\n<response_b>: ", None),
}


@dataclasses.dataclass(frozen=True)
class Template:
    """Token ids of the fixed parts of a layout for one tokenizer."""

    layout: str
    prefix: tuple  # the tokenizer's leading special tokens (BOS / CLS)
    suffix: tuple  # trailing special tokens (EOS / SEP)
    p_first: tuple
    p_next: tuple
    a: tuple
    b: tuple
    sep: tuple  # between turns inside a part (gemma layout)
    closing: tuple = ()  # the `suffix` text after answer B
    eos: tuple = ()  # EOS appended last (`eos: true`), unless the special tokens end with it

    def overhead(self, n_turns: int) -> int:
        """Fixed tokens of a row with `n_turns` turns."""
        base = len(self.prefix) + len(self.suffix) + len(self.closing) + len(self.eos)
        if self.layout == "gemma":
            return base + len(self.p_first) + len(self.a) + len(self.b)
        return base + len(self.p_first) + (n_turns - 1) * len(self.p_next) + \
            n_turns * (len(self.a) + len(self.b))


def _ids(tokenizer, text: str | None) -> tuple:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def template(tokenizer, layout: str, *, suffix: str = "", eos: bool = False,
             turn_joiner: str | None = None) -> Template:
    """The layout's headers and the tokenizer's special tokens, as ids.

    Args:
        tokenizer: a Hugging Face tokenizer.
        layout: one of `LAYOUTS`.
        suffix: text after answer B ('' = none).
        eos: end every row with the tokenizer's EOS token.
        turn_joiner: text between the turns of a part in the `gemma` layout (None = "\\n").

    Raises:
        ValueError: unknown layout, `eos` with a tokenizer that has no EOS token.
    """
    if layout not in _HEADERS:
        raise ValueError(f"layout: unknown {layout!r}; expected one of {LAYOUTS}")
    probe = _ids(tokenizer, "x")
    full = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    at = next(i for i in range(len(full)) if tuple(full[i:i + len(probe)]) == probe)
    p_first, p_next, a, b, sep = _HEADERS[layout]
    if sep is not None and turn_joiner is not None:
        sep = turn_joiner
    special_end = tuple(full[at + len(probe):])
    return Template(layout, tuple(full[:at]), special_end, _ids(tokenizer, p_first),
                    _ids(tokenizer, p_next), _ids(tokenizer, a), _ids(tokenizer, b),
                    _ids(tokenizer, sep), _ids(tokenizer, suffix),
                    _eos_ids(tokenizer, special_end) if eos else ())


def _eos_ids(tokenizer, special_end: tuple) -> tuple:
    """(EOS,) unless the tokenizer's own trailing special tokens already end with it."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"eos: true, but the tokenizer {type(tokenizer).__name__} has no EOS "
                         "token")
    return () if special_end[-1:] == (eos,) else (int(eos),)


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


def _keep(turns: list[list[int]], budget: int, side: str) -> list[list[int]]:
    """Cut a part (a list of turns) to `budget` tokens from its end ('right'), its start
    ('left'), or its middle ('middle': the first half of the budget from the start, the rest
    from the end, each turn keeping its place)."""
    if side == "middle":
        head = _keep(turns, (budget + 1) // 2, "right")
        tail = _keep(turns, budget - (budget + 1) // 2, "left")
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


def closing(spec: PromptSpec) -> str:
    """The text after answer B: `suffix`, or for an A/B-token judge without one the judging
    question of its task's classes (`JUDGE_QUESTIONS`)."""
    if spec.suffix or spec.head != AB_TOKENS:
        return spec.suffix
    return JUDGE_QUESTIONS[spec.n_labels]


def _check(spec: PromptSpec) -> None:
    if spec.layout not in LAYOUTS:
        raise ValueError(f"layout: unknown {spec.layout!r}; expected one of {LAYOUTS}")
    if spec.truncation_side not in SIDES:
        raise ValueError(f"truncation_side: {spec.truncation_side!r}; expected one of {SIDES}")


def _column_turns(df: pd.DataFrame, tokenizer, need: int, side: str, sep: tuple | None
                  ) -> dict[str, list[list[list[int]]]]:
    """Per column, per row, per turn token ids (one tokenizer call per column); with `sep`
    (the gemma layout) each part's turns become one stream joined by it."""
    out = {}
    for col in TEXT_COLS:
        cells = df[col].tolist()
        flat = [t for cell in cells for t in cell]
        ids = tokenize_texts(tokenizer, flat, need, side)
        rows, at = [], 0
        for cell in cells:
            turns = ids[at:at + len(cell)]
            at += len(cell)
            if sep is not None:  # gemma layout: one stream per part, turns joined by `sep`
                stream = []
                for k, t in enumerate(turns):
                    stream += (list(sep) if k else []) + t
                turns = [stream]
            rows.append(turns)
        out[col] = rows
    return out


def _row_turns(tpl: Template, n_turns: int, max_length: int) -> int:
    """How many turns of a row fit: headers may take at most half of max_length."""
    keep = n_turns
    while keep > 1 and tpl.overhead(keep) > max_length // 2:
        keep -= 1
    if tpl.overhead(keep) >= max_length:
        raise ValueError(f"max_length {max_length} is too small for the {tpl.layout!r} layout "
                         f"({tpl.overhead(keep)} tokens of headers and special tokens)")
    return keep


def _assemble(tpl: Template, parts: list[list[list[int]]]) -> list[int]:
    p, a, b = parts
    ids = list(tpl.prefix)
    if tpl.layout == "gemma":
        ids += list(tpl.p_first) + p[0] + list(tpl.a) + a[0] + list(tpl.b) + b[0]
    else:
        for k in range(len(p)):
            ids += list(tpl.p_first if k == 0 else tpl.p_next) + p[k] + list(tpl.a) + a[k] + \
                list(tpl.b) + b[k]
    return ids + list(tpl.closing) + list(tpl.suffix) + list(tpl.eos)


def _pad_turns(turns: list[list[int]], n: int, side: str) -> list[list[int]]:
    """Exactly `n` turns: missing turns are empty, surplus ones dropped on the cut side."""
    turns = list(turns) + [[] for _ in range(n - len(turns))]
    return turns[:n] if side == "right" else turns[len(turns) - n:]


def encode_row(tpl: Template, parts: list[list[list[int]]], spec: PromptSpec) -> list[int]:
    """One row's input ids from its per-part, per-turn token ids."""
    if tpl.layout == "gemma":
        n_turns = 1
        parts = [p or [[]] for p in parts]
    else:
        n_turns = _row_turns(tpl, max(1, *(len(p) for p in parts)), spec.max_length)
        parts = [_pad_turns(p, n_turns, spec.truncation_side) for p in parts]
    avail = spec.max_length - tpl.overhead(n_turns)
    if avail < 3:
        raise ValueError(f"max_length {spec.max_length} is too small for the {tpl.layout!r} "
                         f"layout ({tpl.overhead(n_turns)} fixed tokens)")
    middle = spec.truncation_side == "middle"  # its texts are tokenized whole: true lengths
    # clamp: a text cut before tokenizing only knows it is longer than any budget
    budgets = allocate([sum(map(len, p)) if middle else min(sum(map(len, p)), avail)
                        for p in parts], avail, spec.spread_max_length, proportional=middle)
    kept = [_keep(p, n, spec.truncation_side) for p, n in zip(parts, budgets)]
    return _assemble(tpl, kept)


def encode(df: pd.DataFrame, tokenizer, spec: PromptSpec) -> list[list[int]]:
    """Input ids of every row (no padding), in row order.

    Args:
        df: a frame from `data.load_split` (text columns are lists of turns).
        tokenizer: a Hugging Face tokenizer (fast ones are used through their Rust backend).
        spec: the layout, `max_length`, `spread_max_length`, `truncation_side`, `eos`,
            `suffix` (or the judging question, `closing`), `turn_joiner` (a config's
            `.prompt`).

    Raises:
        ValueError: unknown layout/side, or `max_length` too small for the fixed tokens.
    """
    _check(spec)
    tpl = template(tokenizer, spec.layout, suffix=closing(spec), eos=spec.eos,
                   turn_joiner=spec.turn_joiner)
    need = max(spec.max_length - tpl.overhead(1), 1)
    cols = _column_turns(df, tokenizer, need, spec.truncation_side,
                         tpl.sep if tpl.layout == "gemma" else None)
    return [encode_row(tpl, [cols[c][i] for c in TEXT_COLS], spec) for i in range(len(df))]


def lengths(input_ids: list[list[int]]) -> np.ndarray:
    """Row lengths as an int array (for length-grouped batches and stats)."""
    return np.fromiter((len(r) for r in input_ids), dtype=np.int64, count=len(input_ids))
