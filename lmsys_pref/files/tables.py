"""Reading the competition's tables as they are: CSV or parquet, ids as the file's own strings.

A table is read without reshaping anything, or it is a `DataError` naming the file: not UTF-8,
not comma-separated, a column name repeated in the header (pandas would rename the second copy
and silently use the first), a last row cut off mid-row (an interrupted copy or download; with
`lenient` that row is dropped and logged). Ids stay text end to end: `007`, `1e3`, `5.0` and
ids beyond 2^63 come out exactly as the file spells them, and duplicates are compared as text.
An id must still look like a number with an integer value (the competition's do), so a shifted
column or `row_30614122` is an error rather than an opaque key.
"""
from __future__ import annotations

import csv
import decimal
import io
import itertools
import logging
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

log = logging.getLogger("lmsys_pref")

TEXT_COLS = ("prompt", "response_a", "response_b")
LABEL_COLS = ("winner_model_a", "winner_model_b", "winner_tie")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
_DIGITS = r"\d+"
csv.field_size_limit(2**31 - 1)  # answers longer than the csv module's 128 KiB default exist


class DataError(ValueError):
    """Bad input: the message names the file, the row id and the column."""


def as_id_text(values: Iterable) -> np.ndarray:
    """Ids as text (an object array): strings as they are, integers in decimal, missing as None.

    Callers that hold numbers (an old run's ids, `np.arange`) compare with the text of a file
    through this one conversion, so `101` and `"101"` are the same id and `"007"` is not `7`.
    """
    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, (bool, np.bool_)):
            return str(v)
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)
    return np.array([one(v) for v in values], dtype=object)


def is_integer_text(text) -> bool:
    """Whether `text` is a string spelling an integer-valued number (`7`, `007`, `1e3`, `5.0`)."""
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        return False
    number = decimal.Decimal(text.strip())
    return number == number.to_integral_value()


def check_ids(df: pd.DataFrame, name: str, integer: bool = True) -> pd.Series:
    """The id column as text, exactly as read; an id that is empty (or, with `integer`, not an
    integer-valued number: the 2024 competition's ids are), or an id repeated (compared as
    text), is a `DataError` naming `name`. Without `integer` any non-empty text is an id (the
    WSDM Cup's hash-like train ids)."""
    raw = df["id"]
    ids = pd.Series(as_id_text(raw.tolist()), index=raw.index, dtype=object)
    good = ids.map(lambda t: isinstance(t, str) and (re.fullmatch(_DIGITS, t) is not None
                                                      or (not integer and t.strip() != "")))
    if not good.all() and integer:
        good[~good] = ids[~good].map(is_integer_text)
    if not good.all():
        pos = int((~good).to_numpy().argmax())
        shown = "empty (or NA)" if ids.iloc[pos] in (None, "") else repr(raw.iloc[pos])
        raise DataError(f"{name}: data row {pos + 1}: column 'id' is {shown}, expected "
                        f"{'an integer id' if integer else 'an id'} ({int((~good).sum())} such "
                        "row(s))")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"{name}: duplicate id(s) {dup.head(5).tolist()} in column 'id'")
    return ids


def read_csv(source, **kw) -> pd.DataFrame:
    """`pd.read_csv` with the id column as text, as the file spells it (`007` stays `007`)."""
    return pd.read_csv(source, dtype={"id": str}, **kw)


def read_table(path: str | Path, lenient: bool = False) -> pd.DataFrame:
    """Read a CSV (UTF-8, comma-separated) or parquet file as-is (no decoding; ids as text).

    Args:
        path: the file.
        lenient: drop a last row that is cut off (logged) instead of raising.

    Raises:
        FileNotFoundError: no such file.
        DataError: not UTF-8, not a parsable CSV (e.g. semicolon-separated) or parquet file, a
            repeated column name, or a cut-off last row.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    try:
        _check_header(path, _csv_header(path))
        cut = None if _ends_with_newline(path) else cut_last_row(path)
        try:
            df = _read_competition_csv(path)
        except pd.errors.ParserError as err:
            cut = cut_last_row(path) if "EOF inside string" in str(err) else None
            if cut is None:
                raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text ({_first_bad_byte(path)}); save the file as "
                        "UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a comma-separated file like the competition's "
                        f"({_header_hint(path)}; pandas: {str(err).strip()})") from None
    if cut is None:
        return df
    if not lenient:
        raise DataError(f"{cut[1]}; a run with `lenient` drops that row")
    log.warning("%s; lenient: the row is dropped", cut[1])
    with open(path, newline="", encoding="utf-8-sig") as f:
        return _read_competition_csv(io.StringIO("".join(itertools.islice(f, cut[0] - 1))))


def _read_competition_csv(source) -> pd.DataFrame:
    return read_csv(source, keep_default_na=False, encoding="utf-8",
                    na_values={c: [""] for c in TEXT_COLS + LABEL_COLS})


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise DataError(f"{path}: not a readable {path.suffix} file ({err})") from None
    _check_header(path, [str(c) for c in df.columns])
    if "id" in df.columns:
        df["id"] = as_id_text(df["id"].tolist())
    return df


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _check_header(path: Path, header: list[str]) -> None:
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: column name(s) {repeated} appear more than once in the header "
                        "(pandas would rename the copies and read only the first); name each "
                        "column once")


def _ends_with(path: Path, *ends: bytes) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) in ends


def _ends_with_newline(path: Path) -> bool:
    return path.stat().st_size == 0 or _ends_with(path, b"\n", b"\r")


def cut_last_row(path: str | Path) -> tuple[int, str] | None:
    """`(first line of the last row, message)` when the file ends inside its last row: inside
    a quoted field, or with fewer fields than the header has; None when it is complete."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, strict=True)
        header, fields, start, end = next(reader, []), None, 1, 1
        try:
            for fields in reader:
                start, end = end + 1, reader.line_num
        except csv.Error as err:
            if "unexpected end of data" not in str(err):
                return None
            f.seek(0)
            line = next(itertools.islice(f, end, None), "")
            rid = line.split(",", 1)[0]
            return end + 1, (f"{path}: row id {rid} (line {end + 1}) is cut off: the file ends "
                             "inside a quoted field, mid-row (an interrupted copy?)")
    if fields is None or (len(fields) >= len(header) and not _ends_with(path, b",")):
        return None
    n = len(fields) - _ends_with(path, b",")  # after a comma: its field is cut to nothing
    return start, (f"{path}: row id {fields[0]} (line {start}) is cut off: it ends after "
                   f"{n} of {len(header)} columns, before column '{header[n]}' (an "
                   "interrupted copy?)")


def _first_bad_byte(path: Path) -> str:
    """Where a file stops being UTF-8 (pandas reports offsets inside its read chunk)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return f"line {line}, byte {err.start}: {err.reason}"
    return "a decoding error"


def _header_hint(path: Path) -> str:
    """What the first line of a file looks like: its delimiter and columns."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip("\ufeff\r\n")
    sep = max((",", ";", "\t", "|"), key=header.count)
    return f"columns found in the header, split at {sep!r}: {header.split(sep)[:12]}"
