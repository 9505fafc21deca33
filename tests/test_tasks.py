"""Every Arena preference task, not only the 2024 one: the WSDM Cup 2025's shape (parquet,
plain-string turns, a `winner` column, text ids, two classes, accuracy) beside the 2024 one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import data, runs
from lmsys_pref.commands import predict
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.configs.tasks import TASKS
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import splits
from lmsys_pref.data.task import detect, resolve, to_task
from lmsys_pref.eval import blend, report
from lmsys_pref.runs import submission

WSDM = TASKS["wsdm-2025"]
TINY_XGB = {"n_estimators": 20, "n_folds": 3, "early_stopping_rounds": 0, "n_jobs": 1}


def test_a_data_folder_names_its_task(sample_dir, wsdm_dir, tmp_path):
    assert detect(sample_dir).name == "lmsys-2024" and detect(wsdm_dir) is WSDM
    (tmp_path / "sample_submission.csv").write_text("id,winner_model_a,winner_model_b\n1,.5,.5\n")
    with pytest.raises(data.DataError, match=r"sample_submission.csv: header .* no known task"):
        detect(tmp_path)
    assert resolve("wsdm-2025", sample_dir) is WSDM  # -p task wins over the folder
    with pytest.raises(data.DataError, match="task 'wsdm' is unknown"):
        resolve("wsdm", sample_dir)


def test_wsdm_rows_load_as_the_library_shape(wsdm_dir):
    train = data.load_split(wsdm_dir / "train.parquet", labelled=True, task=WSDM)
    raw = pd.read_parquet(wsdm_dir / "train.parquet")
    assert train["id"].tolist() == raw["id"].tolist()  # hash-like text ids, verbatim, in order
    assert all(isinstance(t, list) and len(t) == 1 for t in train["response_a"])  # one turn
    assert (train["label"] == raw["winner"].map({"model_a": 0, "model_b": 1})).all()
    np.testing.assert_array_equal(data.onehot(train["label"], 2),
                                  train[["winner_model_a", "winner_model_b"]])
    test = data.load_split(wsdm_dir / "test.parquet", labelled=False, task=WSDM)
    assert test["id"].tolist() == pd.read_parquet(wsdm_dir / "test.parquet")["id"].astype(
        str).tolist()


def test_a_bad_winner_or_id_is_named(wsdm_dir, tmp_path):
    raw = pd.read_parquet(wsdm_dir / "train.parquet")
    raw.loc[4, "winner"] = "tie"
    raw.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(data.DataError, match=rf"row id {raw.loc[4, 'id']}: column 'winner' is "
                                             r"'tie', expected one of \['model_a', 'model_b'\]"):
        data.load_split(tmp_path / "train.parquet", labelled=True, task=WSDM)
    raw = pd.read_parquet(wsdm_dir / "train.parquet")
    raw.loc[2, "id"] = raw.loc[1, "id"]
    raw.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(data.DataError, match="duplicate id"):
        data.load_split(tmp_path / "train.parquet", labelled=True, task=WSDM)


def test_the_2024_task_still_wants_integer_ids(sample_dir, tmp_path):
    raw = pd.read_csv(sample_dir / "train.csv", dtype=str)
    raw.loc[0, "id"] = "row_30614122"
    raw.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(data.DataError, match="expected an integer id"):
        data.load_split(tmp_path / "train.csv", labelled=True)


def test_folds_hold_every_language():
    df = pd.DataFrame({"label": [0, 1] * 60, "language": ["en"] * 80 + ["ru"] * 30 + ["zh"] * 10,
                       "prompt": [[f"p{i}"] for i in range(120)]})
    folds = splits.kfold(splits.strata(df), 5, 0)
    for _, va in folds:  # ru (15 rows of each class) is spread over every fold
        assert (df["language"].to_numpy()[va] == "ru").sum() == 6
    strata = splits.strata(df)  # 2 labels x (en, ru, the rare languages' shared stratum)
    assert len(set(strata)) == 6 and len(set(strata[df["language"] == "zh"])) == 2
    assert (splits.strata(df.drop(columns="language")) == df["label"]).all()


def test_a_three_class_model_scores_a_two_class_task():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(to_task(p, WSDM), [[0.625, 0.375], [0.5, 0.5]])
    assert to_task(p, TASKS["lmsys-2024"]) is not None
    with pytest.raises(data.DataError, match="a 2-class model cannot score task lmsys-2024"):
        to_task(p[:, :2], TASKS["lmsys-2024"])


def test_a_labels_submission_is_checked(tmp_path):
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    path = submission.write(["h1", "7"], probs, tmp_path / "s.csv", WSDM)
    assert path.read_text().splitlines() == ["id,winner", "h1,model_a", "7,model_b"]
    bad = pd.DataFrame({"id": ["h1", "7"], "winner": ["model_a", "tie"]})
    with pytest.raises(submission.SubmissionError, match="row id 7: column 'winner' is 'tie'"):
        submission.validate(bad, ["h1", "7"], "s.csv", WSDM)


@pytest.fixture(scope="module")
def wsdm_xgb(wsdm_dir, tmp_path_factory):
    from lmsys_pref import xgb

    out = tmp_path_factory.mktemp("wsdm") / "xgb"
    xgb.fit(XGBConfig(data_dir=str(wsdm_dir), out_dir=str(out), **TINY_XGB))
    return out


def test_xgboost_on_a_wsdm_folder_writes_id_winner(wsdm_xgb, wsdm_dir):
    m = runs.read_metrics(wsdm_xgb)
    assert m["task"] == "wsdm-2025" and m["metric"] == "accuracy" and 0 <= m["accuracy"] <= 1
    assert set(m["by_language"]) == {"English", "Russian", "Chinese"}
    test_ids = pd.read_parquet(wsdm_dir / "test.parquet")["id"].astype(str).tolist()
    sub = pd.read_csv(wsdm_xgb / "submission.csv", dtype=str)
    assert list(sub.columns) == ["id", "winner"] and sub["id"].tolist() == test_ids
    probs = runs.read_test_probs(wsdm_xgb)
    assert list(probs.columns) == ["id", "winner_model_a", "winner_model_b"]
    assert (np.where(probs["winner_model_a"] >= 0.5, "model_a", "model_b") == sub["winner"]).all()
    oof = runs.read_probs(wsdm_xgb / "oof.csv")
    assert list(oof.columns) == ["id", "label", "winner_model_a", "winner_model_b"]


def test_predict_blend_and_report_speak_the_runs_task(wsdm_xgb, wsdm_dir, tmp_path):
    summary = predict.predict(PredictConfig(model_dir=str(wsdm_xgb), data_dir=str(wsdm_dir),
                                            out_dir=str(tmp_path / "pred")))
    assert summary["task"] == "wsdm-2025"
    sub = submission.read(tmp_path / "pred" / "submission.csv")
    assert list(sub.columns) == ["id", "winner"]
    res = blend.blend([wsdm_xgb, wsdm_xgb], tmp_path / "blend", min_shared_rows=50)
    assert res["task"] == "wsdm-2025"
    assert submission.read(tmp_path / "blend" / "submission.csv")["id"].tolist() == \
        sub["id"].tolist()
    text = report.write_report(wsdm_xgb).read_text()
    assert "accuracy **" in text and "## By language" in text


def test_a_2024_model_predicts_a_wsdm_folder_without_ties(sample_dir, wsdm_dir, tmp_path):
    from lmsys_pref import xgb

    xgb.fit(XGBConfig(data_dir=str(sample_dir), out_dir=str(tmp_path / "m"), **TINY_XGB))
    predict.predict(PredictConfig(model_dir=str(tmp_path / "m"), data_dir=str(wsdm_dir),
                                  out_dir=str(tmp_path / "p")))
    sub = pd.read_csv(tmp_path / "p" / "submission.csv", dtype=str)
    assert list(sub.columns) == ["id", "winner"] and len(sub) == 50


def test_runs_of_two_tasks_do_not_blend(wsdm_xgb, sample_dir, tmp_path):
    from lmsys_pref import xgb

    xgb.fit(XGBConfig(data_dir=str(sample_dir), out_dir=str(tmp_path / "m"), **TINY_XGB))
    with pytest.raises(data.DataError, match="cannot blend"):
        blend.blend([wsdm_xgb, tmp_path / "m"], tmp_path / "b", min_shared_rows=1)


def test_a_planted_task_in_the_wsdm_shape(sample_dir, tmp_path):
    from lmsys_pref.eval import planted

    out = planted.make(sample_dir, tmp_path / "pl", n_train=80, n_test=30, task=WSDM)
    assert detect(out) is WSDM and (out / "train.parquet").exists()
    train = data.load_split(out / "train.parquet", labelled=True, task=WSDM)
    assert set(train["label"]) == {0, 1}  # no ties planted
    answers = runs.read_probs(out / planted.ANSWERS)
    right = answers["winner_model_a"].map({1: "model_a", 0: "model_b"})
    pd.DataFrame({"id": answers["id"], "winner": right}).to_csv(tmp_path / "s.csv", index=False)
    assert planted.score(out / planted.ANSWERS, tmp_path / "s.csv")["accuracy"] == 1.0
    wrong = right.map({"model_a": "model_b", "model_b": "model_a"})
    pd.DataFrame({"id": answers["id"], "winner": wrong}).to_csv(tmp_path / "s.csv", index=False)
    assert planted.score(out / planted.ANSWERS, tmp_path / "s.csv")["accuracy"] == 0.0


def test_pseudo_labels_of_a_wsdm_test_file_train_a_wsdm_run(wsdm_xgb, wsdm_dir, tmp_path):
    """pseudo-label reads the parquet test rows in the task's format and writes two-class soft
    labels that a two-class run takes as extra rows (and XGBoost as teacher rows)."""
    from lmsys_pref import xgb
    from lmsys_pref.commands import pseudo_label

    record = pseudo_label.pseudo_label([str(wsdm_xgb)], wsdm_dir, tmp_path / "pl")
    labelled = pd.read_csv(tmp_path / "pl" / "pseudo_labels.csv", dtype={"id": str})
    ids = pd.read_parquet(wsdm_dir / "test.parquet")["id"].astype(str).tolist()
    assert record["rows"] == 50 and labelled["id"].tolist() == ids
    assert {"winner_model_a", "winner_model_b"} <= set(labelled.columns)
    assert "winner_tie" not in labelled.columns
    m = xgb.fit(XGBConfig(data_dir=str(wsdm_dir), out_dir=str(tmp_path / "s"), soft_labels=True,
                          extra_train=[str(tmp_path / "pl" / "pseudo_labels.csv")], **TINY_XGB))
    assert m["extra_train"]["rows"] == 50 and m["task"] == "wsdm-2025"
