"""Turn lists: one JSON cell decoded into clean turn strings, and rows' turn counts evened out.

A cell is a JSON list of turns (`null` as the cell: no turns; `null` as a turn: an empty turn).
A turn that is not a string (an object, a number) is a `DataError` naming the file, row id,
column and turn index, never its Python repr. Rows whose prompt and answers have different
turn counts are reported once (count and first ids) and evened out by `even_turns`, so every
layout, feature and probe sees the same turns.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from ..files.tables import TEXT_COLS, DataError

log = logging.getLogger("lmsys_pref")
JSON_TYPES = {dict: "object", list: "array", int: "number", float: "number", bool: "boolean"}


def clean_text(text: str) -> str:
    """Repair broken unicode so tokenizers and `json.dumps` accept the text.

    The real data holds lone UTF-16 surrogates (halves of emoji cut by the crawler); a
    surrogate-pass round trip re-joins valid pairs and turns lone halves into U+FFFD.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def decode_turns(value, *, where: str = "", lenient: bool = False) -> list[str]:
    """Decode one JSON list cell into a list of turn strings.

    `null` as the whole cell means no turns; `null` inside the list is an empty turn; any other
    non-string turn (an object, a number, a list) is an error naming the turn.

    Args:
        value: the raw cell (a JSON string, or an already decoded list).
        where: "file, row id, column" for the error message.
        lenient: keep undecodable text as a single turn, and a non-string turn as its JSON
            text, instead of raising.
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        turns = list(value)
    else:
        if is_missing(value):  # an empty cell reads like JSON `null`: no turns
            return []
        try:
            turns = json.loads(value)
        except (json.JSONDecodeError, TypeError) as err:
            if lenient:
                return [clean_text(str(value))]
            reason = err.msg if hasattr(err, "msg") else err
            raise DataError(f"{where}: not a valid JSON list ({reason})") from None
    if turns is None:
        return []
    if isinstance(turns, str):
        turns = [turns]
    if not isinstance(turns, list):
        if lenient:
            return [clean_text(json.dumps(turns, ensure_ascii=False))]
        raise DataError(f"{where}: expected a JSON list, got {type(turns).__name__}")
    return [_turn_text(t, k, where, lenient) for k, t in enumerate(turns)]


def _turn_text(turn, k: int, where: str, lenient: bool) -> str:
    if isinstance(turn, str):
        return clean_text(turn)
    if turn is None:
        return ""
    shown = json.dumps(turn, ensure_ascii=False, default=str)
    if lenient:
        return clean_text(shown)
    kind = JSON_TYPES.get(type(turn), type(turn).__name__)
    raise DataError(f"{where}, turn {k}: a JSON {kind} ({shown[:60]}), expected a string or "
                    "null")


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def plain_turns(value, *, where: str = "", lenient: bool = False) -> list[str]:
    """A plain-string cell (the WSDM Cup's layout) as one turn; empty or null: no turns.

    Raises:
        DataError: a cell that is not text (a number, a list), naming `where`, unless lenient.
    """
    if is_missing(value):
        return []
    if isinstance(value, str):
        return [clean_text(value)] if value else []
    if lenient:
        return [clean_text(str(value))]
    raise DataError(f"{where}: a {type(value).__name__} ({str(value)[:60]}), expected text "
                    "(this task's turns are plain strings)")


def decode_column(df: pd.DataFrame, col: str, name: str, lenient: bool, plain: bool = False
                  ) -> pd.Series:
    """One text column decoded into turn lists (JSON lists, or with `plain` one string per
    cell); with `lenient`, bad cells repaired (logged)."""
    decode = plain_turns if plain else decode_turns
    repaired, out = [], []
    missing = df.loc[df[col].map(is_missing), "id"].tolist()
    if missing:
        log.warning("%s: %d empty cell(s) in column %r read as no turns: ids %s", name,
                    len(missing), col, missing[:20])
    for rid, value in zip(df["id"].tolist(), df[col].tolist()):
        try:
            out.append(decode(value, where=f"{name}: row id {rid}, column '{col}'"))
        except DataError:
            if not lenient:
                raise
            repaired.append(rid)
            out.append(decode(value, lenient=True))
    if repaired:
        log.warning("%s: repaired %d row(s) in column %r: ids %s", name, len(repaired), col,
                    repaired[:20])
    return pd.Series(out, index=df.index, dtype=object)


def even_turns(df: pd.DataFrame, name: str) -> list[str]:
    """Give every text part of a row the row's turn count (empty turns appended), in place.

    Rows whose prompt and answers have different turn counts are reported once, with their
    count and first ids; evening them out here means every layout, feature and probe sees the
    same turns. A part with no turn at all (an empty answer) stays empty: that is the
    empty-answer case of `postrules`, not a missing turn. Returns the ids of the changed rows.
    """
    counts = np.array([[len(t) for t in df[c]] for c in TEXT_COLS]).T.reshape(-1, 3)
    uneven = ((counts != counts.max(1, keepdims=True)) & (counts > 0)).any(1)
    if not uneven.any():
        return []
    ids = df.loc[uneven, "id"].tolist()
    log.warning("%s: %d row(s) whose prompt and answers have different turn counts (ids %s): "
                "the shorter parts get empty turns at the end, in every layout", name, len(ids),
                ids[:10])
    for col in TEXT_COLS:
        df[col] = [t + [""] * (n - len(t)) if t and uneven_row else t for t, n, uneven_row
                   in zip(df[col], counts.max(1), uneven)]
    return ids
