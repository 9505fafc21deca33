"""Configuration of the XGBoost feature baseline."""
from __future__ import annotations

import dataclasses
from typing import Literal

from . import BaseConfig


@dataclasses.dataclass
class XGBConfig(BaseConfig):
    """Hand-made features + gradient-boosted trees, k-fold OOF and a final fit."""

    kind = "xgb"
    NOT_TRAINING = ("out_dir", "tta", "n_jobs")

    data_dir: str = "data/sample"
    """Folder with train.csv (labelled) and test.csv (csv or parquet)."""
    out_dir: str = "runs/xgb"
    """Run folder: submission.csv, metrics.json, oof.csv, model/."""
    n_folds: int = 5
    """Stratified folds for out-of-fold predictions; 0 or 1 skips CV (final fit only)."""
    group_by: Literal["prompt", "none"] = "prompt"
    """Keep rows that share a prompt on one side of every split (the folds and the early-stopping
    rows; sklearn's StratifiedGroupKFold): 'prompt', or 'none' (stratified by label only)."""
    seed: int = 42
    """Seed of the fold split and of XGBoost."""
    swap_augment: bool = True
    """Train on every row plus its A/B-swapped copy (labels swapped)."""
    tta: Literal["none", "swap"] = "swap"
    """Test-time augmentation: 'none' or 'swap' (average with the mapped-back swapped scores)."""
    max_train_rows: int = 0
    """Use only the first N training rows (0 = all); for quick runs and tests."""
    lenient: bool = False
    """Repair undecodable cells (logged by id) instead of failing."""
    n_estimators: int = 600
    """Boosting rounds (upper bound when early stopping is on)."""
    learning_rate: float = 0.03
    """Shrinkage per round."""
    max_depth: int = 5
    """Tree depth."""
    min_child_weight: float = 5.0
    """Minimum hessian per leaf; higher is more conservative."""
    subsample: float = 0.8
    """Row subsampling per tree."""
    colsample_bytree: float = 0.6
    """Feature subsampling per tree."""
    reg_lambda: float = 2.0
    """L2 regularisation of leaf weights."""
    early_stopping_rounds: int = 50
    """Stop a fold after this many rounds without OOF improvement (0 = off); the final fit uses
    the mean best round of the folds."""
    n_jobs: int = 0
    """XGBoost threads (0 = all cores)."""
