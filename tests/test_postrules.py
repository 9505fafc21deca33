"""Post-rules: empty / identical answers get probabilities learned from training rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import data
from lmsys_pref.runs import postrules


def frame(pairs, labels=None) -> pd.DataFrame:
    df = pd.DataFrame({"id": np.arange(len(pairs)), "prompt": [["q"]] * len(pairs),
                       "response_a": [a for a, _ in pairs], "response_b": [b for _, b in pairs]})
    if labels is not None:
        df["label"] = labels
    return df


def test_match_is_exclusive_and_handles_empty_turns():
    df = frame([(["x"], ["x"]), ([], []), ([""], ["y"]), (["y"], ["  "]), (["a"], ["b"]),
                ([None, ""], ["z"])])
    m = postrules.match(df)
    assert m["identical"].tolist() == [True, True, False, False, False, False]
    assert m["a_empty"].tolist() == [False, False, True, False, False, True]
    assert m["b_empty"].tolist() == [False, False, False, True, False, False]


def test_fit_learns_from_the_data_not_constants():
    # identical answers: 6 ties, 2 a, 2 b; A empty: B wins 7 of 8; B empty: A wins 3 of 4
    pairs = [(["s"], ["s"])] * 10 + [([], ["t"])] * 8 + [(["u"], [])] * 4 + [(["a"], ["b"])] * 5
    labels = [2] * 6 + [0, 0, 1, 1] + [1] * 7 + [2] + [0] * 3 + [2] + [0] * 5
    rules = postrules.fit(frame(pairs, labels), prior=0.0)
    np.testing.assert_allclose(rules["identical"]["probs"], [0.2, 0.2, 0.6])
    # pooled from both sides: the empty answer loses 10 of 12 rows, ties 2
    np.testing.assert_allclose(rules["a_empty"]["probs"], [0, 10 / 12, 2 / 12])
    np.testing.assert_allclose(rules["b_empty"]["probs"], [10 / 12, 0, 2 / 12])
    assert rules["identical"]["rows"] == 10 and rules["a_empty"]["rows"] == 12
    smoothed = postrules.fit(frame(pairs, labels), prior=1.0)
    assert min(smoothed["a_empty"]["probs"]) > 0
    assert "b_empty" not in postrules.fit(frame(pairs[:10] + pairs[-5:], labels[:10] + labels[-5:]))


def test_rules_are_swap_symmetric(quirks_dir):
    train = data.load_split(quirks_dir / "train.csv")
    rules = postrules.fit(train, min_rows=1)
    swapped = postrules.fit(data.swap(train), min_rows=1)
    assert set(rules) == set(swapped) == {"a_empty", "b_empty", "identical"}
    for name in rules:
        np.testing.assert_allclose(rules[name]["probs"], swapped[name]["probs"])
    test = data.load_split(quirks_dir / "test.csv")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), len(test))
    out = postrules.apply(test, probs, rules)
    out_sw = postrules.apply(data.swap(test), data.swap(probs), rules)
    np.testing.assert_allclose(out_sw, data.swap(out))


def test_apply_changes_only_matching_rows(quirks_dir):
    test = data.load_split(quirks_dir / "test.csv")
    rules = {"identical": {"probs": [0.1, 0.1, 0.8], "rows": 50}}
    probs = np.full((len(test), 3), 1 / 3)
    out = postrules.apply(test, probs, rules)
    hit = postrules.match(test)["identical"]
    assert hit.any() and (~hit).any()
    np.testing.assert_allclose(out[hit], [[0.1, 0.1, 0.8]] * hit.sum())
    np.testing.assert_allclose(out[~hit], probs[~hit])
    np.testing.assert_allclose(probs, 1 / 3)  # input untouched
    with pytest.raises(ValueError, match="predictions for"):
        postrules.apply(test, probs[:-1], rules)


def test_save_load_roundtrip(tmp_path):
    rules = {"identical": {"probs": [0.25, 0.25, 0.5], "rows": 7}}
    (tmp_path / "lmsys_pref.json").write_text('{"kind": "xgb", "config": {}}')
    postrules.save(rules, tmp_path)
    assert postrules.load(tmp_path) == rules


def test_real_identical_answers_are_mostly_ties(arena_dir):
    rules = postrules.fit(data.load_split(arena_dir / "train.csv"))
    p = rules["identical"]["probs"]
    assert p[0] == pytest.approx(p[1]) and p[2] > 0.6
