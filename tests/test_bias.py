"""Bias probes: seeded transforms, golden position figures of known predictors, verbosity and
assertiveness shifts, the judge-bias sets, the CLI on a registered model and on XGBoost."""
import json

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import cli, data, runs
from lmsys_pref.commands import predict
from lmsys_pref.configs.bias import BiasConfig
from lmsys_pref.eval import bias, judge_sets


class Constant:
    """Always the same probabilities: pure first-position preference when p_a > p_b."""

    def __init__(self, p=(0.6, 0.3, 0.1)):
        self.p = np.asarray(p)

    def predict_proba(self, df, tta=None):
        out = np.tile(self.p, (len(df), 1))
        return (out + data.swap(out)) / 2 if tta == "swap" else out


class Longer:
    """Position-free: prefers the longer answer (softmax over log lengths)."""

    def predict_proba(self, df, tta=None):
        la, lb = (np.log1p(bias.chars(df[c])) for c in ("response_a", "response_b"))
        z = np.stack([la, lb, (la + lb) / 2], 1)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def train(quirks_dir):
    return data.load_split(quirks_dir / "train.csv")


def test_perturb_is_seeded_one_sided_and_pure(train):
    before = train.copy(deep=True)
    a, sa = bias.perturb(train, bias.add_filler, seed=3)
    b, sb = bias.perturb(train, bias.add_filler, seed=3)
    _, sc = bias.perturb(train, bias.add_filler, seed=4)
    assert a.equals(b) and (sa == sb).all() and (sa != sc).any()
    pd.testing.assert_frame_equal(train, before)  # input untouched
    for i, s in enumerate(sa):
        kept, changed = ("response_b", "response_a") if s == 0 else ("response_a", "response_b")
        assert a.at[i, kept] == train.at[i, kept]
        if any(t.strip() for t in train.at[i, changed]):
            assert a.at[i, changed] != train.at[i, changed]


def test_transforms_add_length_not_content():
    rng = np.random.default_rng(0)
    text = "Paris is the capital. It is large. It might rain, perhaps."
    rep = bias.repeat_sentences(text, rng, 3)
    assert rep.startswith(text) and len(rep) > len(text)
    assert set(bias._sentences(rep)) <= set(bias._sentences(text))
    fill = bias.add_filler(text, rng, 3)
    assert sum(f in fill for f in bias.FILLER) == 3
    md = bias.add_markdown("line one\nline two", rng, 0)
    assert md.startswith("## Answer") and "- line one\n- line two" in md
    conf = bias.add_confidence(text, rng, 1)
    assert sum(c in conf for c in bias.CONFIDENT) == 2 and text in conf
    hedged = "I think Paris is the capital. It might rain, possibly snow."
    assert bias.remove_hedges(hedged, rng, 1) == "Paris is the capital. It will rain, snow."
    assert bias.add_hedge(text, rng, 1) == f"{bias.HEDGE_PREFIX} {text}"


def test_position_golden_for_constant_predictor(train):
    res = bias.probe_position(Constant(), train, ("none", "swap"))
    none, swap = res["none"], res["swap"]
    assert none["flip_consistency"] == 0.0 and none["first_wins_share"] == 1.0
    assert none["mean_abs_gap"] == pytest.approx(0.3)
    assert none["mean_first_minus_second"] == pytest.approx(0.3)
    assert swap["flip_consistency"] == 1.0 and swap["mean_abs_gap"] == pytest.approx(0.0)
    labels = train["label"]
    assert none["human_first_wins_share"] == pytest.approx((labels == 0).sum() / (labels < 2).sum())


def test_position_free_predictor_is_flip_consistent(train):
    res = bias.probe_position(Longer(), train, ("none",))["none"]
    assert res["flip_consistency"] == 1.0 and res["mean_abs_gap"] == pytest.approx(0, abs=1e-12)


def test_verbosity_and_assertiveness_shifts(train):
    base = Longer().predict_proba(train)
    res = bias.probe_shift(Longer(), train, base, bias.VERBOSITY, seed=1, k=3)
    assert set(res) == {"repeat_sentences", "filler", "markdown"}
    for name, r in res.items():
        assert r["mean_shift"] > 0.01 and r["share_up"] == 1.0 and r["mean_log_len_change"] > 0
    flat = bias.probe_shift(Constant(), train, Constant().predict_proba(train),
                            bias.SELF_ENHANCEMENT, seed=1, k=1)
    assert all(r["mean_shift"] == 0.0 for r in flat.values() if r["n_changed"])
    assert flat["confident"]["n_changed"] > 30


