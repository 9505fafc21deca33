"""Load any saved model by the kind its folder names, importing torch only for a torch model.

This module itself is torch-free: each loader is a "module:callable" string imported on use, so
`predict` and the bias probes score an XGBoost model without loading torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .. import runs

# kind -> "module:callable(model_dir, **overrides) -> predictor"
LOADERS = {
    "xgb": "lmsys_pref.xgb.booster:load_predictor",
    "lm": "lmsys_pref.infer.predictor:load_predictor",
    "encoder": "lmsys_pref.infer.predictor:load_predictor",
}
OUT_OF_FOLD = "lmsys_pref.infer.predictor:OutOfFold"  # a k-fold LM run's rows, fold by fold
OUT_OF_FOLD_BY_KIND = {"xgb": "lmsys_pref.xgb.folds:XGBOutOfFold"}  # other kinds: OUT_OF_FOLD
TRANSFORMER_KINDS = ("lm", "encoder")  # scored by the engine: devices, budget, adaptive TTA


def tta_for(kind: str, tta: str | None) -> str | None:
    """The TTA mode to ask a predictor of `kind` for. Off the engine, 'swap_device' is 'swap'
    (one device) and 'adaptive' is full 'swap': XGBoost scores both orders of every row in
    seconds, so a second pass on only some rows would save nothing worth its noise."""
    if tta in ("swap_device", "adaptive") and kind not in TRANSFORMER_KINDS:
        return "swap"
    return tta


def _imported(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def has_fold_models(model_dir: str | Path) -> bool:
    """Whether a saved model keeps one model per fold with the ids each never trained on."""
    return (runs.resolve_model_dir(model_dir) / runs.HELD_OUT).exists()


def load_predictor(model_dir: str | Path, out_of_fold: bool = False, **overrides
                   ) -> runs.Predictor:
    """Load any saved model as a `runs.Predictor` (`predict_proba(df, tta=None) -> (n, 3)`).

    Args:
        model_dir: a run folder or its `model/`.
        out_of_fold: for a k-fold run (`has_fold_models`: transformer or XGBoost), score each
            training row with the fold model that never trained on it, as the bias probes need.
        **overrides: scoring settings the loader accepts (devices, dtype, max_length, ...).
    """
    model_dir = runs.resolve_model_dir(model_dir)
    kind = runs.read_model_meta(model_dir)["kind"]
    if out_of_fold and has_fold_models(model_dir):
        return _imported(OUT_OF_FOLD_BY_KIND.get(kind, OUT_OF_FOLD))(model_dir, **overrides)
    if kind not in LOADERS:
        raise ValueError(f"{model_dir}: unknown model kind {kind!r}; known {sorted(LOADERS)}")
    return _imported(LOADERS[kind])(model_dir, **overrides)
