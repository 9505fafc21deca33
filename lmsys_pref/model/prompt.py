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

How the budget is shared and each part cut, and the batched tokenizing: `model.truncation`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..configs.lm import AB_TOKENS
from ..configs.parts import PromptSpec
from ..data import TEXT_COLS
from .truncation import SIDES, allocate, keep_tokens, tokenize_texts

LAYOUTS = ("gemma", "turns")
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
    kept = [keep_tokens(p, n, spec.truncation_side) for p, n in zip(parts, budgets)]
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
