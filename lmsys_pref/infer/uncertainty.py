"""Which rows a model is least sure of: the margin between its two most probable classes,
smallest first. Adaptive swap TTA scores those rows a second time, swapped; a cascade's later
stages score them with another model. Written on the probability arrays' shape, so two classes
(WSDM Cup: A or B) and three (LMSYS: A, B or tie) rank alike. Torch-free.
"""
from __future__ import annotations

import math

import numpy as np


def margins(probs: np.ndarray) -> np.ndarray:
    """Per row, the top class probability minus the second one (0 = undecided, 1 = certain)."""
    top2 = np.sort(np.asarray(probs, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def share_of(n_rows: int, fraction: float) -> int:
    """Rows of `fraction` of `n_rows`, rounded up (any fraction > 0 of a row is one row)."""
    return min(n_rows, math.ceil(fraction * n_rows - 1e-9))


def least_certain(probs: np.ndarray, fraction: float) -> np.ndarray:
    """Positions of the `share_of(n, fraction)` rows with the smallest margins, the least
    certain first (equal margins keep the rows' order)."""
    order = np.argsort(margins(probs), kind="stable")
    return order[:share_of(len(order), fraction)]
