"""JSON files written whole or not at all, read back with a named error.

`save_json` converts what runs produce (numpy scalars and arrays, paths, NaN as null) and writes
atomically (`files.atomic`); `load_json` names the file of a broken one (`DataError`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_text
from .tables import DataError


def jsonable(obj: Any) -> Any:
    """`obj` with numpy values, paths and non-finite floats made JSON-able (NaN -> null)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (numpy scalars and paths converted, NaN as null)."""
    return write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def load_json(path: str | Path) -> Any:
    """Read a JSON file; a broken one is a `DataError` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{path}: not valid JSON ({err})") from None
