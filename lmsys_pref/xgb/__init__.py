"""The XGBoost baseline: hand-made features of a prompt and its answers (`features`) and the
booster with k-fold OOF, swap augmentation and swap TTA (`booster`). Torch-free.

This face gives the names other layers use (`xgb.fit`, `xgb.load_predictor`, ...).
"""
from .booster import (
    BOOSTER,
    Features,
    XGBPredictor,
    cross_validate,
    fit,
    load_booster,
    load_predictor,
    plot_importance,
    predict_booster,
    train_booster,
    weighted_matrix,
)

__all__ = ["BOOSTER", "Features", "XGBPredictor", "cross_validate", "fit", "load_booster",
           "load_predictor", "plot_importance", "predict_booster", "train_booster",
           "weighted_matrix"]
