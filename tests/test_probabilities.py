"""One check for rows of class probabilities (labels, teacher rows, predictions), one tolerance
per meaning."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmsys_pref.data import labels, probabilities, teachers
from lmsys_pref.runs import submission

COLS = ("winner_model_a", "winner_model_b", "winner_tie")


def test_a_label_is_exact_a_prediction_may_be_rounded():
    rounded = [[0.333, 0.333, 0.333]]  # a prediction written with 3 decimals: sum 0.999
    assert probabilities.check_rows(rounded, ["7"], COLS, "p.csv",
                                    probabilities.PREDICTION_TOL).shape == (1, 3)
    with pytest.raises(probabilities.DataError, match=r"l\.csv: row id 7: columns .* sum to "
                                                      r"0\.999 .* within 1e-06"):
        probabilities.check_rows(rounded, ["7"], COLS, "l.csv", probabilities.LABEL_TOL)


@pytest.mark.parametrize("cell, shown", [("x", "'x'"), (np.nan, "empty"), (1.5, "1.5"),
                                         (-0.1, "-0.1")])
def test_a_bad_cell_is_named_by_row_id_and_column(cell, shown):
    frame = pd.DataFrame({"a": [0.5, 0.5], "b": [0.5, cell]}, dtype=object)
    with pytest.raises(probabilities.DataError,
                       match=rf"f\.csv: row id 9: column 'b' is {shown}, expected a probability"):
        probabilities.check_rows(frame, ["8", "9"], ("a", "b"), "f.csv",
                                 probabilities.LABEL_TOL)


def test_the_callers_share_the_check_and_its_tolerances(tmp_path):
    """Soft labels use the label tolerance, teacher files and submissions the prediction one;
    a submission's error keeps its own class."""
    rows = np.array([[0.2, 0.3, 0.5004]])  # off by 4e-4: rounding for a prediction only
    ids = ["1"]
    submission.check_probs(ids, rows)
    df = pd.DataFrame({"id": ids, **dict(zip(COLS, rows.T))})
    with pytest.raises(probabilities.DataError, match="within 1e-06"):
        labels.check_soft(df.copy(), "train.csv")
    df.to_csv(tmp_path / "t.csv", index=False)
    assert teachers.read(tmp_path / "t.csv").sum(1).tolist() == pytest.approx([1.0])
    with pytest.raises(submission.SubmissionError, match="row id 1: columns .* within 0.001"):
        submission.check_probs(ids, [[0.2, 0.3, 0.6]])
