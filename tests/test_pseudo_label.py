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


# --- provenance and per-fold files (issue 29) ---------------------------------------------

def kfold_xgb(sample_dir, out, seed=42, **levers):
    """A 2-fold XGBoost run on the bundled sample (200 train rows, 50 test rows)."""
    return xgb.fit(XGBConfig(data_dir=str(sample_dir), out_dir=str(out), n_folds=2, seed=seed,
                             n_estimators=15, early_stopping_rounds=0, n_jobs=1, **levers))


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("kfold") / "xgb"
    kfold_xgb(sample_dir, out)
    return out


def test_a_kfold_xgb_run_keeps_each_fold_booster_and_what_it_never_saw(kfold_run, sample_dir):
    model = kfold_run / "model"
    held = runs.load_json(model / runs.HELD_OUT)
    train = data.load_split(sample_dir / "train.csv")
    assert sorted(held) == ["fold_0", "fold_1"] and (model / xgb.BOOSTER).is_file()
    assert sorted(held["fold_0"] + held["fold_1"]) == sorted(train["id"])
    assert runs.read_model_meta(model)["fold_models"] == ["fold_0", "fold_1"]
    oof = runs.read_probs(kfold_run / "oof.csv").set_index("id").loc[train["id"]]
    by_fold = load_predictor(kfold_run, out_of_fold=True)  # each row: the fold that never saw it
    np.testing.assert_allclose(by_fold.predict_proba(train), oof[COLS].to_numpy(), atol=1e-6)
    assert pseudo_label.never_saw(model / "fold_1") == held["fold_1"]
    assert pseudo_label.never_saw(kfold_run) == []  # the final booster fits every row


def test_the_record_says_which_split_it_scored_and_what_each_model_trained_on(
        tmp_path, kfold_run, sample_dir):
    record = pseudo_label.pseudo_label([str(kfold_run)], sample_dir, tmp_path / "pl")
    assert record["split"] == "test" and record["rows_are"].startswith("unlabelled test rows")
    assert record["never_saw"] == [] and record["rows"] == 50
    (model,) = record["models"]
    assert model["trained_on"] == {"data_dir": str(sample_dir), "fold": None,
                                   "labelled_rows": 200, "extra_train": [], "teachers": [],
                                   "soft_labels": False, "run_cv_honest": True}
    train = pseudo_label.pseudo_label([str(kfold_run)], sample_dir, tmp_path / "t",
                                      split="train")
    assert train["rows_are"].startswith("training rows")


def test_per_fold_files_come_from_the_fold_models_with_their_provenance(
        tmp_path, kfold_run, sample_dir, two_runs):
    records = pseudo_label.pseudo_label_per_fold([str(kfold_run)], sample_dir, tmp_path / "pl")
    held = runs.load_json(kfold_run / "model" / runs.HELD_OUT)
    test = data.load_split(sample_dir / "test.csv")
    assert len(records) == 2
    for k, record in enumerate(records):
        fold = tmp_path / "pl" / f"fold_{k}"
        got = pd.read_csv(fold / teachers.PSEUDO_LABELS, dtype={"id": str})
        want = load_predictor(kfold_run / "model" / f"fold_{k}").predict_proba(test, tta="swap")
        np.testing.assert_allclose(got[COLS].to_numpy(), want, atol=1e-6)
        assert runs.load_json(fold / teachers.PSEUDO_META) == record
        assert record["never_saw"] == sorted(held[f"fold_{k}"])
        trained = record["models"][0]["trained_on"]
        assert trained["fold"] == f"fold_{k}"
        assert trained["labelled_rows"] == 200 - len(held[f"fold_{k}"])
    with pytest.raises(data.DataError, match=r"no held_out.json .* --per-fold needs"):
        pseudo_label.pseudo_label_per_fold(two_runs[:1], sample_dir, tmp_path / "x")
    other = tmp_path / "seed7"
    kfold_xgb(sample_dir, other, seed=7)
    with pytest.raises(data.DataError, match=r"seed7: its folds hold out other rows"):
        pseudo_label.pseudo_label_per_fold([str(kfold_run), str(other)], sample_dir,
                                           tmp_path / "y")


@pytest.mark.parametrize("per_fold", [False, True])
def test_the_readme_recipe_trains_on_pseudo_labelled_test_rows(tmp_path, kfold_run,
                                                                sample_dir, per_fold):
    """`pseudo-label` of the run's own test.csv, then `-p extra_train`: the rows are used; made
    by the final model (which saw every held-out row) the run says its CV is not honest, made
    per fold it is."""
    out = tmp_path / "pl"
    assert cli.main(["pseudo-label", "--model-dir", str(kfold_run), "--data-dir",
                     str(sample_dir), "--out-dir", str(out)]
                    + (["--per-fold"] if per_fold else [])) == 0
    spec = str(out / "fold_{fold}" / teachers.PSEUDO_LABELS) if per_fold else \
        str(out / teachers.PSEUDO_LABELS)
    m = kfold_xgb(sample_dir, tmp_path / "student", soft_labels=True, extra_train=[spec])
    files = m["extra_train"]["files"]
    assert len(files) == (2 if per_fold else 1)
    assert all(f["used"] == f["test_rows_kept"] == 50 for f in files.values())
    assert runs.read_metrics(tmp_path / "student")["cv_honest"] is per_fold
    if not per_fold:
        (leak,) = m["cv_leaks"]
        assert leak["file"] == spec and leak["input"] == "extra_train"
        assert leak["leaked_rows"] == 200 and leak["provenance"] == "never_saw"
