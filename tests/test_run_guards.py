"""Issue 20's faults: one run per OUT_DIR, never into an input, every output owned, ids kept
as the file's text, a cut row, n_folds checked against the data, predict's cache inputs."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_pref import cli, data, runs, xgb
from lmsys_pref.commands import predict
from lmsys_pref.configs import ConfigError
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.eval import blend, blend_inputs, report
from lmsys_pref.files import atomic

CORPUS = Path(__file__).resolve().parent / "fixtures" / "bad_inputs"
TINY = dict(n_folds=2, n_estimators=5, early_stopping_rounds=0)


def case_data(tmp_path: Path, *cases: str) -> Path:
    """`_base` with the case folders' files over it."""
    dst = tmp_path / "data"
    shutil.copytree(CORPUS / "_base", dst)
    for case in cases:
        for f in (CORPUS / case).iterdir():
            shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture()
def holder(tmp_path):
    """Another process holding `tmp_path / 'out'` (as a run would), until the test ends."""
    out = tmp_path / "out"
    code = ("import sys; from lmsys_pref import runs\n"
            f"with runs.holding({str(out)!r}):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield out, proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_second_run_into_a_held_out_dir_stops_at_once_naming_the_first(holder, capsys):
    out, proc = holder
    (out / "submission.csv").write_text("the first run's")
    t0 = time.time()
    argv = ["predict", "--model-dir", str(CORPUS / "model_cut_booster"), "--data-dir",
            str(CORPUS / "_base"), "--out-dir", str(out)]
    assert cli.main(argv) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: {out.resolve()}: in use by another run (pid {proc.pid}")
    assert "-c" in line and time.time() - t0 < 10  # its command, and no waiting
    assert (out / "submission.csv").read_text() == "the first run's"  # nothing moved
    with pytest.raises(atomic.FolderBusy):
        xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), **TINY))


def test_the_lock_is_reentrant_released_and_leaves_no_file(tmp_path):
    out = tmp_path / "run"
    with runs.holding(out):
        xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), **TINY))
        assert (out / atomic.LOCK_NAME).exists()
    assert not (out / atomic.LOCK_NAME).exists()
    xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), **TINY))  # free again
    assert not (out / atomic.LOCK_NAME).exists() and (out / "submission.csv").exists()


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    labels = np.arange(30) % 3
    made = []
    for name, p in [("r1", [0.5, 0.3, 0.2]), ("r2", [0.3, 0.4, 0.3])]:
        runs.write_outputs(tmp_path / name, test_ids=[7, 8], test_probs=np.tile(p, (2, 1)),
                           metrics={}, oof=runs.probs_frame(np.arange(30), np.tile(p, (30, 1)),
                                                            labels))
        (tmp_path / name / "model").mkdir()
        (tmp_path / name / "model" / "weights.bin").write_text(name)
        made.append(tmp_path / name)
    return made[0], made[1]


def test_a_blend_into_one_of_its_runs_is_refused_twice_and_the_run_kept(tmp_path):
    r1, r2 = two_runs(tmp_path)
    before = sorted(p.name for p in r1.iterdir())
    for _ in range(2):
        with pytest.raises(ConfigError, match=f"out_dir '{r1}' is the run_dirs"):
            blend.blend([r1, r2], r1, min_shared_rows=30)
        with pytest.raises(ConfigError, match="contains the run_dir"):
            blend.calibrate(r1, tmp_path)
    assert sorted(p.name for p in r1.iterdir()) == before
    assert (r1 / "model" / "weights.bin").read_text() == "r1"
    res = blend.blend([r1, r2], r1 / "blend", min_shared_rows=30)  # inside a run: fine
    assert res["n_shared_rows"] == 30


def test_a_rerun_moves_every_output_of_the_older_run_aside(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = ["calibration.png", "confusion.png", "loss_by_length.png", "loss_by_turns.png",
             "loss.png", "log_history.json", "config.yaml", "report.md", "report.json",
             "metrics.json", "transformer.ipynb"]  # a complete run (metrics.json) of a notebook
    for name in stale:
        (out / name).write_text("old")
    xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), **TINY))
    assert [n for n in stale if (out / n).exists()] == ["metrics.json"]  # the new run's only
    assert runs.read_metrics(out)["n_train"] == 12
    assert sorted(p.name for p in (out / runs.PREVIOUS).iterdir()) == sorted(stale)