def test_human_length_effect_golden():
    df = pd.DataFrame({"response_a": [["x" * 99], ["x" * 9], ["x" * 49], ["x" * 49]],
                       "response_b": [["x" * 9], ["x" * 99], ["x" * 49], ["x" * 9]],
                       "label": [0, 0, 2, 1]})
    res = bias.human_length_effect(df, data.onehot(df["label"]))
    # longer wins in row 0, loses in rows 1 and 3; row 2 (equal) counts A as longer, a tie
    assert res["human_longer_wins_share"] == pytest.approx(0.25)
    lr = np.log(100 / 10)
    x = np.array([lr, -lr, 0, np.log(50 / 10)])
    y = np.array([1, 1, 0.5, 0])
    want = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert res["human_slope"] == pytest.approx(want)
    assert res["model_slope"] == pytest.approx(want)  # the "model" here is the human label


def test_judge_frames_and_errors():
    items = [{"q": "Q", "o1": "first", "o2": "second", "y": 2}]
    df = judge_sets.to_frame(items, ("q", "o1", "o2", "y"), "f.json", id_start=10)
    row = df.iloc[0]
    assert row["id"] == 10 and row["label"] == 1 and row["response_a"] == ["first"]
    assert (row["winner_model_a"], row["winner_model_b"], row["winner_tie"]) == (0, 1, 0)
    with pytest.raises(data.DataError, match=r"f.json: record 0: key 'y' is 3"):
        judge_sets.to_frame([{**items[0], "y": 3}], ("q", "o1", "o2", "y"), "f.json")
    with pytest.raises(data.DataError, match=r"record 0: missing key\(s\) \['o2'\]"):
        judge_sets.to_frame([{"q": "Q", "o1": "a", "y": 1}], ("q", "o1", "o2", "y"), "f.json")


def test_judge_sets_load_and_score(judge_bias_dir):
    sets = judge_sets.load(judge_bias_dir)
    sizes = {k: len(v) for k, v in sets.items()}
    assert sizes["LLMBar/Natural"] == 100 and sizes["Processed/MT-Bench"] == 200
    assert sum(v for k, v in sizes.items() if k.startswith("EvalBiasBench/")) == 80
    ids = pd.concat(sets.values())["id"]
    assert ids.is_unique
    refs = judge_sets.reference_scores(judge_bias_dir)
    assert refs["LLMBar/Natural"] == {"accuracy": 0.955, "agreement": 0.95}
    res = judge_sets.score(Constant(), judge_bias_dir, max_rows=20)
    # always "A": right in exactly one of the two orders, never the same verdict after a swap
    assert len(res["subsets"]) == 19
    for name, s in res["subsets"].items():
        assert s["accuracy"] == pytest.approx(0.5) and s["agreement"] == 0.0, name
    assert res["subsets"]["LLMBar/Natural"]["reference_accuracy"] == 0.955


def test_judge_sets_absent_skip_cleanly(tmp_path, train):
    assert judge_sets.score(Constant(), tmp_path) == {}
    cfg = BiasConfig(judge_bias_dir=str(tmp_path / "absent"), max_rows=10)
    assert "judge_sets" not in bias.probe(Longer(), train, cfg)


