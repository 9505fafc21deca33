"""Features and the XGBoost baseline: symmetry, the run-folder contract, reload, bad input."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import data, runs, xgb
from lmsys_pref.commands import predict
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import metrics, splits
from lmsys_pref.xgb import features


@pytest.fixture(scope="module")
def train(quirks_dir):
    return data.load_split(quirks_dir / "train.csv")


def test_features_flip_under_swap(train):
    f, g = features.build(train), features.build(data.swap(train))
    assert list(f.columns) == list(g.columns) and len(f) == len(train)
    diffs = [c for c in f.columns if c.startswith(("diff_", "logratio_"))]
    np.testing.assert_allclose(f[diffs], -g[diffs], atol=1e-5)
    np.testing.assert_allclose(f.filter(regex="^a_").to_numpy(), g.filter(regex="^b_").to_numpy())
    assert np.isfinite(f.to_numpy()).all()


def test_features_see_refusals_structure_and_identical_answers():
    df = pd.DataFrame({"prompt": [["Do it"]] * 2,
                       "response_a": [["I'm sorry, but I can't help."], ["# T\n- **x**\n- y"]],
                       "response_b": [["Sure: here it is."], ["# T\n- **x**\n- y"]]})
    f = features.build(df)
    assert f.loc[0, "a_refusal"] >= 1 and f.loc[0, "b_refusal"] == 0
    assert f.loc[1, "a_headers"] == 1 and f.loc[1, "a_list_items"] == 2 and f.loc[1, "a_bold"] == 1
    assert f["identical"].tolist() == [0, 1]


def test_parallel_build_equals_serial(train, monkeypatch):
    monkeypatch.setattr(features, "PARALLEL_MIN_ROWS", 10)
    big = data.tile(train, 60)
    pd.testing.assert_frame_equal(features.build(big, n_jobs=2), features.build(big, n_jobs=1))


@pytest.fixture(scope="module")
def run(quirks_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("xgb")
    cfg = XGBConfig(data_dir=str(quirks_dir), out_dir=str(out), n_folds=2, n_estimators=30,
                    early_stopping_rounds=0, seed=1)
    return cfg, xgb.fit(cfg)


def test_fit_writes_the_run_contract(run, quirks_dir):
    cfg, m = run
    out = Path(cfg.out_dir)
    test = data.load_split(quirks_dir / "test.csv")
    sub = pd.read_csv(out / "submission.csv", dtype={"id": str})  # ids are text end to end
    assert sub["id"].tolist() == test["id"].tolist()
    oof = pd.read_csv(out / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(data.load_split(quirks_dir / "train.csv")["id"])
    assert (out / "model" / "postrules.json").exists()
    saved = runs.read_metrics(out)  # the shared vocabulary (runs.METRIC_KEYS)
    assert saved == m and set(runs.METRIC_KEYS) <= set(saved)
    assert [saved[k] for k in ("eval", "n_train", "n_eval", "n_test")] == ["oof", 40, 40, 12]
    assert saved["n_folds"] == 2 and saved["fold_rounds"] == [30, 30]
    # golden value of this seeded run (tiny fixture, so the tolerance is loose)
    assert saved["log_loss"] == pytest.approx(0.905, abs=0.01)
    assert saved["accuracy"] == pytest.approx(metrics.accuracy(oof["label"], oof.iloc[:, 2:]))


def test_reloaded_model_reproduces_submission_and_is_swap_symmetric(run, quirks_dir):
    cfg, _ = run
    test = data.load_split(quirks_dir / "test.csv")
    pred = predict.load_predictor(cfg.out_dir)
    p = pred.predict_proba(test)
    sub = pd.read_csv(Path(cfg.out_dir) / "submission.csv")
    np.testing.assert_allclose(p, sub.iloc[:, 1:].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.predict_proba(data.swap(test)), data.swap(p), atol=1e-6)
    assert pred.stats["rows"] == len(test)


def test_bad_test_file_fails_with_column_named(tmp_path, quirks_dir):
    (tmp_path / "train.csv").write_text((quirks_dir / "train.csv").read_text())
    pd.read_csv(quirks_dir / "test.csv").drop(columns="response_b").to_csv(
        tmp_path / "test.csv", index=False)
    with pytest.raises(data.DataError, match="response_b"):
        xgb.fit(XGBConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "out"), n_folds=0))


def test_make_contract_cli_exits_nonzero_naming_row_and_column(tmp_path, quirks_dir):
    raw = pd.read_csv(quirks_dir / "train.csv", keep_default_na=False)
    bad_id = int(raw.loc[3, "id"])
    raw.loc[3, "prompt"] = '["not closed'
    raw.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "test.csv").write_text((quirks_dir / "test.csv").read_text())
    proc = subprocess.run([sys.executable, "-m", "lmsys_pref", "train", "xgb", "--data-dir",
                           str(tmp_path), "--out-dir", str(tmp_path / "run"), "-p", "n_folds", "2",
                           "-p", "n_estimators", "5"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"row id {bad_id}" in proc.stderr and "prompt" in proc.stderr and not proc.stdout
    assert not (tmp_path / "run" / "submission.csv").exists()


@pytest.mark.parametrize("group_by", ["prompt", "none"])
def test_folds_and_stopping_rows_keep_prompt_groups_together(train, monkeypatch, group_by):
    big = data.tile(train, 120)  # every prompt three times or more
    folds, stops, kfold, holdout = [], [], splits.kfold, splits.holdout

    def spy_kfold(labels, n, seed, groups=None):
        out = kfold(labels, n, seed, groups=groups)
        folds.extend(out if n == 3 else [])  # holdout's own call (7 splits) is not a fold
        return out

    def spy_holdout(labels, frac, seed, groups=None):
        stops.append((*holdout(labels, frac, seed, groups=groups), groups))
        return stops[-1][:2]

    monkeypatch.setattr(splits, "kfold", spy_kfold)
    monkeypatch.setattr(splits, "holdout", spy_holdout)
    cfg = XGBConfig(n_folds=3, n_estimators=5, early_stopping_rounds=2, n_jobs=1,
                    group_by=group_by)
    g = splits.fold_groups(big, "prompt")
    oof, _ = xgb.cross_validate(cfg, xgb.Features(big), splits.fold_groups(big, cfg.group_by))
    assert np.isfinite(oof).all() and len(folds) == len(stops) == 3
    straddling = 0
    for (tr, va), (stop_tr, stop_va, stop_groups) in zip(folds, stops):
        straddling += bool(set(g[tr]) & set(g[va]))
        straddling += bool(set(g[tr][stop_tr]) & set(g[tr][stop_va]))
        if group_by == "prompt":
            np.testing.assert_array_equal(stop_groups, g[tr])
    assert (straddling == 0) == (group_by == "prompt")
