"""`python -m lmsys_pref predict`: any saved model -> submission.csv + predict.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lmsys_pref import cli, data, runs
from lmsys_pref.commands import predict
from lmsys_pref.infer import uncertainty
from lmsys_pref.runs import postrules, submission

STATS_KEYS = ("rows", "tokens", "seconds", "tokens_per_s", "padding_efficiency")


@pytest.fixture(scope="module")
def xgb_run(tmp_path_factory, sample_dir):
    xgb = pytest.importorskip("lmsys_pref.xgb")
    from lmsys_pref.configs.xgb import XGBConfig

    out = tmp_path_factory.mktemp("xgb")
    xgb.fit(XGBConfig(data_dir=str(sample_dir), out_dir=str(out), n_folds=0, n_estimators=20,
                      n_jobs=1))
    return out


@pytest.fixture(scope="module")
def lm_run(save_tiny_lm_run):
    """A saved tiny random Llama classifier (full weights) with the MiniLM tokenizer."""
    return save_tiny_lm_run(token_budget=512)


def run_cli(model_dir, data_dir, out_dir, *params) -> dict:
    argv = ["predict", "--model-dir", str(model_dir), "--data-dir", str(data_dir),
            "--out-dir", str(out_dir)]
    for key, value in params:
        argv += ["-p", key, str(value)]
    assert cli.main(argv) == 0
    return json.loads((out_dir / "predict.json").read_text())


def read_sub(out_dir, test) -> np.ndarray:
    sub = submission.read(out_dir / "submission.csv", test["id"].tolist())  # ids, in order
    return sub.iloc[:, 1:].to_numpy()


def test_predict_cli_on_an_xgboost_model(xgb_run, sample_dir, tmp_path):
    summary = run_cli(xgb_run, sample_dir, tmp_path, ("tta", "swap"))
    test = data.load_split(sample_dir / "test.csv")
    got = read_sub(tmp_path, test)
    scorer = predict.load_predictor(xgb_run)
    want = scorer.predict_proba(test, tta="swap")
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert isinstance(scorer, runs.Predictor) and scorer.stats["rows"] == len(test)
    assert summary["rows"] == len(test) and summary["kind"] == "xgb"
    assert set(STATS_KEYS) <= set(summary)


def test_predict_cli_on_an_lm_matches_across_devices_and_budgets(lm_run, quirks_dir, tmp_path):
    test = data.load_split(quirks_dir / "test.csv")
    one = run_cli(lm_run, quirks_dir, tmp_path / "one", ("devices", "cpu"), ("tta", "swap"))
    two = run_cli(lm_run, quirks_dir, tmp_path / "two", ("devices", "cpu,cpu"),
                  ("tta", "swap_device"), ("token_budget", 100), ("max_length", 64))
    np.testing.assert_allclose(read_sub(tmp_path / "one", test), read_sub(tmp_path / "two", test),
                               atol=1e-6)
    for s in (one, two):
        assert s["rows"] == len(test) and s["scored_rows"] == 2 * len(test)
        assert 0 < s["padding_efficiency"] <= 1 and s["tokens"] > len(test)
        assert s["tokens_per_s"] > 0 and s["kind"] == "lm"
    assert two["devices"] == ["cpu", "cpu"] and two["tta"] == "swap_device"
    short = run_cli(lm_run, quirks_dir, tmp_path / "short", ("max_length", 32), ("tta", "none"))
    assert short["tokens"] <= 32 * len(test) < one["tokens"] / 2


def test_predict_adaptive_tta_swaps_exactly_the_rows_it_reports(lm_run, quirks_dir, tmp_path):
    test = data.load_split(quirks_dir / "test.csv")
    subs = {}
    for tta in ("none", "swap", "adaptive"):
        summary = run_cli(lm_run, quirks_dir, tmp_path / tta, ("tta", tta), ("tta_fraction", 0.4),
                          ("devices", "cpu,cpu"))
        subs[tta] = read_sub(tmp_path / tta, test)  # exactly the test ids, in order, valid
    second = summary["adaptive"]
    assert second["second_pass_rows"] == len(second["second_pass_ids"]) == 5  # ceil(0.4 x 12)
    assert second["stopped_by"] == "fraction" and summary["scored_rows"] == len(test) + 5
    swapped = test["id"].isin(second["second_pass_ids"]).to_numpy()
    assert swapped.sum() == 5
    np.testing.assert_allclose(subs["adaptive"][swapped], subs["swap"][swapped], atol=1e-5)
    np.testing.assert_allclose(subs["adaptive"][~swapped], subs["none"][~swapped], atol=1e-5)
    assert np.abs(subs["swap"] - subs["none"])[swapped].max() > 1e-4  # the check can fail
    margins = uncertainty.margins(subs["none"])
    assert margins[swapped].max() <= margins[~swapped].min()  # the least certain rows


def test_xgboost_scores_adaptive_as_full_swap(xgb_run, sample_dir, tmp_path):
    test = data.load_split(sample_dir / "test.csv")
    summary = run_cli(xgb_run, sample_dir, tmp_path / "a", ("tta", "adaptive"))
    run_cli(xgb_run, sample_dir, tmp_path / "s", ("tta", "swap"))
    np.testing.assert_allclose(read_sub(tmp_path / "a", test), read_sub(tmp_path / "s", test))
    assert summary["tta"] == "adaptive" and summary["tta_scored"] == "swap"


def test_a_failing_worker_writes_no_submission(lm_run, quirks_dir, tmp_path, monkeypatch):
    from lmsys_pref.infer import engine

    calls = []

    def broken(model, ids, mask):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return np.zeros((len(ids), 3), np.float32)

    monkeypatch.setattr(engine, "_forward", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        predict.cli_main(["--model-dir", str(lm_run), "--data-dir", str(quirks_dir),
                          "--out-dir", str(tmp_path), "-p", "token_budget", "64"])
    assert list(tmp_path.iterdir()) == []


def test_a_failed_predict_leaves_no_stale_submission_looking_current(xgb_run, sample_dir,
                                                                    tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_cli(xgb_run, sample_dir, out)  # a good run first
    old = (out / "submission.csv").read_text()

    def broken(self, df, tta=None):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(predict.load_predictor(xgb_run).__class__, "predict_proba", broken)
    with pytest.raises(RuntimeError, match="scoring failed"):
        predict.cli_main(["--model-dir", str(xgb_run), "--data-dir", str(sample_dir),
                          "--out-dir", str(out)])
    assert not (out / "submission.csv").exists() and not (out / "predict.json").exists()
    assert (out / "previous" / "submission.csv").read_text() == old  # kept aside, marked old


def test_post_rules_from_the_model_folder(xgb_run, sample_dir, tmp_path):
    rules = {"identical": {"probs": [0.1, 0.1, 0.8], "rows": 9},
             "b_empty": {"probs": [0.7, 0.2, 0.1], "rows": 9}}
    postrules.save(rules, runs.resolve_model_dir(xgb_run))
    try:
        summary = run_cli(xgb_run, sample_dir, tmp_path, ("post_rules", "true"))
    finally:
        (runs.resolve_model_dir(xgb_run) / postrules.FILENAME).unlink()
    test = data.load_split(sample_dir / "test.csv")
    got, masks = read_sub(tmp_path, test), postrules.match(test)
    assert masks["identical"].any() and masks["b_empty"].any()
    np.testing.assert_allclose(got[masks["identical"]],
                               [[0.1, 0.1, 0.8]] * masks["identical"].sum())
    np.testing.assert_allclose(got[masks["b_empty"]], [[0.7, 0.2, 0.1]] * masks["b_empty"].sum())
    other = ~(masks["identical"] | masks["b_empty"])
    assert not np.isclose(got[other][:, 2], 0.8).all()
    assert summary["post_rules_rows"]["identical"] == masks["identical"].sum()


def test_bad_input_fails_clearly(xgb_run, tmp_path, capsys):
    (tmp_path / "test.csv").write_text('id,prompt,response_a\n1,"[""hi""]","[""a""]"\n')
    rc = cli.main(["predict", "--model-dir", str(xgb_run), "--data-dir", str(tmp_path),
                   "--out-dir", str(tmp_path / "out")])
    assert rc == 1 and "response_b" in capsys.readouterr().err
    assert not (tmp_path / "out" / "submission.csv").exists()
    with pytest.raises(ValueError, match="unknown field"):
        predict.parse_args(["--model-dir", "m", "--data-dir", "d", "--out-dir", "o",
                            "-p", "batch_rows", "4"])


def test_lm_predictor_rejects_unknown_settings(lm_run):
    with pytest.raises(ValueError, match="unknown setting"):
        predict.load_predictor(lm_run, batch_rows=4)
    with pytest.raises(ValueError, match="not visible|unknown device"):
        predict.load_predictor(lm_run, devices="cuda:7")
