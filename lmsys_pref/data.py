"""Loading, validating and reshaping competition data.

After `load_split` every text column (`prompt`, `response_a`, `response_b`) holds a Python list
of clean strings, one per conversation turn, and a labelled frame has an integer `label` column
(0 = model_a wins, 1 = model_b wins, 2 = tie). Every later stage relies on that shape.

Bad input is a `DataError` naming the file, the row id where there is one, and the column:
ids must be integers (the competition's are; `row_30614122` is an error, not an opaque string),
label cells must be 0 or 1 (an empty or NaN cell is an error), files are UTF-8 and
comma-separated, and a split must hold at least one row (a header-only test.csv fails at load
time, before any training, in every baseline).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("lmsys_pref")

TEXT_COLS = ("prompt", "response_a", "response_b")
LABEL_COLS = ("winner_model_a", "winner_model_b", "winner_tie")
CLASS_NAMES = ("a", "b", "tie")
TEST_COLS = ("id",) + TEXT_COLS
TRAIN_COLS = ("id", "model_a", "model_b") + TEXT_COLS + LABEL_COLS
# Pairs exchanged by `swap`; every A/B-specific column a frame may carry is listed here once.
SWAP_PAIRS = (("response_a", "response_b"), ("model_a", "model_b"),
              ("winner_model_a", "winner_model_b"))


class DataError(ValueError):
    """Bad input: the message names the file, the row id and the column."""


def clean_text(text: str) -> str:
    """Repair broken unicode so tokenizers and `json.dumps` accept the text.

    The real data holds lone UTF-16 surrogates (halves of emoji cut by the crawler); a
    surrogate-pass round trip re-joins valid pairs and turns lone halves into U+FFFD.
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def decode_turns(value, *, where: str = "", lenient: bool = False) -> list[str]:
    """Decode one JSON list cell into a list of turn strings.

    `null` as the whole cell means no turns; `null` inside the list is an empty turn.

    Args:
        value: the raw cell (a JSON string, or an already decoded list).
        where: "file, row id, column" for the error message.
        lenient: keep undecodable text as a single turn instead of raising.
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        turns = list(value)
    else:
        if _is_missing(value):  # an empty cell reads like JSON `null`: no turns
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
        raise DataError(f"{where}: expected a JSON list, got {type(turns).__name__}")
    return [clean_text(t) if isinstance(t, str) else ("" if t is None else clean_text(str(t)))
            for t in turns]


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (UTF-8, comma-separated) or parquet file as-is (no decoding; ids as read).

    Raises:
        FileNotFoundError: no such file.
        DataError: not UTF-8, not a parsable CSV (e.g. semicolon-separated) or parquet file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"id": str}, keep_default_na=False, encoding="utf-8",
                           na_values={c: [""] for c in TEXT_COLS + LABEL_COLS})
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text ({_first_bad_byte(path)}); save the file as "
                        "UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a comma-separated file like the competition's "
                        f"({_header_hint(path)}; pandas: {str(err).strip()})") from None
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise DataError(f"{path}: not a readable {path.suffix} file ({err})") from None


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


def _check_columns(df: pd.DataFrame, needed: Sequence[str], name: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and any(s in str(df.columns[0]) for s in (";", "\t", "|")):
            hint = " (one column: the file is not comma-separated)"
        raise DataError(f"{name}: missing column(s) {missing}; found {list(df.columns)[:12]}"
                        f"{hint}")


def check_ids(df: pd.DataFrame, name: str) -> pd.Series:
    """The id column as int64; non-integer, empty or duplicate ids are a `DataError`."""
    raw = df["id"]
    ids = pd.to_numeric(raw, errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        pos = int(bad.to_numpy().argmax())
        raise DataError(f"{name}: data row {pos + 1}: column 'id' is {raw.iloc[pos]!r}, expected "
                        f"an integer id ({int(bad.sum())} such row(s))")
    ids = ids.astype(np.int64)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"{name}: duplicate id(s) {dup.head(5).tolist()} in column 'id'")
    return ids


def _check_labels(df: pd.DataFrame, name: str) -> np.ndarray:
    raw = df[list(LABEL_COLS)]
    values = raw.apply(pd.to_numeric, errors="coerce")
    empty = values.isna().to_numpy()
    if empty.any():
        r, c = divmod(int(empty.argmax()), len(LABEL_COLS))
        cell = raw.iloc[r, c]
        shown = "empty" if _is_missing(cell) else repr(cell)
        raise DataError(f"{name}: row id {df['id'].iloc[r]}: column '{LABEL_COLS[c]}' is {shown}, "
                        f"expected 0 or 1 ({int(empty.any(1).sum())} row(s) with an empty or "
                        "non-numeric label)")
    onehot = values.to_numpy()
    bad = ~((onehot == 0) | (onehot == 1)).all(1) | (onehot.sum(1) != 1)
    if bad.any():
        row = df.loc[bad].iloc[0]
        raise DataError(f"{name}: row id {row['id']}: columns {list(LABEL_COLS)} are not one-hot "
                        f"({[float(row[c]) for c in LABEL_COLS]}); {int(bad.sum())} such row(s)")
    return onehot.argmax(1)


def load_split(path: str | Path, *, labelled: bool | None = None,
               lenient: bool = False) -> pd.DataFrame:
    """Load and validate one split (train or test) from CSV or parquet.

    Args:
        path: the file.
        labelled: require the winner columns (True), ignore them (False) or use them when
            present (None).
        lenient: repair undecodable cells instead of raising; repaired rows are logged by id.

    Returns:
        The frame with decoded text columns and, when labelled, an int `label` column.

    Raises:
        DataError: naming the file, the row id and the column of the first problem.
    """
    name = str(path)
    df = read_table(path)
    _check_columns(df, TEST_COLS, name)
    has_labels = all(c in df.columns for c in LABEL_COLS)
    if labelled and not has_labels:
        _check_columns(df, LABEL_COLS, name)
    if df.empty:
        raise DataError(f"{name}: no data rows (only a header); a split needs at least one row")
    df = df.reset_index(drop=True)
    df["id"] = check_ids(df, name)
    for col in TEXT_COLS:
        repaired, out = [], []
        missing = df.loc[df[col].map(_is_missing), "id"].tolist()
        if missing:
            log.warning("%s: %d empty cell(s) in column %r read as no turns: ids %s", name,
                        len(missing), col, missing[:20])
        for rid, value in zip(df["id"].tolist(), df[col].tolist()):
            try:
                out.append(decode_turns(value, where=f"{name}: row id {rid}, column '{col}'"))
            except DataError:
                if not lenient:
                    raise
                repaired.append(rid)
                out.append(decode_turns(value, lenient=True))
        if repaired:
            log.warning("%s: repaired %d row(s) in column %r: ids %s", name, len(repaired), col,
                        repaired[:20])
        df[col] = pd.Series(out, index=df.index, dtype=object)
    for col in ("model_a", "model_b"):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    if has_labels and labelled is not False:
        df["label"] = _check_labels(df, name)
    return df


def load_competition(data_dir: str | Path, *, lenient: bool = False, max_train_rows: int = 0,
                     max_test_rows: int = 0) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Load `train.(csv|parquet)` and, when present, `test.(csv|parquet)` from a folder.

    `max_train_rows` / `max_test_rows` keep only the first N rows of each (0 = all), for quick
    runs; the whole file is still validated.
    """
    data_dir = Path(data_dir)
    train = load_split(find_file(data_dir, "train"), labelled=True, lenient=lenient)
    test_path = find_file(data_dir, "test", required=False)
    test = load_split(test_path, labelled=False, lenient=lenient) if test_path else None
    if max_train_rows:
        train = train.iloc[:max_train_rows].reset_index(drop=True)
    if test is not None and max_test_rows:
        test = test.iloc[:max_test_rows].reset_index(drop=True)
    return train, test


