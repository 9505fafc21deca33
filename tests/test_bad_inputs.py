"""The bad-input corpus (tests/fixtures/bad_inputs, written by its make_cases.py) and faults.

Every case goes through `lmsys_pref.cli.main` in-process: a bad input ends with one line on
stderr naming the file (row id, column), a non-zero exit and no output; a quirky but valid
input works. Faults (unwritable OUT_DIR, a full disk) leave no partial or stale file.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import cli, data, runs, xgb
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.eval import report
from lmsys_pref.files import atomic

CORPUS = Path(__file__).resolve().parent / "fixtures" / "bad_inputs"
TINY = ["-p", "n_estimators", "5", "-p", "n_folds", "2"]
OUTPUTS = ("submission.csv", "oof.csv", "metrics.json", "predict.json", "model")

# case folder, command, expected exit, fragments of the stderr line
CASES = [
    ("train_empty_label", "train", 1, ["train.csv", "row id 105", "'winner_tie'", "empty"]),
    ("train_nan_label", "train", 1, ["train.csv", "row id 106", "'winner_model_b'", "'NaN'"]),
    ("train_string_id", "train", 1, ["train.csv", "column 'id'", "'row_30614122'", "integer"]),
    ("train_semicolon", "train", 1, ["train.csv", "not comma-separated", "found ['id;model_a"]),
    ("train_header_only", "train", 1, ["train.csv", "no data rows"]),
    ("train_broken_json", "train", 1, ["train.csv", "row id 108", "'prompt'", "JSON"]),
    ("train_not_onehot", "train", 1, ["train.csv", "row id 103", "one-hot"]),
    ("train_duplicate_ids", "train", 1, ["train.csv", "duplicate id(s) ['109']", "'id'"]),
    # issue 20: shapes that were quietly reshaped, cut rows, cut model files
    ("train_object_turn", "train", 1, ["train.csv", "row id 105", "'prompt'", "turn 0",
                                       "JSON object", "string or null"]),
    ("test_number_turn", "predict", 1, ["test.csv", "row id 203", "'response_a'", "turn 1",
                                        "JSON number"]),
    ("train_duplicate_header", "train", 1, ["train.csv", "['prompt']", "more than once"]),
    ("train_cut_last_row", "train", 1, ["train.csv", "row id 112", "cut off", "7 of 9",
                                        "'winner_model_b'"]),
    ("test_cut_last_row", "predict", 1, ["test.csv", "row id 204", "cut off", "quoted field"]),
    ("test_cut_last_row", "train", 1, ["test.csv", "row id 204", "cut off"]),
    ("model_cut_booster", "predict_with_model", 1, ["booster.json",
                                                    "not a readable XGBoost model"]),
    ("model_cut_adapter", "predict_with_model", 1, ["adapter_model.safetensors", "cut off"]),
    ("model_cut_adapter_config", "predict_with_model", 1, ["adapter_config.json",
                                                           "not valid JSON"]),
    ("model_cut_tokenizer", "predict_with_model", 1, ["tokenizer.json", "not valid JSON"]),
    ("test_header_only", "train", 1, ["test.csv", "no data rows"]),
    ("test_header_only", "predict", 1, ["test.csv", "no data rows"]),
    ("test_missing_column", "train", 1, ["test.csv", "missing column(s) ['response_b']"]),
    ("test_missing_column", "predict", 1, ["test.csv", "missing column(s) ['response_b']"]),
    ("test_string_id", "predict", 1, ["test.csv", "column 'id'", "'a1'"]),
    ("test_latin1", "predict", 1, ["test.csv", "not UTF-8", "line 2"]),
    ("run_negative_submission", "blend", 1, ["run_negative_submission/submission.csv",
                                             "row id 201", "-0.2"]),
    ("run_five_submission", "blend", 1, ["run_five_submission/submission.csv", "row id 202",
                                         "column 'winner_model_a' is 5"]),
    ("run_nan_oof", "calibrate", 1, ["run_nan_oof/oof.csv", "row id 107", "nan"]),
    ("run_string_oof_ids", "blend", 1, ["run_string_oof_ids/oof.csv", "column 'id'", "'101x'",
                                        "integer"]),
    ("model_broken_meta", "predict_with_model", 1, ["lmsys_pref.json", "not valid JSON"]),
    ("_base", "train -p n_folds five", 2, ["'n_folds'", "'five'", "int"]),
    ("_base", "train -p tta both", 2, ["'tta'", "'both'", "'none', 'swap'"]),
    ("_base", "train -p n_fold 2", 2, ["unknown parameter(s) ['n_fold']"]),
    ("_base", "train --preset nope", 2, ["unknown preset 'nope'"]),
    ("_base", "train -p n_estimators -5", 2, ["'n_estimators'", "-5", "out of range", ">= 1"]),
    ("_base", "train -p max_train_rows -5", 2, ["'max_train_rows'", "out of range", ">= 0"]),
    ("_base", "train -p n_folds -3", 2, ["'n_folds'", "-3", "out of range"]),
    ("_base", "train -p learning_rate inf", 2, ["'learning_rate'", "inf", "finite", "> 0"]),
    ("_base", "train -p subsample 2", 2, ["'subsample'", "2.0", "in (0, 1]"]),
    ("_base", "train -p n_folds 500", 1, ["train.csv", "n_folds 500", "class", "of 12 rows"]),
    ("_base", "train out_is_data", 2, ["out_dir", "is the data_dir"]),
    ("_base", "predict out_is_data", 2, ["out_dir", "is the data_dir"]),
    ("_base", "predict out_is_model", 2, ["out_dir", "is the model_dir"]),
    ("_base", "blend out_is_run", 2, ["out_dir", "is the run_dirs"]),
    ("_base", "blend out_holds_run", 2, ["out_dir", "contains the run_dirs"]),
    ("_base", "train out_under_file", 1, ["OUT_DIR is not writable", "out"]),
    ("_base", "predict out_under_file", 1, ["out"]),
    ("_base", "blend missing_run", 1, ["no_such_run", "no such run folder"]),
]
WORKING = ["test_null_turn", "test_empty_list", "test_lone_surrogate", "test_long_answer",
           "test_bom_crlf", "test_parquet", "test_uneven_turns", "test_text_ids"]


def materialise(case: str, tmp_path: Path) -> Path:
    """The case's folder as a full input: `_base` files, then the case's own over them."""
    dst = tmp_path / case
    if case.startswith(("run_", "model_")):
        shutil.copytree(CORPUS / case, dst)
        return dst
    shutil.copytree(CORPUS / "_base", dst)
    for f in (CORPUS / case).iterdir():
        for old in dst.glob(f"{f.stem}.*"):
            old.unlink()
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), n_folds=2,
                      n_estimators=5, early_stopping_rounds=0))
    return out


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A valid run folder over the corpus' ids (12 OOF rows, 4 test rows)."""
    out = tmp_path_factory.mktemp("good")
    train = data.load_split(CORPUS / "_base" / "train.csv")
    probs = np.tile([0.4, 0.35, 0.25], (12, 1))
    runs.write_outputs(out, test_ids=[201, 202, 203, 204], test_probs=probs[:4], metrics={},
                       oof=runs.probs_frame(train["id"], probs, train["label"]))
    return out


