"""Metrics match Kaggle's scoring; submissions hold exactly the test ids in order."""
import numpy as np
import pytest

from lmsys_pref import runs
from lmsys_pref.data import metrics
from lmsys_pref.runs import submission


def test_log_loss_uniform_and_perfect():
    y = np.array([0, 1, 2, 0])
    assert metrics.log_loss(y, np.full((4, 3), 1 / 3)) == pytest.approx(np.log(3))
    assert metrics.log_loss(y, np.eye(3)[y]) < 1e-10


def test_log_loss_normalises_rows_and_clips_like_kaggle():
    y = np.array([0, 1])
    unnormalised = np.array([[2.0, 1.0, 1.0], [0.0, 3.0, 1.0]])
    expected = -np.mean([np.log(0.5), np.log(0.75)])
    assert metrics.log_loss(y, unnormalised) == pytest.approx(expected)
    wrong = np.array([[0.0, 1.0, 0.0]])  # a zero on the label: clipped, finite
    assert metrics.log_loss([0], wrong) == pytest.approx(-np.log(1e-15), rel=1e-6)


def test_evaluate_per_class_and_calibration():
    y = np.array([0, 0, 1, 2])
    p = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .8, .1], [.2, .2, .6]])
    ev = metrics.evaluate(y, p)
    assert ev["accuracy"] == 0.75
    assert ev["per_class"]["a"]["recall"] == 0.5 and ev["per_class"]["b"]["precision"] == 0.5
    assert ev["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # top-class confidence .8 on 3 rows (2 right) and .6 on 1 (right): .75 * |.8 - 2/3| + .25 * .4
    assert ev["ece"] == pytest.approx(0.2)


def test_write_renormalises_rounding_only(tmp_path):
    ids = [5, 3, 9]
    rounded = np.array([[.3334, .3333, .3334], [1, 0, 0], [.2, .3, .5]])  # first sums to 1.0001
    path = submission.write(ids, rounded, tmp_path / "s.csv")
    sub = submission.read(path, ids)
    assert sub["id"].tolist() == ["5", "3", "9"]  # ids are text; numbers compare as their text
    np.testing.assert_allclose(sub.iloc[:, 1:].sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(sub.iloc[0, 1:].to_numpy(float), rounded[0] / 1.0001)
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary left


@pytest.mark.parametrize("row", [[-1, -1, -2], [5, 0, 0], [np.nan, .5, .5], [1, 1, 2],
                                 [-.2, .6, .6], [np.inf, 0, 0]])
def test_write_rejects_rows_before_normalising(tmp_path, row):
    probs = np.array([[.2, .3, .5], row, [1, 0, 0]], dtype=float)
    with pytest.raises(submission.SubmissionError, match=r"s\.csv: row id 3: column"):
        submission.write([5, 3, 9], probs, tmp_path / "s.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mutate, match", [
    (lambda s: s.iloc[[1, 0, 2]], "ids differ"),
    (lambda s: s.iloc[:2], "ids differ"),
    (lambda s: s.assign(winner_tie=np.nan), "row id"),
    (lambda s: s.assign(winner_model_a=1.5), "row id"),
    (lambda s: s.rename(columns={"winner_tie": "tie"}), "columns"),
])
def test_validate_rejects(mutate, match):
    ids = [5, 3, 9]
    good = submission.to_frame(ids, np.full((3, 3), 1 / 3))
    with pytest.raises(submission.SubmissionError, match=match):
        submission.validate(mutate(good).reset_index(drop=True), ids)


def test_run_metrics_vocabulary(tmp_path):
    y = np.array([0, 0, 1, 2])
    p = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .8, .1], [.2, .2, .6]])
    m = runs.run_metrics(y, p, eval="oof", n_train=4, n_test=2, seconds=1.234, n_folds=2)
    assert list(m) == [*runs.METRIC_KEYS, "n_folds"]
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([.8, .1, .8, .6])))
    assert (m["accuracy"], m["eval"], m["n_train"], m["n_test"], m["seconds"]) == (
        0.75, "oof", 4, 2, 1.23)
    assert m["ece"] == pytest.approx(0.2)
    runs.write_outputs(tmp_path, test_ids=None, test_probs=None, metrics=m)
    assert runs.read_metrics(tmp_path) == m
    unscored = runs.run_metrics(None, None, eval=None, n_train=4, n_test=0, seconds=0)
    assert [unscored[k] for k in ("log_loss", "accuracy", "ece", "eval")] == [None] * 4


@pytest.mark.parametrize("change, match", [
    ({"cv_log_loss": 1.0}, r"unknown key\(s\) \['cv_log_loss'\]"),
    ({"eval": "cv"}, "'eval' is 'cv'"),
    ({"eval": None}, "'eval' is None"),  # scores without saying which rows they are of
])
def test_check_metrics_rejects(change, match):
    good = runs.run_metrics([0, 1], np.eye(3)[[0, 1]], eval="val", n_train=10, n_test=0,
                            seconds=1)
    with pytest.raises(ValueError, match=match):
        runs.check_metrics({**good, **change}, "run/metrics.json")
    with pytest.raises(ValueError, match=r"run/metrics.json: missing key\(s\) \['ece'\]"):
        runs.check_metrics({k: v for k, v in good.items() if k != "ece"}, "run/metrics.json")
