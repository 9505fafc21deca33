"""The run-folder contract shared by every baseline.

OUT_DIR/
  submission.csv   id + three probabilities, the test ids in test order
  metrics.json     cv_log_loss or val_log_loss, accuracy, n_train, n_test, seconds, ...
  oof.csv|val.csv  id + label + three probabilities for the rows scored out of fold
  model/           all `predict` needs; model/lmsys_pref.json names the kind and config
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import submission
from .data import LABEL_COLS

MODEL_META = "lmsys_pref.json"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(path: str | Path, obj: Any) -> Path:
    """Write JSON (numpy scalars and paths converted, NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    return path


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def probs_frame(ids: Sequence[int], probs: np.ndarray, labels: Sequence[int] | None = None
                ) -> pd.DataFrame:
    """id (+ label) + the three probability columns."""
    df = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(LABEL_COLS))
    if labels is not None:
        df.insert(0, "label", np.asarray(labels, dtype=int))
    df.insert(0, "id", np.asarray(ids, dtype=np.int64))
    return df


def read_probs(path: str | Path) -> pd.DataFrame:
    """Read an oof/val/submission file written by this module."""
    return pd.read_csv(path)


def write_outputs(out_dir: str | Path, *, test_ids: Sequence[int] | None,
                  test_probs: np.ndarray | None, metrics: dict, oof: pd.DataFrame | None = None,
                  oof_name: str = "oof.csv") -> Path:
    """Write submission.csv, metrics.json and oof.csv (or val.csv) into a run folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if test_ids is not None:
        submission.write(test_ids, test_probs, out / "submission.csv")
    if oof is not None:
        oof.to_csv(out / oof_name, index=False)
    save_json(out / "metrics.json", metrics)
    return out


def write_model_meta(model_dir: str | Path, kind: str, config: dict, **extra: Any) -> Path:
    """Mark a folder as a saved model of `kind` so `predict.load_predictor` can find its loader."""
    return save_json(Path(model_dir) / MODEL_META, {"kind": kind, "config": config, **extra})


def read_model_meta(model_dir: str | Path) -> dict:
    """The metadata of a saved model; accepts a run folder or its model/ subfolder."""
    model_dir = resolve_model_dir(model_dir)
    return load_json(model_dir / MODEL_META)


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder's model/ or the model folder itself."""
    path = Path(path)
    if (path / MODEL_META).exists():
        return path
    if (path / "model" / MODEL_META).exists():
        return path / "model"
    raise FileNotFoundError(f"{path}: no {MODEL_META} here or in {path / 'model'}; "
                            "is it the OUT_DIR of a train run?")
