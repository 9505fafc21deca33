"""Metrics match Kaggle's scoring; submissions hold exactly the test ids in order."""
import numpy as np
import pytest

from lmsys_pref import metrics, submission


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
    assert 0 <= ev["ece"] <= 1


def test_write_and_validate(tmp_path):
    ids = [5, 3, 9]
    path = submission.write(ids, np.array([[1, 1, 2], [1, 0, 0], [.2, .3, .5]]), tmp_path / "s.csv")
    sub = submission.read(path, ids)
    assert sub["id"].tolist() == ids
    assert np.allclose(sub.iloc[:, 1:].sum(1), 1)


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