MODULE = '''
import numpy as np
from lmsys_pref.eval import bias

class Model:
    def predict_proba(self, df, tta=None):
        la, lb = (np.log1p(bias.chars(df[c])) for c in ("response_a", "response_b"))
        z = np.stack([la + 0.5, lb, (la + lb) / 2], 1)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

def load_predictor(model_dir, **kw):
    return Model()
'''


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A registered model kind whose saved folder is tmp_path/run/model."""
    (tmp_path / "fake_bias_model.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(predict.LOADERS, "fake", "fake_bias_model:load_predictor")
    runs.write_model_meta(tmp_path / "run" / "model", "fake", {})
    return tmp_path / "run"


def test_cli_on_registered_model(tmp_path, quirks_dir, fake_model):
    out = tmp_path / "out"
    assert cli.main(["bias", "--model-dir", str(tmp_path / "run"), "--data-dir", str(quirks_dir),
                     "--out-dir", str(out), "-p", "judge_bias_dir", "''"]) == 0
    res = json.loads((out / "bias.json").read_text())
    assert {"position", "verbosity", "self_enhancement"} <= set(res) and "judge_sets" not in res
    assert res["n_rows"] == 40 and res["config"]["kind"] == "bias"
    # a model folder without oof.csv/val.csv: every row, and bias.json/bias.md say so
    assert res["rows"]["rows_used"] == "all" and res["rows"]["n_available"] == 40
    assert res["rows"]["source"] == str(quirks_dir / "train.csv")
    assert "no oof.csv or val.csv" in res["rows"]["note"]
    assert "Rows used: **all**, 40 rows from" in (out / "bias.md").read_text()
    assert res["position"]["none"]["first_wins_share"] > 0.5  # the +0.5 first-position logit
    assert res["verbosity"]["filler"]["mean_shift"] > 0
    text = (out / "bias.md").read_text()
    assert "## Position" in text and "## Verbosity" in text and "| filler |" in text
    for fig in ("bias_position.png", "bias_verbosity.png", "bias_self_enhancement.png"):
        assert (out / fig).stat().st_size > 1000
    assert cli.main(["bias", "--model-dir", str(tmp_path), "--data-dir", str(quirks_dir),
                     "--out-dir", str(out)]) == 1  # not a model folder: one clear line


def test_xgb_model_with_judge_sets(tmp_path, quirks_dir, judge_bias_dir):
    from lmsys_pref import xgb
    from lmsys_pref.configs.xgb import XGBConfig
    xgb.fit(XGBConfig(data_dir=str(quirks_dir), out_dir=str(tmp_path / "x"), n_folds=0,
                      n_estimators=10, n_jobs=1))
    cfg = BiasConfig(model_dir=str(tmp_path / "x"), data_dir=str(quirks_dir),
                     out_dir=str(tmp_path / "b"), judge_bias_dir=str(judge_bias_dir),
                     max_judge_rows=10)
    res = bias.run(cfg)
    assert res["position"]["swap"]["flip_consistency"] == pytest.approx(1.0)
    assert len(res["judge_sets"]["subsets"]) == 19
    assert res["judge_sets"]["overall"]["n"] == 190
    assert "## Judge-bias sets" in (tmp_path / "b" / "bias.md").read_text()
    assert (tmp_path / "b" / "bias_judge_sets.png").exists()


def scored_rows(run_dir, ids, eval):
    """The oof.csv / val.csv and metrics.json a train run leaves beside model/."""
    probs = np.full((len(ids), 3), 1 / 3)
    m = runs.run_metrics(np.zeros(len(ids), int), probs, eval=eval, n_train=40, n_test=0,
                         seconds=0)
    runs.write_outputs(run_dir, test_ids=None, test_probs=None, metrics=m,
                       oof=runs.probs_frame(ids, probs, np.zeros(len(ids), int)),
                       oof_name=runs.EVAL_FILES[eval])


@pytest.mark.parametrize("eval,used", [("val", "held_out"), ("oof", "out_of_fold")])
def test_probes_only_the_rows_the_run_held_out(tmp_path, quirks_dir, fake_model, eval, used):
    train = data.load_split(quirks_dir / "train.csv")
    held = train["id"].to_numpy()[[3, 1, 30, 17, 8, 22, 39, 12]]
    scored_rows(fake_model, held, eval)
    for model_dir in (fake_model, fake_model / "model"):  # the run folder or its model/
        cfg = BiasConfig(model_dir=str(model_dir), data_dir=str(quirks_dir),
                         out_dir=str(tmp_path / "out"), judge_bias_dir="")
        rows = bias.select_rows(train, cfg, quirks_dir / "train.csv")[0]
        assert sorted(rows["id"]) == sorted(held)
    res = bias.run(cfg)
    source = fake_model / runs.EVAL_FILES[eval]
    assert res["n_rows"] == 8 and res["rows"]["source"] == str(source)
    assert res["rows"]["rows_used"] == used and res["rows"]["n_missing"] == 0
    assert json.loads((tmp_path / "out" / "bias.json").read_text())["rows"] == res["rows"]
    assert f"Rows used: **{used}**, 8 rows from `{source}`" in (
        tmp_path / "out" / "bias.md").read_text()
    assert bias.run(cfg.replace(rows="all"))["n_rows"] == 40


def test_fresh_labelled_folder_is_probed_in_full_and_said_so(tmp_path, quirks_dir, fake_model):
    scored_rows(fake_model, np.arange(8), "val")  # ids that the fresh folder does not hold
    cfg = BiasConfig(model_dir=str(fake_model), data_dir=str(quirks_dir),
                     out_dir=str(tmp_path / "out"), judge_bias_dir="")
    res = bias.run(cfg)
    assert res["n_rows"] == 40 and res["rows"]["rows_used"] == "all"
    assert "not the run's training data" in res["rows"]["note"]
