"""Cascades: the first model on every row, each later model on the rows the blend so far is
least sure of (`infer.cascade`, `predict -p cascade`, `make predict CASCADE=...`)."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from lmsys_pref import data, runs
from lmsys_pref.commands import predict
from lmsys_pref.configs import ConfigError
from lmsys_pref.configs.predict import CascadeStage, PredictConfig
from lmsys_pref.infer import budget, cascade, engine, uncertainty
from lmsys_pref.runs import submission

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def xgb_runs(tmp_path_factory, sample_dir):
    """Two small XGBoost runs on the sample (holdouts: no out-of-fold rows)."""
    pytest.importorskip("lmsys_pref.xgb")
    from lmsys_pref import xgb
    from lmsys_pref.configs.xgb import XGBConfig

    out = []
    for k, depth in enumerate((2, 5)):
        run = tmp_path_factory.mktemp(f"xgb{k}")
        xgb.fit(XGBConfig(data_dir=str(sample_dir), out_dir=str(run), n_folds=0,
                          n_estimators=20, max_depth=depth, n_jobs=1))
        out.append(run)
    return out


@pytest.fixture(scope="module")
def lm_run(save_tiny_lm_run):
    """A saved tiny random Llama classifier with the MiniLM tokenizer (1 row per batch)."""
    return save_tiny_lm_run(token_budget=64)


def test_the_cascade_setting_is_parsed_and_checked_by_name():
    cfg = predict.parse_args(["--model-dir", "a", "--data-dir", "d", "--out-dir", "o",
                              "-p", "cascade", "runs/b:0.35 runs/c:0.15:1.5"])
    assert cfg.stages == (CascadeStage("runs/b", 0.35), CascadeStage("runs/c", 0.15, 1.5))
    assert PredictConfig(cascade=["x:y:0.5"]).stages == (CascadeStage("x:y", 0.5),)
    for bad, says in [("runs/b", "MODEL_DIR:FRACTION"), ("runs/b:1.5", "fraction '1.5'"),
                      ("runs/b:0.3:0", "weight '0'"), ("runs/b:half", "fraction 'half'")]:
        with pytest.raises(ConfigError, match=f"parameter 'cascade': '{bad}': .*{says}"):
            PredictConfig(cascade=[bad])


def expected(first_dir, stages, test) -> tuple[np.ndarray, list[np.ndarray]]:
    """The cascade computed by hand: each stage's rows and the blend."""
    probs = predict.load_predictor(first_dir).predict_proba(test)
    rows_of = []
    for model_dir, fraction, weight in stages:
        rows = uncertainty.least_certain(probs, fraction)
        q = predict.load_predictor(model_dir, devices="cpu").predict_proba(test.iloc[rows])
        probs[rows] = (probs[rows] + weight * q) / (1 + weight)
        rows_of.append(rows)
    return probs, rows_of


