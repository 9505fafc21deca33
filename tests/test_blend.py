"""Temperature / bias scaling and OOF-weighted blending: recovery of known parameters, the run
folder outputs, id alignment and its errors, the CLI, and an XGBoost end-to-end run."""
import json

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import cli, data, runs
from lmsys_pref.data import metrics, splits
from lmsys_pref.eval import blend, blend_inputs
from lmsys_pref.runs import submission


def true_probs(n, seed=0):
    """Well-calibrated probabilities and labels drawn from them."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1.5, 1.5, 1.2], size=n)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return p, labels


def sharpen(p, power):
    q = p ** power
    return q / q.sum(1, keepdims=True)


def fake_run(path, ids, labels, oof, test_ids=(7, 3, 5), seed=0, eval="oof"):
    """A run folder as a train run writes it: oof.csv (or val.csv), submission.csv and
    metrics.json naming the scored file."""
    test = np.random.default_rng(seed).dirichlet([2, 2, 2], size=len(test_ids))
    m = runs.run_metrics(labels, oof, eval=eval, n_train=len(ids), n_test=len(test_ids),
                         seconds=0)
    runs.write_outputs(path, test_ids=list(test_ids), test_probs=test, metrics=m,
                       oof=runs.probs_frame(ids, oof, labels), oof_name=runs.EVAL_FILES[eval])
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
    oof = pd.read_csv(out / "oof.csv")  # the cross-fitted rows: honest for any later reader
    assert oof["id"].tolist() == ids.tolist() and oof["label"].tolist() == y.tolist()
    assert metrics.log_loss(y, oof[list(data.LABEL_COLS)].to_numpy()) == pytest.approx(
        res["blend_cv_log_loss"])
    m = runs.read_metrics(out)  # the run vocabulary
    assert m["eval"] == "oof" and m["log_loss"] == pytest.approx(res["blend_cv_log_loss"])
    assert m["n_shared_rows"] == m["n_eval"] == 600 and m["n_test"] == 3
    assert m["blend_weights"] == pytest.approx(res["weights"]) and res["log_loss"] == m["log_loss"]


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


def test_blend_of_partly_overlapping_runs_uses_exactly_the_shared_ids(tmp_path):
    p, y = true_probs(1300, seed=10)
    q = sharpen(p * np.random.default_rng(11).uniform(0.5, 1.5, p.shape), 1.5)
    kfold = fake_run(tmp_path / "kfold", np.arange(1000), y[:1000], p[:1000])  # oof.csv
    perm = np.random.default_rng(0).permutation(np.arange(500, 1300))  # val.csv, other order
    wrong = y.copy()
    wrong[1000:] = (wrong[1000:] + 1) % 3  # labels of rows only one run scored do not matter
    holdout = fake_run(tmp_path / "holdout", perm, wrong[perm], q[perm], seed=1, eval="val")
    res = blend.blend([kfold, holdout], tmp_path / "b", min_shared_rows=500)
    shared = np.arange(500, 1000)
    fake_run(tmp_path / "k_shared", shared, y[shared], p[shared])
    fake_run(tmp_path / "h_shared", shared, y[shared], q[shared], seed=1)
    same = blend.blend([tmp_path / "k_shared", tmp_path / "h_shared"], tmp_path / "b2")
    oof = pd.read_csv(tmp_path / "b" / "oof.csv")
    assert oof["id"].tolist() == shared.tolist() and oof["label"].tolist() == y[shared].tolist()
    assert res["n_shared_rows"] == runs.read_metrics(tmp_path / "b")["n_shared_rows"] == 500
    assert res["run_rows"][str(holdout)] == {"file": str(holdout / "val.csv"), "n_rows": 800}
    assert list(res["weights"].values()) == pytest.approx(list(same["weights"].values()), abs=1e-6)
    assert res["blend_cv_log_loss"] == pytest.approx(same["blend_cv_log_loss"], abs=1e-9)
    # the test prediction pools every run's submission.csv with the fitted weights and scaling
    subs = [submission.read(d / "submission.csv")[list(data.LABEL_COLS)].to_numpy()
            for d in (kfold, holdout)]
    scale = blend.Scaling(res["temperature"], tuple(res["bias"]))
    want = scale.apply(blend.pool(subs, np.array(list(res["weights"].values())), "log"))
    got = submission.read(tmp_path / "b" / "submission.csv", [7, 3, 5])
    np.testing.assert_allclose(got[list(data.LABEL_COLS)].to_numpy(), want, atol=1e-9)


def test_blend_refuses_fewer_shared_rows_than_the_floor(tmp_path, capsys):
    p, y = true_probs(450, seed=12)
    a = fake_run(tmp_path / "a", np.arange(300), y[:300], p[:300])
    b = fake_run(tmp_path / "b", np.arange(150, 450), y[150:], p[150:], eval="val")
    assert blend.MIN_SHARED_ROWS == 200
    with pytest.raises(blend_inputs.SharedRowsError) as err:
        blend.blend([a, b], tmp_path / "o")
    msg = str(err.value)
    assert "\n" not in msg and "share 150 scored row(s)" in msg and "min_shared_rows=200" in msg
    assert f"{a / 'oof.csv'} (300 rows)" in msg and f"{b / 'val.csv'} (300 rows)" in msg
    assert not (tmp_path / "o").exists()  # refused before OUT_DIR is touched
    assert blend.blend([a, b], tmp_path / "o", min_shared_rows=150)["n_shared_rows"] == 150
    assert cli.main(["blend", "--runs", str(a), str(b), "--out-dir", str(tmp_path / "c")]) == 1
    assert "share 150 scored row(s)" in capsys.readouterr().err
    assert cli.main(["blend", "--runs", str(a), str(b), "--out-dir", str(tmp_path / "c"),
                     "--min-shared-rows", "100"]) == 0
    assert "150 rows scored by every run" in capsys.readouterr().out


def test_blend_names_run_and_row_of_differing_labels_or_test_ids(tmp_path):
    p, y = true_probs(50, seed=7)
    fake_run(tmp_path / "full", np.arange(50), y, p)
    y2 = y.copy()
    y2[3] = (y2[3] + 1) % 3
    fake_run(tmp_path / "relabel", np.arange(50), y2, p)
    with pytest.raises(data.DataError, match="relabel/oof.csv: column 'label' of row id 3"):
        blend.blend([tmp_path / "full", tmp_path / "relabel"], tmp_path / "o", min_shared_rows=0)
    fake_run(tmp_path / "othertest", np.arange(50), y, p, test_ids=(1, 2, 3))
    with pytest.raises(data.DataError, match="test ids"):
        blend.blend([tmp_path / "full", tmp_path / "othertest"], tmp_path / "o", min_shared_rows=0)


def test_cross_fitting_folds_keep_prompts_together(tmp_path, monkeypatch):
    p, y = true_probs(300, seed=13)
    ids = np.arange(1000, 1300)
    prompts = [f'["question {i // 3}"]' for i in range(300)]  # three rows per prompt
    pd.DataFrame({"id": ids, "prompt": prompts, "response_a": '["A"]',
                  "response_b": '["B"]'}).to_csv(tmp_path / "train.csv", index=False)
    a = fake_run(tmp_path / "a", ids, y, p)
    b = fake_run(tmp_path / "b", ids[::-1], y[::-1], sharpen(p, 1.5)[::-1])
    seen, kfold = [], splits.kfold

    def spy(labels, n, seed=42, groups=None):
        seen.extend(kfold(labels, n, seed, groups=groups))
        return seen[-n:]

    monkeypatch.setattr(splits, "kfold", spy)
    res = blend.blend([a, b], tmp_path / "o", data_dir=tmp_path)
    assert res["cv_groups"] == f"prompt ({tmp_path / 'train.csv'})" and len(seen) == 5
    group = np.arange(300) // 3  # in the first run's id order
    assert all(not set(group[tr]) & set(group[va]) for tr, va in seen)
    res = blend.blend([a, b], tmp_path / "o", group_by="none", data_dir=tmp_path)
    assert res["cv_groups"].startswith("none") and any(
        set(group[tr]) & set(group[va]) for tr, va in seen[5:])
    assert blend.blend([a, b], tmp_path / "o")["cv_groups"].startswith("none (no train.csv")


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
    from lmsys_pref import xgb
    from lmsys_pref.configs.xgb import XGBConfig
    dirs = []
    for seed in (1, 2):
        cfg = XGBConfig(data_dir=str(quirks_dir), out_dir=str(tmp_path / f"x{seed}"),
                        n_estimators=20, seed=seed, n_jobs=1)
        xgb.fit(cfg)
        dirs.append(tmp_path / f"x{seed}")
    res = blend.blend(dirs, tmp_path / "b", min_shared_rows=40)
    test_ids = data.load_split(quirks_dir / "test.csv")["id"].tolist()
    submission.read(tmp_path / "b" / "submission.csv", test_ids)
    assert res["n_shared_rows"] == 40 and res["blend_oof_log_loss"] <= res["best_single_log_loss"]
    assert res["cv_groups"] == f"prompt ({quirks_dir / 'train.csv'})"  # the runs' saved data_dir


def test_blend_refuses_a_leaky_run_unless_allowed_and_says_why(tmp_path, capsys):
    from lmsys_pref.eval import report

    p, y = true_probs(300, seed=14)
    ids = np.arange(300)
    a = fake_run(tmp_path / "a", ids, y, p)
    b = fake_run(tmp_path / "b", ids, y, sharpen(p, 1.5), seed=1)
    leak = {"input": "teachers", "file": "runs/xgb/oof.csv", "leaked_rows": 300,
            "provenance": "saw", "why": "an oof.csv"}
    for run, honest, leaks in ((a, True, []), (b, False, [leak])):
        m = runs.read_metrics(run)
        runs.save_json(run / "metrics.json", {**m, "cv_honest": honest, "cv_leaks": leaks})
    with pytest.raises(blend_inputs.LeakyRunError,
                       match=rf"{b} is not cv-honest \(teachers runs/xgb/oof.csv: 300 held-out "
                             r"row\(s\) seen\).*--allow-leaky"):
        blend.blend([a, b], tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before any work
    blend.blend([a, b], tmp_path / "o", allow_leaky=True)
    m = runs.read_metrics(tmp_path / "o")
    assert m["cv_honest"] is False and m["cv_leaks"] == [{**leak, "run": str(b)}]
    blend.blend([a], tmp_path / "honest")  # every input honest: so is the blend
    assert runs.read_metrics(tmp_path / "honest")["cv_honest"] is True
    assert cli.main(["blend", "--runs", str(a), str(b), "--out-dir", str(tmp_path / "c")]) == 1
    assert "--allow-leaky" in capsys.readouterr().err
    assert cli.main(["blend", "--runs", str(a), str(b), "--out-dir", str(tmp_path / "c"),
                     "--allow-leaky"]) == 0
    printed = capsys.readouterr().out
    assert f"{a}: cv_honest: true" in printed and f"{b}: cv_honest: false" in printed
    assert "teachers `runs/xgb/oof.csv`: 300 held-out row(s) seen" in printed
    assert cli.main(["report", "--run-dir", str(b)]) == 0
    assert "cv_honest: false" in capsys.readouterr().out
    text = (b / "report.md").read_text()
    assert "## Held-out honesty" in text and "runs/xgb/oof.csv" in text
    report.write_report(a)
    assert "cv_honest: true" in (a / "report.md").read_text()