def command(spec: str, case_dir: Path, out: Path, model_dir: Path, good_run: Path) -> list[str]:
    verb, *extra = spec.split()
    if "out_under_file" in extra:
        (out.parent / "a_file").write_text("x")
        out, extra = out.parent / "a_file" / "out", []
    if "out_is_data" in extra:
        out, extra = case_dir, []
    if "out_is_model" in extra:
        out, extra = model_dir, []
    if "out_is_run" in extra or "out_holds_run" in extra:
        return ["blend", "--runs", str(good_run), str(good_run), "--out-dir",
                str(good_run if "out_is_run" in extra else good_run.parent)]
    if verb == "train":
        return ["train", "xgb", "--data-dir", str(case_dir), "--out-dir", str(out), *TINY, *extra]
    if verb == "predict":
        return ["predict", "--model-dir", str(model_dir), "--data-dir", str(case_dir),
                "--out-dir", str(out)]
    if verb == "predict_with_model":
        return ["predict", "--model-dir", str(case_dir), "--data-dir", str(CORPUS / "_base"),
                "--out-dir", str(out)]
    if verb == "blend":
        run = case_dir.parent / "no_such_run" if "missing_run" in extra else case_dir
        return ["blend", "--runs", str(good_run), str(run), "--out-dir", str(out)]
    return ["calibrate", "--run-dir", str(case_dir), "--out-dir", str(out)]


