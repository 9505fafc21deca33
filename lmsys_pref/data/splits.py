"""Splits of the labelled rows: the holdout and the k folds every baseline and the blend use.

Stratified by label, and by language where the data has a `language` column (the WSDM Cup's
rows: every fold holds each language in its share, as its winners' per-language CV did;
`strata`); with `group_by: prompt` (the default) rows that share a prompt stay on one side of
every split (sklearn's `StratifiedGroupKFold`), so a model is never scored on a prompt it
trained on. When every prompt is unique the grouped splits equal the ungrouped ones.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from .frames import DataError

GROUP_BY = ("prompt", "none")
MIN_PER_STRATUM = 10  # a language with fewer rows of some class joins the shared "rare" stratum


def strata(df: pd.DataFrame) -> np.ndarray:
    """What a split stratifies on, one int per row: the label, or with a `language` column the
    (label, language) pair. Languages with fewer than `MIN_PER_STRATUM` rows of some class share
    one stratum, so a rare language never leaves a stratum too small to split."""
    labels = np.asarray(df["label"], dtype=int)
    if "language" not in df.columns:
        return labels
    lang = df["language"].fillna("").astype(str).to_numpy()
    table = pd.crosstab(lang, labels)
    common = set(table.index[(table >= MIN_PER_STRATUM).all(axis=1)])
    lang = np.where(np.isin(lang, list(common)), lang, "")
    return pd.factorize(pd.Series(labels).astype(str) + "|" + lang)[0].astype(np.int64)


def fold_groups(df: pd.DataFrame, group_by: str = "prompt") -> np.ndarray | None:
    """Group ids for group-aware splits: rows in one group always land on the same side.

    Args:
        df: rows with a `prompt` column (decoded turn lists, as `load_split` returns, or text).
        group_by: 'prompt' = rows with the same prompt text (every turn) share a group;
            'none' = no groups (label-stratified splits only).

    Returns:
        An int array of group ids, one per row, or None for 'none'.
    """
    if group_by == "none":
        return None
    if group_by != "prompt":
        raise ValueError(f"group_by: unknown value {group_by!r}; expected one of {GROUP_BY}")
    if "prompt" not in df.columns:
        raise DataError(f"group_by 'prompt': the frame has no 'prompt' column ({list(df.columns)})")
    keys = df["prompt"].map(
        lambda t: json.dumps(list(t)) if isinstance(t, (list, tuple, np.ndarray)) else str(t))
    return pd.factorize(keys)[0].astype(np.int64)


def _grouped(groups: Sequence[int] | None, n: int) -> np.ndarray | None:
    """`groups` as an array when some group holds more than one row, else None: with singleton
    groups a group-aware split equals the plain stratified one, so the ungrouped (better
    stratified, and unchanged since before groups existed) split is used."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups: {len(groups)} entries for {n} rows")
    return groups if len(np.unique(groups)) < n else None


def holdout(labels: Sequence[int], val_frac: float = 0.2, seed: int = 42,
            groups: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/validation row positions (the poster's 80/20 split).

    With `groups` (see `fold_groups`) no group is split: the validation rows are the first fold
    of a seeded `StratifiedGroupKFold` with round(1 / val_frac) folds, so their share is
    1 / round(1 / val_frac) (0.2 -> 20%, 0.15 -> 1/7).
    """
    idx = np.arange(len(labels))
    groups = _grouped(groups, len(labels))
    if groups is None:
        tr, va = train_test_split(idx, test_size=val_frac, random_state=seed, stratify=labels)
        return np.sort(tr), np.sort(va)
    if not 0 < val_frac < 1:
        raise ValueError(f"val_frac must be between 0 and 1, got {val_frac}")
    return kfold(labels, max(2, round(1 / val_frac)), seed, groups)[0]


def kfold(labels: Sequence[int], n_splits: int = 5, seed: int = 42,
          groups: Sequence[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified k-fold row positions (the paper's 5-fold CV).

    With `groups` (see `fold_groups`) a seeded `StratifiedGroupKFold` keeps every group inside
    one fold; when every group is a single row the folds equal the ungrouped ones.
    """
    groups = _grouped(groups, len(labels))
    x = np.zeros(len(labels))
    if groups is None:
        return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
                    .split(x, labels))
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in sgkf.split(x, labels, groups)]