def test_make_predict_with_a_cascade_writes_a_valid_submission(xgb_runs, lm_run, sample_dir,
                                                               tmp_path):
    first, last = xgb_runs
    spec = f"{lm_run}:0.5 {last}:0.2:1.5"
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run(["make", "-s", "predict", f"MODEL_DIR={first}", f"DATA_DIR={sample_dir}",
                    f"OUT_DIR={tmp_path}", f"CASCADE={spec}", "INSTALLED=",
                    "PARAMS=-p progress false"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    test = data.load_split(sample_dir / "test.csv")
    sub = submission.read(tmp_path / "submission.csv", test["id"].tolist())  # ids in order
    got = sub.iloc[:, 1:].to_numpy()
    want, rows_of = expected(first, [(lm_run, 0.5, 1.0), (last, 0.2, 1.5)], test)
    np.testing.assert_allclose(got, want, atol=1e-6)
    stages = json.loads((tmp_path / "predict.json").read_text())["cascade"]
    assert [s["rows"] for s in stages] == [50, 25, 10]
    assert [s["weight"] for s in stages] == [1.0, 1.0, 1.5]
    assert stages[1]["weight_source"].startswith("default 1") and stages[2]["weight_source"] == \
        "given"
    for stage, rows in zip(stages[1:], rows_of):
        assert stage["ids"] == test["id"].iloc[rows].tolist() and stage["seconds"] >= 0
        assert stage["cut"] is None and stage["target_rows"] == stage["rows"]
    assert stages[1]["kind"] == "lm" and stages[1]["tokens"] > 0
    only_first = predict.load_predictor(first).predict_proba(test)
    assert np.abs(got - only_first).max() > 1e-3  # the later stages changed the submission


def fake_run(path, ids, labels, probs):
    """A run folder with out-of-fold rows and a model folder (any kind will do here)."""
    runs.write_model_meta(path / "model", "xgb", {})
    runs.write_outputs(path, test_ids=None, test_probs=None,
                       metrics=runs.run_metrics(labels, probs, eval="oof", n_train=len(ids),
                                                n_test=0, seconds=0.0),
                       oof=runs.probs_frame(ids, probs, labels), oof_name="oof.csv")
    return path


def test_a_stage_weight_is_fitted_on_the_out_of_fold_rows_the_runs_share(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    ids, labels = np.arange(n), rng.integers(0, 3, n)
    unsure = np.full((n, 3), 1 / 3) + rng.normal(0, 0.01, (n, 3))
    unsure /= unsure.sum(1, keepdims=True)
    right = np.eye(3)[labels] * 0.9 + 0.05  # a stage model that knows the labels
    wrong = np.eye(3)[(labels + 1) % 3] * 0.9 + 0.05  # one that is always wrong
    first = fake_run(tmp_path / "a", ids, labels, unsure)
    oof = cascade.read_oof(first)
    good = fake_run(tmp_path / "good", ids[::2], labels[::2], right[::2])
    weight, source, blend = cascade.weight_for(CascadeStage(str(good), 0.5), oof)
    assert weight == cascade.WEIGHT_GRID.max() and source.startswith("fitted on 100 of 200")
    assert len(blend) == 200  # the next stage fits on the rows every stage shares
    bad = fake_run(tmp_path / "bad", ids, labels, wrong)
    weight, _, _ = cascade.weight_for(CascadeStage(str(bad), 0.5), oof)
    assert weight == cascade.WEIGHT_GRID.min()
    few = fake_run(tmp_path / "few", ids[:40], labels[:40], right[:40])
    weight, source, _ = cascade.weight_for(CascadeStage(str(few), 0.5), oof)
    assert weight == 1.0 and "20 shared out-of-fold rows" in source
    assert cascade.weight_for(CascadeStage(str(bad), 0.5, 2.0), oof)[:2] == (2.0, "given")
    assert cascade.weight_for(CascadeStage(str(good), 0.5), None)[0] == 1.0


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SECONDS_PER_TOKEN = 0.5


def test_a_stage_that_cannot_fit_its_share_is_cut_to_the_rows_that_fit(
        xgb_runs, lm_run, sample_dir, tmp_path, monkeypatch):
    clock, forward = FakeClock(), engine._forward

    def slow_forward(model, ids, mask):  # every real token takes SECONDS_PER_TOKEN
        clock.now += SECONDS_PER_TOKEN * int(mask.sum())
        return forward(model, ids, mask)

    monkeypatch.setattr(budget, "clock", clock)
    monkeypatch.setattr(budget, "MEASURE_SECONDS", 1e9)
    monkeypatch.setattr(engine, "_forward", slow_forward)

    def run(out, limit_h):
        cfg = PredictConfig(model_dir=str(xgb_runs[0]), data_dir=str(sample_dir),
                            out_dir=str(out), cascade=[f"{lm_run}:1.0"], progress=False,
                            time_limit_h=limit_h)
        return predict.predict(cfg)["cascade"][1]

    whole = run(tmp_path / "whole", 0)
    work = whole["tokens"] * SECONDS_PER_TOKEN
    limit_s = 0.5 * work / budget.SAFETY  # half of the stage's work fits
    clock.now = 0.0
    cut = run(tmp_path / "cut", limit_s / 3600)
    assert 0 < cut["rows"] < cut["target_rows"] == 50 and "cut to the" in cut["cut"]
    assert clock.now <= budget.SAFETY * limit_s  # the whole run kept to the limit
    assert cut["ids"] == whole["ids"][:cut["rows"]]  # the least certain rows first
    test = data.load_split(sample_dir / "test.csv")
    submission.read(tmp_path / "cut" / "submission.csv", test["id"].tolist())


def test_predict_dist_refuses_a_cascade_instead_of_dropping_it():
    from lmsys_pref.commands import distributed

    with pytest.raises(ValueError, match="cascade runs in one process"):
        distributed.predict(PredictConfig(cascade=["runs/b:0.35"]))


def test_the_later_stages_time_is_kept_from_the_first_models_adaptive_pass():
    stages = (CascadeStage("b", 0.35), CascadeStage("c", 0.15))
    assert cascade.reserve_h(9, stages) == pytest.approx(3.0)  # 0.5 of 1.5 by rows
    kept = budget.Budget(9, reserve_h=cascade.reserve_h(9, stages))
    free = budget.Budget(9)
    assert free.extra_seconds() - kept.extra_seconds() == pytest.approx(3 * 3600, abs=1)


def test_a_stage_with_no_time_left_is_skipped_before_its_model_loads(tmp_path):
    cfg = PredictConfig(model_dir="unused", cascade=[f"{tmp_path / 'absent'}:0.5"])
    probs, note, extra = cascade.score_stage(cfg, cfg.stages[0], None, 0.0, 2)
    assert probs is None and "no time left" in note and extra == {}
