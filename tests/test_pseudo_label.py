"""`lmsys-pref pseudo-label`: streamed, averaged over models with swap TTA, ids kept verbatim."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_rows import planted_rows, write_dir

from lmsys_pref import cli, data, runs, xgb
from lmsys_pref.commands import pseudo_label
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.data import labels, teachers
from lmsys_pref.infer.loaders import load_predictor

COLS = list(data.LABEL_COLS)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, sample_dir):
    """Two small XGBoost runs on the bundled sample (different seeds and depths)."""
    root = tmp_path_factory.mktemp("runs")
    for seed, depth in ((1, 2), (2, 3)):
        xgb.fit(XGBConfig(data_dir=str(sample_dir), out_dir=str(root / f"xgb{seed}"), n_folds=0,
                          n_estimators=15, max_depth=depth, seed=seed, n_jobs=1))
    return [str(root / "xgb1"), str(root / "xgb2")]


@pytest.fixture
def unlabelled(tmp_path):
    """A test.csv of 23 rows whose ids only keep their meaning as text ('007')."""
    df = planted_rows(23, seed=3)
    df["id"] = [f"00{i}" for i in range(len(df))]
    return write_dir(tmp_path / "data", planted_rows(4), test=df), df


def test_models_averaged_with_swap_tta_streamed_ids_verbatim(tmp_path, two_runs, unlabelled):
    data_dir, df = unlabelled
    out = tmp_path / "pl"
    record = pseudo_label.pseudo_label(two_runs, data_dir, out, chunk_rows=5)  # 5 chunks
    got = pd.read_csv(out / teachers.PSEUDO_LABELS, dtype=str)
    assert got["id"].tolist() == df["id"].tolist()  # '007' stays '007', order kept
    assert got["prompt"].tolist() == df["prompt"].tolist()  # cells as the file spells them
    rows = data.load_split(data_dir / "test.csv")
    want = np.mean([load_predictor(m).predict_proba(rows, tta="swap") for m in two_runs], 0)
    np.testing.assert_allclose(got[COLS].astype(float).to_numpy(), want, atol=1e-6)
    assert record["rows"] == 23 and record["tta"] == "swap" and record["one_hot_rows"] == 0
    assert [m["model_dir"] for m in record["models"]] == two_runs
    assert runs.load_json(out / teachers.PSEUDO_META)["models"][0]["kind"] == "xgb"


def test_hard_threshold_makes_sure_rows_one_hot(tmp_path, two_runs, unlabelled):
    data_dir, _ = unlabelled
    soft = pseudo_label.pseudo_label(two_runs[:1], data_dir, tmp_path / "soft")
    p = pd.read_csv(tmp_path / "soft" / teachers.PSEUDO_LABELS)[COLS].to_numpy()
    threshold = float(np.median(p.max(1)))
    hard = pseudo_label.pseudo_label(two_runs[:1], data_dir, tmp_path / "hard",
                                     hard_threshold=threshold)
    q = pd.read_csv(tmp_path / "hard" / teachers.PSEUDO_LABELS)[COLS].to_numpy()
    sure = p.max(1) >= threshold
    assert hard["one_hot_rows"] == sure.sum() > 0 and soft["one_hot_rows"] == 0
    np.testing.assert_array_equal(q[sure], np.eye(3)[p[sure].argmax(1)])
    np.testing.assert_allclose(q[~sure], p[~sure])
    with pytest.raises(ValueError, match="--hard-threshold 1.5"):
        pseudo_label.pseudo_label(two_runs[:1], data_dir, tmp_path / "x", hard_threshold=1.5)


def test_the_output_is_a_labelled_file_for_extra_train_and_teachers(tmp_path, two_runs,
                                                                     unlabelled):
    data_dir, df = unlabelled
    assert cli.main(["pseudo-label", "--model-dir", two_runs[0], "--model-dir", two_runs[1],
                     "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "pl")]) == 0
    path = tmp_path / "pl" / teachers.PSEUDO_LABELS
    extra, report = labels.load_extra([path], [planted_rows(4)], soft=True)
    assert extra["id"].tolist() == df["id"].tolist() and report["rows"] == 23
    with pytest.raises(data.DataError, match="not one-hot"):
        labels.load_extra([path], [planted_rows(4)], soft=False)
    assert teachers.read(path).index.tolist() == df["id"].tolist()


def test_bad_rows_in_a_later_chunk_name_the_file_row_and_column(tmp_path, two_runs):
    df = planted_rows(9)
    df.loc[7, "response_b"] = "not json"
    data_dir = write_dir(tmp_path / "d", planted_rows(4), test=df)
    with pytest.raises(data.DataError, match=r"test.csv: row id 1007, column 'response_b'"):
        pseudo_label.pseudo_label(two_runs[:1], data_dir, tmp_path / "o", chunk_rows=4)
    assert not (tmp_path / "o" / teachers.PSEUDO_LABELS).exists()  # no partial file
    df = planted_rows(9)
    df.loc[6, "id"] = "1001"  # repeats an id of the first chunk
    data_dir = write_dir(tmp_path / "d2", planted_rows(4), test=df)
    with pytest.raises(data.DataError, match=r"duplicate id\(s\) \['1001'\]"):
        pseudo_label.pseudo_label(two_runs[:1], data_dir, tmp_path / "o2", chunk_rows=4)


def test_never_saw_reads_what_each_run_kept_out(tmp_path, two_runs):
    assert pseudo_label.never_saw(two_runs[0]) == []  # the final booster fits every row
    model = tmp_path / "kfold" / "model"
    for k in (0, 1):
        runs.write_model_meta(model / f"fold_{k}", "encoder", {})
    runs.write_model_meta(model, "encoder", {}, folds=["fold_0", "fold_1"])
    runs.save_json(model / runs.HELD_OUT, {"fold_0": [1, 2], "fold_1": [3, 4]})
    assert pseudo_label.never_saw(model / "fold_1") == ["3", "4"]
    assert pseudo_label.never_saw(tmp_path / "kfold") == []  # the folds' mean saw every row


@pytest.mark.parametrize("value, words", [("0", "0: expected at least 1 row per chunk"),
                                          ("-5", "-5: expected at least 1 row per chunk"),
                                          ("1e3", "'1e3' is not a whole number of rows")])
def test_chunk_rows_below_one_is_a_named_argument_error(value, words, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.setattr(pseudo_label, "load_predictor", lambda *a, **k: pytest.fail("loaded"))
    argv = ["pseudo-label", "--model-dir", str(tmp_path / "m"), "--data-dir", str(tmp_path),
            "--out-dir", str(tmp_path / "out"), "--chunk-rows", value]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"lmsys-pref pseudo-label: error: argument --chunk-rows: {words}")
    with pytest.raises(ValueError, match="--chunk-rows 0: expected at least 1 row per chunk"):
        pseudo_label.pseudo_label([str(tmp_path / "m")], tmp_path, tmp_path / "out", chunk_rows=0)
    assert not (tmp_path / "out").exists()  # refused before OUT_DIR was touched