def find_file(data_dir: str | Path, stem: str, required: bool = True) -> Path | None:
    """Return `data_dir/stem.csv` or `.parquet`, whichever exists."""
    for ext in (".csv", ".parquet"):
        p = Path(data_dir) / f"{stem}{ext}"
        if p.exists():
            return p
    if required:
        raise FileNotFoundError(f"{data_dir}: no {stem}.csv or {stem}.parquet")
    return None


def swap(obj):
    """Exchange the roles of A and B.

    Works on a data frame (responses, models, winner columns and `label` 0<->1) and on an
    (n, 3) probability array (columns a<->b). The same function serves training augmentation,
    test-time augmentation and the position-bias probe; `swap(swap(x))` equals `x`.
    """
    if isinstance(obj, np.ndarray):
        return obj[..., [1, 0, 2]]
    out = obj.copy()
    for a, b in SWAP_PAIRS:
        if a in out.columns and b in out.columns:
            out[a], out[b] = obj[b].copy(), obj[a].copy()
    if "label" in out.columns:
        out["label"] = obj["label"].map({0: 1, 1: 0, 2: 2}).astype(obj["label"].dtype)
    return out


TTA_MODES = ("none", "swap", "swap_device")


def check_tta(mode) -> str:
    """The TTA mode, validated; None and False mean 'none', True means 'swap'."""
    if mode is None or mode is False:
        return "none"
    if mode is True:
        return "swap"
    if mode not in TTA_MODES:
        raise ValueError(f"tta: unknown mode {mode!r}; expected one of {TTA_MODES}")
    return mode


def combine_swapped(p: np.ndarray, p_swapped: np.ndarray) -> np.ndarray:
    """Swap TTA: the mean of the direct probabilities and the swapped rows' mapped back to A/B
    order; symmetric by construction (scoring the swapped rows gives the swapped result)."""
    p, p_swapped = np.asarray(p, dtype=np.float64), np.asarray(p_swapped, dtype=np.float64)
    if p.shape != p_swapped.shape:
        raise ValueError(f"swap TTA: shapes differ {p.shape} vs {p_swapped.shape}")
    return (p + swap(p_swapped)) / 2


def augment_with_swap(df: pd.DataFrame) -> pd.DataFrame:
    """Return the rows followed by their swapped copies (ids repeat; `swapped` marks copies)."""
    return pd.concat([df.assign(swapped=False), swap(df).assign(swapped=True)],
                     ignore_index=True)


def onehot(labels: Iterable[int]) -> np.ndarray:
    """Class indices (0/1/2) to an (n, 3) one-hot float array."""
    return np.eye(3)[np.asarray(list(labels), dtype=int)]


def tile(df: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    """Repeat a frame to `n_rows` rows with fresh unique ids (for speed tests at real scale)."""
    reps = -(-n_rows // len(df))
    out = pd.concat([df] * reps, ignore_index=True).iloc[:n_rows].copy()
    out["id"] = np.arange(len(out), dtype=np.int64)
    return out.reset_index(drop=True)


def join_turns(turns: Sequence[str], sep: str = "\n") -> str:
    """All turns of one cell as one string."""
    return sep.join(turns)
