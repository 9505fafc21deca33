"""The XGBoost baseline: hand-made features of a prompt and its answers (`features`), the
booster with k-fold OOF, swap augmentation and swap TTA (`booster`), and what each booster
trains on with per-fold files and teachers (`levers`), a k-fold run's fold boosters as one
predictor (`folds`). Torch-free.

This face gives the names other layers use (`xgb.fit`, `xgb.load_predictor`, ...).
"""
from .booster import (
    BOOSTER,
    Features,
    XGBPredictor,
    cross_validate,
    fit,
    fit_folds,
    load_booster,
    load_predictor,
    plot_importance,
    predict_booster,
    train_booster,
    weighted_matrix,
)
from .folds import XGBOutOfFold

__all__ = ["BOOSTER", "Features", "XGBOutOfFold", "XGBPredictor", "cross_validate", "fit",
           "fit_folds", "load_booster", "load_predictor", "plot_importance", "predict_booster",
           "train_booster", "weighted_matrix"]