def test_a_report_is_replaced_whole(tmp_path):
    out = tmp_path / "run"
    xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), **TINY))
    report.write_report(out)  # the saved data_dir is known: length and turn figures
    assert (out / "loss_by_length.png").exists() and (out / "loss_by_turns.png").exists()
    meta = runs.read_model_meta(out)
    runs.write_model_meta(out / "model", "xgb", {**meta["config"], "data_dir": "gone"})
    text = report.write_report(out).read_text()
    assert "Length and turn sections left out" in text
    assert not (out / "loss_by_length.png").exists() and not (out / "loss_by_turns.png").exists()
    assert (out / "calibration.png").exists()


def test_ids_come_out_exactly_as_in_the_files(tmp_path):
    """`007`, `1e3`, `5.0`, 2^63 and 2^64 + 1 / + 2 (distinct, not 'duplicates') end to end."""
    folder = case_data(tmp_path, "train_text_ids", "test_text_ids")
    train_ids = pd.read_csv(folder / "train.csv", dtype=str)["id"].tolist()
    test_ids = pd.read_csv(folder / "test.csv", dtype=str)["id"].tolist()
    assert "7" in train_ids and "007" in train_ids  # distinct as text
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 1), (b, 2)):
        xgb.fit(XGBConfig(data_dir=str(folder), out_dir=str(out), seed=seed, **TINY))
        assert pd.read_csv(out / "submission.csv", dtype=str)["id"].tolist() == test_ids
        assert sorted(pd.read_csv(out / "oof.csv", dtype=str)["id"]) == sorted(train_ids)
    shared = blend_inputs.align([blend_inputs.load_run(a), blend_inputs.load_run(b)], 12)
    assert sorted(shared[0].ids) == sorted(train_ids) and list(shared[1].test_ids) == test_ids


def test_ids_that_are_not_integers_or_repeat_as_text(tmp_path):
    frame = pd.DataFrame({"id": ["7", "007", "1e3", "1000"]})
    assert data.check_ids(frame, "f").tolist() == ["7", "007", "1e3", "1000"]
    for ids, fragment in [(["5", "5.5"], "'5.5', expected an integer id"),
                          (["9223372036854775808", "9223372036854775808"], "duplicate id(s) "
                           "['9223372036854775808']"),
                          (["1", ""], "data row 2: column 'id' is empty")]:
        with pytest.raises(data.DataError, match=fragment.replace("(", r"\(").replace(
                "[", r"\[").replace(")", r"\)")):
            data.check_ids(pd.DataFrame({"id": ids}), "f")


def test_a_cut_last_row_is_dropped_only_when_lenient(tmp_path, caplog):
    folder = case_data(tmp_path, "train_cut_last_row")
    with pytest.raises(data.DataError, match="row id 112 .* cut off"):
        xgb.fit(XGBConfig(data_dir=str(folder), out_dir=str(tmp_path / "o"), **TINY))
    with caplog.at_level(logging.WARNING, "lmsys_pref"):
        m = xgb.fit(XGBConfig(data_dir=str(folder), out_dir=str(tmp_path / "o"), lenient=True,
                              **TINY))
    assert m["n_train"] == 11 and "row id 112" in caplog.text and "dropped" in caplog.text


def test_n_folds_beyond_the_rows_of_a_class_is_named_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(xgb, "cross_validate", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(data.DataError) as err:
        xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(tmp_path), n_folds=5))
    assert str(err.value) == (f"{CORPUS / '_base' / 'train.csv'}: n_folds 5 needs at least 5 "
                              "rows of every class; class 'a' (winner_model_a) has 4 of 12 "
                              "rows: lower n_folds")


def test_predict_cache_names_the_changed_input(tmp_path, caplog):
    model = tmp_path / "model"
    xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(model), **TINY))
    folder = case_data(tmp_path)
    cfg = PredictConfig(model_dir=str(model), data_dir=str(folder), out_dir=str(tmp_path / "p"),
                        cache_dir=str(tmp_path / "cache"))
    predict.predict(cfg)
    (tmp_path / "cache" / "scores.npz").write_bytes(b"old partial scores")
    test = pd.read_csv(folder / "test.csv", dtype=str)
    test.iloc[:2].to_csv(folder / "test.csv", index=False)
    with caplog.at_level(logging.WARNING, "lmsys_pref.predict"):
        predict.predict(cfg)
    assert "the cached scores are of other inputs (test.csv: content changed)" in caplog.text
    assert not (tmp_path / "cache" / "scores.npz").exists()  # stale scores dropped
