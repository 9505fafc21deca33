"""A k-fold XGBoost run's fold boosters (model/fold_k/, model/held_out.json) as one predictor of
its labelled rows, each scored by the fold that never trained on it. Torch-free."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import runs
from ..files.tables import as_id_text
from .booster import load_predictor


class XGBOutOfFold:
    """A k-fold run's labelled rows, each scored by the fold booster that never trained on it
    (model/held_out.json): `infer.loaders.load_predictor(out_of_fold=True)`, the bias probes.
    Rows of ids no fold held out raise a `ValueError` naming them."""

    def __init__(self, model_dir: str | Path, **overrides: Any):
        model_dir = runs.resolve_model_dir(model_dir)
        held = runs.load_json(model_dir / runs.HELD_OUT)
        self.fold_of = {i: name for name, ids in held.items() for i in as_id_text(ids)}
        self.folds = {name: load_predictor(model_dir / name, **overrides) for name in held}
        self.model_dir, self.stats = model_dir, {}

    def predict_proba(self, df: pd.DataFrame, tta: str | None = None) -> np.ndarray:
        names = np.array([self.fold_of.get(i, "") for i in as_id_text(df["id"])])
        if (names == "").any():
            raise ValueError(f"{self.model_dir}: id(s) {df['id'][names == ''].head(5).tolist()}"
                             " were held out of no fold")
        out = None
        for name in sorted(set(names)):
            rows = np.flatnonzero(names == name)
            probs = self.folds[name].predict_proba(df.iloc[rows], tta)
            out = np.zeros((len(df), probs.shape[1])) if out is None else out  # the task's
            out[rows] = probs
        self.stats = {"rows": len(df), "folds": len(set(names))}
        return out