def leftovers(out: Path) -> list[str]:
    """Outputs or temporaries in `out` (none may be left by a failed run)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name in OUTPUTS or ".tmp" in p.name)


@pytest.mark.parametrize("case, spec, code, fragments", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input_ends_in_one_named_line(case, spec, code, fragments, tmp_path, capsys,
                                          model_dir, good_run):
    out = tmp_path / "out"
    argv = command(spec, materialise(case, tmp_path), out, model_dir, good_run)
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1 and "Traceback" not in err, err
    for frag in fragments:
        assert frag in line[0], (frag, line[0])
    assert leftovers(out) == []


@pytest.mark.parametrize("case", WORKING)
def test_quirky_test_files_are_scored(case, tmp_path, capsys, model_dir):
    case_dir = materialise(case, tmp_path)
    assert cli.main(command("predict", case_dir, tmp_path / "out", model_dir, None)) == 0
    path = data.find_file(case_dir, "test")
    raw = pd.read_csv(path, dtype=str) if path.suffix == ".csv" else pd.read_parquet(path)
    sub = pd.read_csv(tmp_path / "out" / "submission.csv", dtype={"id": str})
    assert sub["id"].tolist() == raw["id"].astype(str).tolist()  # the file's id text, in order
    assert np.allclose(sub.iloc[:, 1:].sum(1), 1)


def test_learning_rate_in_e_notation_is_a_float(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["train", "xgb", "--data-dir", str(CORPUS / "_base"), "--out-dir", str(out),
                     "-p", "learning_rate", "1e-4", "-p", "n_folds", "1", "-p", "n_estimators",
                     "5"]) == 0
    saved = runs.read_model_meta(out)["config"]
    assert saved["learning_rate"] == 1e-4 and saved["n_folds"] == 1
    assert (out / "submission.csv").exists() and not (out / "oof.csv").exists()
    assert "No labelled row was scored" in (out / "report.md").read_text()


def test_n_folds_zero_final_fit_only(tmp_path):
    out = tmp_path / "run"
    m = xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), n_folds=0,
                          n_estimators=5))
    assert m["log_loss"] is None and m["n_train"] == 12 and m["n_test"] == 4
    assert pd.read_csv(out / "submission.csv")["id"].tolist() == [201, 202, 203, 204]  # ints
    assert not (out / "oof.csv").exists()
    assert report.write_report(out).read_text().startswith("# Report: run")
    assert xgb.load_predictor(out).predict_proba(
        data.load_split(CORPUS / "_base" / "test.csv")).shape == (4, 3)


def full_disk_after(monkeypatch, marker: str):
    """Make `DataFrame.to_csv` into a path containing `marker` write half, then fail like a
    full disk."""
    real = pd.DataFrame.to_csv

    def to_csv(self, path=None, *args, **kw):
        if path is not None and marker in str(path):
            Path(path).write_text(real(self, None, *args, **kw)[:50])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kw)
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)


@pytest.mark.parametrize("marker, kept", [("oof", ["model"]),
                                          ("submission", ["metrics.json", "model", "oof.csv"])])
def test_disk_full_leaves_no_partial_or_stale_output(marker, kept, tmp_path, monkeypatch):
    cfg = XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(tmp_path / "run"), n_folds=2,
                    n_estimators=5, early_stopping_rounds=0)
    xgb.fit(cfg)  # a previous, complete run in the same OUT_DIR
    full_disk_after(monkeypatch, marker)
    with pytest.raises(OSError) as err:
        xgb.fit(cfg)
    assert err.value.filename.endswith(f"{marker}.csv")
    assert cli.error_line(err.value) == f"{err.value.filename}: No space left on device"
    out = Path(cfg.out_dir)
    assert leftovers(out) == kept  # nothing cut off, no temporary, no stale submission
    if "oof.csv" in kept:
        assert len(pd.read_csv(out / "oof.csv")) == 12  # written whole before the failure
    assert sorted(p.name for p in (out / runs.PREVIOUS).iterdir()) == [
        "metrics.json", "model", "oof.csv", "submission.csv"]


def test_disk_full_in_blend_is_one_line_and_no_output(tmp_path, capsys, monkeypatch):
    labels = np.arange(30) % 3
    for name, p in [("r1", [0.5, 0.3, 0.2]), ("r2", [0.3, 0.4, 0.3])]:
        runs.write_outputs(tmp_path / name, test_ids=[7, 8], test_probs=np.tile(p, (2, 1)),
                           metrics={}, oof=runs.probs_frame(np.arange(30), np.tile(p, (30, 1)),
                                                            labels))
    full_disk_after(monkeypatch, "oof")
    out = tmp_path / "blend"
    assert cli.main(["blend", "--runs", str(tmp_path / "r1"), str(tmp_path / "r2"),
                     "--out-dir", str(out), "--min-shared-rows", "30"]) == 1
    assert capsys.readouterr().err.strip() == \
        f"error: {out / 'oof.csv'}: No space left on device"
    assert leftovers(out) == []


def test_unwritable_out_dir_is_found_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(data, "load_competition", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(OSError, match="OUT_DIR is not writable") as err:
        xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(tmp_path / "file" / "o")))
    assert err.value.filename == str(tmp_path / "file" / "o")


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "w.bin").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "w.bin").write_text("half")
            raise RuntimeError("killed while saving")
    assert (target / "w.bin").read_text() == "v1" and sorted(os_names(tmp_path)) == ["model"]
    with atomic.atomic_dir(target) as tmp:
        (tmp / "w2.bin").write_text("v2")
    assert [p.name for p in target.iterdir()] == ["w2.bin"] and os_names(tmp_path) == ["model"]


def os_names(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()]


def test_prepare_out_dir_moves_stale_outputs_and_drops_temporaries(tmp_path):
    (tmp_path / "submission.csv").write_text("old")
    (tmp_path / ".oof.csv.1234abcd.tmp").write_text("cut")
    (tmp_path / "checkpoints").mkdir()  # resume state is not an output: kept
    runs.prepare_out_dir(tmp_path)
    assert sorted(os_names(tmp_path)) == ["checkpoints", "previous"]
    assert (tmp_path / "previous" / "submission.csv").read_text() == "old"
