"""Public LLM-judge bias sets (LLMBar, EvalBiasBench) in the competition frame, and their scores.

Both sets hold pairwise comparisons with a binary gold label (no ties). Each subset becomes a
labelled frame shaped like `data.load_split` output, so any saved model scores it unchanged.
Scores follow LLMBar's own measures: accuracy averaged over both response orders and positional
agreement (the same verdict after swapping A and B).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data

EVALBIASBENCH = "evalbiasbench_biasbench.json"
LLMBAR = "llmbar"
REFERENCE_JUDGE = "GPT-4/Vanilla"  # LLMBar's headline judge, shown next to our scores


def to_frame(items: list[dict], keys: tuple[str, str, str, str], name: str,
             id_start: int = 0) -> pd.DataFrame:
    """Pairs as a labelled competition frame (prompt/response lists of one turn, int label).

    Args:
        items: the JSON records.
        keys: record keys of (instruction, first output, second output, gold label 1|2).
        name: file and subset, for error messages.
        id_start: first row id (ids stay unique across subsets).

    Raises:
        DataError: a record lacks a key, holds a non-string text or a label other than 1/2.
    """
    rows = []
    for i, item in enumerate(items):
        where = f"{name}: record {i}"
        missing = [k for k in keys if k not in item]
        if missing:
            raise data.DataError(f"{where}: missing key(s) {missing}")
        texts = [item[k] for k in keys[:3]]
        bad = [k for k, t in zip(keys[:3], texts) if not isinstance(t, str)]
        if bad:
            raise data.DataError(f"{where}: key(s) {bad} are not strings")
        if item[keys[3]] not in (1, 2):
            raise data.DataError(f"{where}: key {keys[3]!r} is {item[keys[3]]!r}, expected 1 or 2")
        label = int(item[keys[3]]) - 1
        rows.append({"id": id_start + i, "model_a": "", "model_b": "",
                     "prompt": [data.clean_text(texts[0])],
                     "response_a": [data.clean_text(texts[1])],
                     "response_b": [data.clean_text(texts[2])],
                     "winner_model_a": int(label == 0), "winner_model_b": int(label == 1),
                     "winner_tie": 0, "label": label})
    return pd.DataFrame(rows)


def load(root: str | Path) -> dict[str, pd.DataFrame]:
    """Every subset found under `root` (the judge_bias folder), keyed by LLMBar's own subset path
    ('LLMBar/Natural', 'CaseStudy/Base_9', 'Processed/MT-Bench', ...) or 'EvalBiasBench/<bias>';
    an absent folder or file gives no entries."""
    root = Path(root)
    sets: dict[str, pd.DataFrame] = {}
    next_id = 0
    for path in sorted((root / LLMBAR).glob("**/dataset.json")):
        sub = path.parent.relative_to(root / LLMBAR).as_posix()
        df = to_frame(json.loads(path.read_text()), ("input", "output_1", "output_2", "label"),
                      f"{path}", next_id)
        sets[sub], next_id = df, next_id + len(df)
    ebb = root / EVALBIASBENCH
    if ebb.exists():
        for bias, items in json.loads(ebb.read_text()).items():
            df = to_frame(items, ("instruction", "response1", "response2", "label"),
                          f"{ebb} [{bias}]", next_id)
            sets[f"EvalBiasBench/{bias}"], next_id = df, next_id + len(df)
    return sets


def _percent(value) -> float | None:
    """'23 / 54 = 42.6%' or '48.1%' -> 0.426; anything else -> None."""
    match = re.search(r"([\d.]+)%\s*$", str(value))
    return float(match.group(1)) / 100 if match else None


def reference_scores(root: str | Path, judge: str = REFERENCE_JUDGE) -> dict[str, dict]:
    """LLMBar's published accuracy / positional agreement of `judge` per subset (if shipped)."""
    path = Path(root) / LLMBAR / "evaluator_statistics.json"
    if not path.exists():
        return {}
    stats = json.loads(path.read_text())
    out = {}
    for key, s in stats.items():
        sub, _, rest = key.partition("/evaluators/")
        if rest == f"{judge}/statistics.json":
            out[sub] = {"accuracy": _percent(s.get("correct_average")),
                        "agreement": _percent(s.get("equal"))}
    return out


def verdicts(probs: np.ndarray) -> np.ndarray:
    """Binary verdict per row (0 = A, 1 = B): the tie column is ignored, as gold has no ties."""
    return (probs[:, 1] > probs[:, 0]).astype(int)


def score_frame(predictor, df: pd.DataFrame) -> dict:
    """Accuracy in each order, their average, TTA accuracy and positional agreement."""
    p = predictor.predict_proba(df, tta="none")
    q = data.swap(predictor.predict_proba(data.swap(df), tta="none"))  # mapped back to A/B
    gold = df["label"].to_numpy()
    v1, v2 = verdicts(p), verdicts(q)
    acc1, acc2 = float((v1 == gold).mean()), float((v2 == gold).mean())
    return {"n": int(len(df)), "accuracy": (acc1 + acc2) / 2, "accuracy_original": acc1,
            "accuracy_swapped": acc2, "accuracy_tta": float((verdicts(p + q) == gold).mean()),
            "agreement": float((v1 == v2).mean())}


def score(predictor, root: str | Path, max_rows: int = 0, seed: int = 42) -> dict:
    """Score every subset under `root`; `{}` when the folder holds none.

    Returns:
        {"subsets": {name: scores (+ reference_accuracy/agreement)}, "overall": pooled scores,
         "reference_judge": name}.
    """
    sets = load(root)
    if not sets:
        return {}
    refs = reference_scores(root)
    subsets = {}
    for name, df in sets.items():
        if max_rows and len(df) > max_rows:
            df = df.sample(n=max_rows, random_state=seed).sort_index()
        res = score_frame(predictor, df)
        if name in refs:
            res.update({f"reference_{k}": v for k, v in refs[name].items()})
        subsets[name] = res
    total = sum(s["n"] for s in subsets.values())
    overall = {k: sum(s[k] * s["n"] for s in subsets.values()) / total
               for k in ("accuracy", "accuracy_tta", "agreement")}
    return {"subsets": subsets, "overall": {"n": total, **overall},
            "reference_judge": REFERENCE_JUDGE}
