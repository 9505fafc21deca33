"""Post-rules the Kaggle winners used: rows whose answers are empty or identical get fixed
probabilities, learned from the training data's rows of the same kind (not hard-coded).

Rules (mutually exclusive, checked in this order):
- "identical": both answers are the same list of turns (both empty included).
- "a_empty": answer A is empty (no turn with text), B is not.
- "b_empty": answer B is empty, A is not.

The estimate is symmetric under `data.swap`: "identical" pools a and b wins, and "b_empty" is
"a_empty" seen from the other side, so both are fitted from the pooled rows. Counts get an
additive prior so a rare case does not produce 0 or 1.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data
from . import contract as runs

FILENAME = "postrules.json"
RULES = ("identical", "a_empty", "b_empty")


def _empty(turns) -> bool:
    return not any(t is not None and str(t).strip() for t in turns)


def match(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean row masks of each rule (a row matches at most one)."""
    a, b = df["response_a"].tolist(), df["response_b"].tolist()
    identical = np.array([list(x) == list(y) for x, y in zip(a, b)], dtype=bool)
    a_empty = np.array([_empty(x) for x in a], dtype=bool)
    b_empty = np.array([_empty(y) for y in b], dtype=bool)
    return {"identical": identical, "a_empty": a_empty & ~b_empty & ~identical,
            "b_empty": b_empty & ~a_empty & ~identical}


def fit(train_df: pd.DataFrame, prior: float = 1.0, min_rows: int = 5) -> dict:
    """Class probabilities of each rule's rows in labelled data.

    Args:
        train_df: labelled rows (with `label`) as `data.load_split` returns them.
        prior: pseudo-count added to each class.
        min_rows: rules seen in fewer rows are left out (the model's own scores stay).

    Returns:
        `{rule: {"probs": [p_a, p_b, p_tie], "rows": n}}` for the rules that have enough rows.
    """
    if "label" not in train_df.columns:
        raise ValueError("postrules.fit: the frame has no 'label' column (labelled rows needed)")
    masks = match(train_df)
    labels = train_df["label"].to_numpy()
    n_classes = len(data.prob_columns(train_df)) or 3  # 2 for a task without ties
    counts = {k: np.bincount(labels[m], minlength=n_classes).astype(float)
              for k, m in masks.items()}
    counts["identical"] = (counts["identical"] + data.swap(counts["identical"])) / 2
    one_side = counts["a_empty"] + data.swap(counts["b_empty"])  # as if A were the empty one
    counts["a_empty"], counts["b_empty"] = one_side, data.swap(one_side)
    rows = {"identical": int(masks["identical"].sum()),
            "a_empty": int(masks["a_empty"].sum() + masks["b_empty"].sum())}
    rows["b_empty"] = rows["a_empty"]
    rules = {}
    for name in RULES:
        if rows[name] >= min_rows:
            c = counts[name] + prior
            rules[name] = {"probs": (c / c.sum()).tolist(), "rows": rows[name]}
    return rules


def apply(df: pd.DataFrame, probs: np.ndarray, rules: dict) -> np.ndarray:
    """A copy of `probs` with the rows matching a rule set to that rule's probabilities."""
    probs = np.array(probs, dtype=np.float64, copy=True)
    if len(probs) != len(df):
        raise ValueError(f"postrules.apply: {len(probs)} predictions for {len(df)} rows")
    for name, mask in match(df).items():
        if name in rules and mask.any():
            probs[mask] = np.asarray(rules[name]["probs"], dtype=np.float64)
    return probs


def count(df: pd.DataFrame, rules: dict) -> dict[str, int]:
    """How many rows of `df` each rule changes."""
    return {name: int(mask.sum()) for name, mask in match(df).items() if name in rules}


def save(rules: dict, model_dir: str | Path) -> Path:
    """Store rules next to a saved model (read back by `load` and `make predict`)."""
    return runs.save_json(Path(model_dir) / FILENAME, rules)


def load(model_dir: str | Path) -> dict:
    """Rules saved by `save` in a model folder (or a run folder's model/)."""
    return json.loads((runs.resolve_model_dir(model_dir) / FILENAME).read_text())
