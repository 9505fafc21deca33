"""Temperature / bias scaling and OOF-weighted blending: recovery of known parameters, the run
folder outputs, id alignment and its errors, the CLI, and an XGBoost end-to-end run."""
import json

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import blend, cli, data, metrics, runs, submission


def true_probs(n, seed=0):
    """Well-calibrated probabilities and labels drawn from them."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1.5, 1.5, 1.2], size=n)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return p, labels


def sharpen(p, power):
    q = p ** power
    return q / q.sum(1, keepdims=True)


def fake_run(path, ids, labels, oof, test_ids=(7, 3, 5), seed=0):
    """A run folder as a train run writes it: oof.csv, submission.csv, metrics.json."""
    test = np.random.default_rng(seed).dirichlet([2, 2, 2], size=len(test_ids))
    runs.write_outputs(path, test_ids=list(test_ids), test_probs=test, metrics={},
                       oof=runs.probs_frame(ids, oof, labels))
    return path


def test_scaling_recovers_temperature_of_overconfident_probs():
    p, y = true_probs(6000)
    over = sharpen(p, 3.0)  # log p' = 3 log p + c: temperature 3 undoes it
    s = blend.fit_scaling(y, over, per_class_bias=False)
    assert s.temperature == pytest.approx(3.0, rel=0.12)
    assert s.bias == (0.0, 0.0, 0.0)
    assert metrics.log_loss(y, s.apply(over)) < metrics.log_loss(y, over) - 0.05
    np.testing.assert_allclose(s.apply(over).sum(1), 1.0)


def test_scaling_recovers_class_bias_and_leaves_calibrated_probs_alone():
    p, y = true_probs(6000, seed=1)
    shifted = p * np.array([3.0, 1.0, 1.0])  # over-predicts class a by log 3
    shifted /= shifted.sum(1, keepdims=True)
    s = blend.fit_scaling(y, shifted)
    assert s.temperature == pytest.approx(1.0, abs=0.1)
    assert s.bias[0] - s.bias[1] == pytest.approx(-np.log(3.0), abs=0.15)
    ident = blend.fit_scaling(y, p)
    assert ident.temperature == pytest.approx(1.0, abs=0.1)
    assert max(map(abs, ident.bias)) < 0.1


@pytest.mark.parametrize("method", blend.POOLS)
def test_weights_favour_the_informative_run(method):
    p, y = true_probs(3000, seed=2)
    noise = np.random.default_rng(3).dirichlet([1, 1, 1], size=len(y))
    w = blend.fit_weights(y, [noise, p], method)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all() and w[1] > 0.85


@pytest.mark.parametrize("method", blend.POOLS)
def test_pool_loss_gradient_is_exact(method):
    p, y = true_probs(200, seed=9)
    runs_ = [sharpen(p, 2.0), np.random.default_rng(1).dirichlet([1, 1, 1], size=200), p]
    loss = blend._pool_loss(y, runs_, method)
    w = np.array([0.2, 0.3, 0.5])
    eps, num = 1e-6, []
    for i in range(3):
        d = np.eye(3)[i] * eps
        num.append((loss(w + d)[0] - loss(w - d)[0]) / (2 * eps))
    np.testing.assert_allclose(loss(w)[1], num, rtol=1e-4, atol=1e-7)


def test_pool_golden():
    a, b = np.array([[0.8, 0.1, 0.1]]), np.array([[0.2, 0.4, 0.4]])
    w = np.array([0.25, 0.75])
    np.testing.assert_allclose(blend.pool([a, b], w, "linear"), [[0.35, 0.325, 0.325]])
    geo = a ** 0.25 * b ** 0.75
    np.testing.assert_allclose(blend.pool([a, b], w, "log"), geo / geo.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="pool method"):
        blend.pool([a], np.array([1.0]), "max")


@pytest.mark.parametrize("method", blend.POOLS)
def test_blend_writes_outputs_and_beats_each_run(tmp_path, method):
    p, y = true_probs(600, seed=4)
    ids = np.arange(100, 700)
    rng = np.random.default_rng(5)
    r1 = fake_run(tmp_path / "r1", ids, y, sharpen(p * rng.uniform(0.5, 1.5, p.shape), 2.0))
    r2 = fake_run(tmp_path / "r2", ids, y, sharpen(p * rng.uniform(0.5, 1.5, p.shape), 0.5), seed=1)
    res = blend.blend([r1, r2], tmp_path / "b", method)
    out = tmp_path / "b"
    assert {"submission.csv", "oof.csv", "weights.json", "metrics.json"} <= {
        f.name for f in out.iterdir()}
    assert res["blend_oof_log_loss"] < res["best_single_log_loss"]
    assert res["blend_cv_log_loss"] < res["best_single_log_loss"]
    saved = json.loads((out / "weights.json").read_text())
    assert sum(saved["weights"].values()) == pytest.approx(1.0) and saved["method"] == method
    submission.read(out / "submission.csv", [7, 3, 5])
    oof = pd.read_csv(out / "oof.csv")
    assert oof["id"].tolist() == ids.tolist() and oof["label"].tolist() == y.tolist()
    assert metrics.log_loss(y, oof[list(data.LABEL_COLS)].to_numpy()) == pytest.approx(
        res["blend_oof_log_loss"])


def test_blend_aligns_rows_by_id(tmp_path):
    p, y = true_probs(300, seed=6)
    ids = np.arange(300)
    q = sharpen(p, 1.7)
    fake_run(tmp_path / "a", ids, y, p)
    fake_run(tmp_path / "b", ids, y, q)
    perm = np.random.default_rng(0).permutation(300)
    fake_run(tmp_path / "b_shuffled", ids[perm], y[perm], q[perm])
    one = blend.blend([tmp_path / "a", tmp_path / "b"], tmp_path / "o1", scale=False)
    two = blend.blend([tmp_path / "a", tmp_path / "b_shuffled"], tmp_path / "o2", scale=False)
    assert list(one["weights"].values()) == pytest.approx(list(two["weights"].values()), abs=1e-6)
    assert one["blend_oof_log_loss"] == pytest.approx(two["blend_oof_log_loss"], abs=1e-9)


def test_blend_names_run_and_missing_ids(tmp_path):
    p, y = true_probs(50, seed=7)
    fake_run(tmp_path / "full", np.arange(50), y, p)
    fake_run(tmp_path / "part", np.arange(48), y[:48], p[:48])
    with pytest.raises(data.DataError, match=r"part.*missing \[48, 49\]"):
        blend.blend([tmp_path / "full", tmp_path / "part"], tmp_path / "o")
    y2 = y.copy()
    y2[3] = (y2[3] + 1) % 3
    fake_run(tmp_path / "relabel", np.arange(50), y2, p)
    with pytest.raises(data.DataError, match="row id 3"):
        blend.blend([tmp_path / "full", tmp_path / "relabel"], tmp_path / "o")
    fake_run(tmp_path / "othertest", np.arange(50), y, p, test_ids=(1, 2, 3))
    with pytest.raises(data.DataError, match="test ids"):
        blend.blend([tmp_path / "full", tmp_path / "othertest"], tmp_path / "o")


def test_calibrate_run_folder_and_cli(tmp_path, capsys):
    p, y = true_probs(800, seed=8)
    run = fake_run(tmp_path / "r", np.arange(800), y, sharpen(p, 2.5))
    assert cli.main(["calibrate", "--run-dir", str(run), "--out-dir", str(tmp_path / "c")]) == 0
    res = json.loads((tmp_path / "c" / "calibration.json").read_text())
    assert res["oof_log_loss_after"] < res["oof_log_loss_before"]
    assert res["cv_log_loss_after"] < res["oof_log_loss_before"]
    assert res["temperature"] == pytest.approx(2.5, rel=0.25)
    sub = submission.read(tmp_path / "c" / "submission.csv", [7, 3, 5])
    before = submission.read(run / "submission.csv")
    scale = blend.Scaling(res["temperature"], tuple(res["bias"]))
    np.testing.assert_allclose(sub[list(data.LABEL_COLS)],
                               scale.apply(before[list(data.LABEL_COLS)].to_numpy()), atol=1e-9)
    assert cli.main(["blend", "--runs", str(run), str(tmp_path / "c"),
                     "--out-dir", str(tmp_path / "b")]) == 0
    assert "cross-fitted" in capsys.readouterr().out
    assert cli.main(["calibrate", "--run-dir", str(tmp_path / "nothing"),
                     "--out-dir", str(tmp_path / "x")]) == 1


def test_xgb_runs_end_to_end(tmp_path, quirks_dir):
    xgb = pytest.importorskip("lmsys_pref.xgb")
    from lmsys_pref.configs.xgb import XGBConfig
    dirs = []
    for seed in (1, 2):
        cfg = XGBConfig(data_dir=str(quirks_dir), out_dir=str(tmp_path / f"x{seed}"),
                        n_estimators=20, seed=seed, n_jobs=1)
        xgb.fit(cfg)
        dirs.append(tmp_path / f"x{seed}")
    res = blend.blend(dirs, tmp_path / "b")
    test_ids = data.load_split(quirks_dir / "test.csv")["id"].tolist()
    submission.read(tmp_path / "b" / "submission.csv", test_ids)
    assert res["n_oof"] == 40 and res["blend_oof_log_loss"] <= res["best_single_log_loss"]
