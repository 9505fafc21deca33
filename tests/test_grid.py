"""Grid runs: grid checks, failures as rows, leaderboard sorted by log loss, re-runs skip."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from lmsys_pref import runs
from lmsys_pref.cli import main as cli
from lmsys_pref.commands import grid
from lmsys_pref.configs import ConfigError

TINY = {"n_estimators": 20, "n_folds": 2}
GRID = [
    {"name": "xgb-deep", "baseline": "xgb", "parameters": {**TINY, "max_depth": 4}},
    {"name": "no-such", "baseline": "catboost"},
    {"name": "xgb-crash", "baseline": "xgb", "parameters": {**TINY, "n_folds": 1000}},
    {"name": "xgb-stump", "baseline": "xgb", "preset": "xgb",
     "parameters": {**TINY, "max_depth": 1, "learning_rate": 0.01}},
]


@pytest.mark.parametrize("entries, msg", [
    ({"name": "a"}, "non-empty YAML list"),
    ([{"baseline": "xgb"}], "entry 1: each run needs"),
    ([{"name": "a", "baseline": "xgb"}, {"name": "a", "baseline": "xgb"}], "used twice"),
    ([{"name": "../up", "baseline": "xgb"}], "safe folder name"),
    ([{"name": "a", "baseline": "xgb", "params": {}}], r"unknown key\(s\) \['params'\]"),
    ([{"name": "a", "baseline": "xgb", "parameters": [1]}], "must be a mapping"),
])
def test_load_grid_rejects_bad_grids(entries, msg):
    with pytest.raises(ConfigError, match=msg):
        grid.load_grid(entries)


def test_load_grid_from_yaml(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(GRID))
    entries = grid.load_grid(path)
    assert [r["name"] for r in entries] == [g["name"] for g in GRID]
    assert entries[1] == {"name": "no-such", "baseline": "catboost", "preset": None,
                          "parameters": {}}


def test_markdown_table():
    lmsys = "lmsys-2024"
    df = grid.leaderboard([
        {"name": "b", "baseline": "xgb", "preset": "", "task": lmsys, "eval": "oof",
         "log_loss": 1.0, "accuracy": 0.5, "seconds": 3.0, "status": "ok", "error": ""},
        {"name": "a|x", "baseline": "xgb", "preset": "", "eval": "", "log_loss": float("nan"),
         "accuracy": float("nan"), "seconds": 1.0, "status": "failed", "error": "E: x"},
        {"name": "c", "baseline": "gemma", "preset": "p", "task": lmsys, "eval": "val",
         "log_loss": 0.9, "accuracy": 0.6, "seconds": 2.0, "status": "ok", "error": ""},
        {"name": "w1", "baseline": "xgb", "preset": "", "task": "wsdm-2025", "eval": "oof",
         "log_loss": 0.6, "accuracy": 0.6, "seconds": 1.0, "status": "ok", "error": ""},
        {"name": "w2", "baseline": "xgb", "preset": "", "task": "wsdm-2025", "eval": "oof",
         "log_loss": 0.7, "accuracy": 0.7, "seconds": 1.0, "status": "ok", "error": ""}])
    # each task by its own metric: log loss up for 2024, accuracy down for the WSDM Cup
    assert list(df.name) == ["c", "b", "w2", "w1", "a|x"]
    lines = grid.to_markdown(df).splitlines()
    assert lines[0].startswith("| name | baseline | preset | task | eval | log_loss |")
    assert lines[2] == "| c | gemma | p | lmsys-2024 | val | 0.9000 | 0.6000 | 2 | ok |  |"
    assert lines[6].startswith("| a\\|x | xgb |  |  |  | – | – | 1 | failed |")


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("grid")
    grid_file = out / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    df = grid.run_grid(grid_file, sample_dir, out / "runs", progress=False)
    return grid_file, out / "runs", df


def test_grid_summary(grid_run):
    _, out, df = grid_run
    assert list(df.columns) == grid.COLUMNS
    status = dict(zip(df.name, df.status))
    assert status == {"xgb-deep": "ok", "xgb-stump": "ok", "no-such": "failed",
                      "xgb-crash": "failed"}
    ok = df[df.status == "ok"]
    assert list(df.name[:2]) == list(ok.sort_values("log_loss").name)  # best first
    assert df.log_loss[:2].is_monotonic_increasing and df.log_loss[2:].isna().all()
    assert len(ok) == 2
    for _, row in ok.iterrows():
        metrics = runs.read_metrics(out / row["name"])
        assert row.log_loss == pytest.approx(metrics["log_loss"])
        assert row.accuracy == pytest.approx(metrics["accuracy"])
        assert row["eval"] == metrics["eval"] == "oof"
        assert (out / row["name"] / "xgboost.ipynb").exists() and row.seconds > 0
        assert row.preset == "xgb"  # the baseline's default preset when the grid names none
    assert 0.8 < ok.log_loss.min() < 1.0986  # the deeper trees learn the sample's length signal
    errors = dict(zip(df.name, df.error))
    assert "unknown baseline 'catboost'" in errors["no-such"]
    assert "NotebookError" in errors["xgb-crash"] and "n_folds 1000" in errors["xgb-crash"]
    saved = pd.read_csv(out / "summary.csv")
    assert list(saved.name) == list(df.name)
    md = (out / "summary.md").read_text()
    assert md.index("xgb-deep") < md.index("no-such") and md.count("\n") == 2 + len(GRID)


def test_rerun_skips_finished_runs(grid_run, capsys):
    grid_file, out, first = grid_run
    stamps = {n: (out / n / "xgboost.ipynb").stat().st_mtime_ns for n in ("xgb-deep", "xgb-stump")}
    code = cli(["grid", "--grid", str(grid_file), "--data-dir", "data/sample", "--out-dir",
                str(out)])
    printed = capsys.readouterr().out
    assert code == 1  # runs still fail
    df = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    status = dict(zip(df.name, df.status))
    assert status["xgb-deep"] == status["xgb-stump"] == "skipped"
    assert status["no-such"] == status["xgb-crash"] == "failed"
    for name, stamp in stamps.items():
        assert (out / name / "xgboost.ipynb").stat().st_mtime_ns == stamp
    assert df.set_index("name").log_loss.to_dict() == pytest.approx(
        first.set_index("name").log_loss.to_dict(), nan_ok=True)
    assert "| xgb-deep | xgb | xgb |" in printed and "failed: no-such:" in printed


def test_changed_settings_are_not_finished(grid_run, sample_dir):
    _, out, _ = grid_run
    run = grid.load_grid(GRID)[3]
    assert grid.is_finished(out / run["name"], grid._settings(run, sample_dir))
    changed = {**run, "parameters": {**TINY, "max_depth": 2}}
    assert not grid.is_finished(out / run["name"], grid._settings(changed, sample_dir))
    assert not grid.is_finished(out / "xgb-crash")  # no metrics.json: runs again


@pytest.mark.parametrize("path", sorted(grid.notebooks.REPO.glob("grids/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_grids_are_valid(path):
    from lmsys_pref.configs import preset_names

    for run in grid.load_grid(path):
        spec = grid.notebooks.BASELINES[run["baseline"]]
        assert run["preset"] is None or run["preset"] in preset_names(), run["name"]
        assert set(run["parameters"]) <= set(spec.config_class().field_names()), run["name"]


def test_failed_record_is_not_finished(tmp_path):
    run = grid.load_grid([{"name": "a", "baseline": "xgb"}])[0]
    settings = grid._settings(run, tmp_path)
    for name in grid.DONE_FILES:  # outputs left by an older run
        (tmp_path / name).write_text("x")
    assert grid.is_finished(tmp_path)
    grid.save_json(tmp_path / grid.RECORD, {"settings": settings, "status": "failed"})
    assert not grid.is_finished(tmp_path, settings)
    grid.save_json(tmp_path / grid.RECORD, {"settings": settings, "status": "ok"})
    assert grid.is_finished(tmp_path, settings)


def test_fallback_when_the_model_package_is_missing(tmp_path):
    preset = tmp_path / "needs-pkg.yaml"
    preset.write_text("kind: lm\nmodel_id: pypi:no_such_package_xyz\n")
    fallback = {"preset": "tiny-gemma2", "parameters": {"max_steps": 1}}
    entries = [{"name": "a", "baseline": "gemma", "preset": str(preset),
                "parameters": {"max_length": 64}, "fallback": fallback},
               {"name": "b", "baseline": "roberta", "preset": "tiny-roberta",
                "fallback": fallback}]
    a, b = grid.load_grid(entries)
    assert grid.missing_model_package(str(preset)) == "no_such_package_xyz"
    assert a["preset"] == "tiny-gemma2" and a["parameters"] == {"max_length": 64, "max_steps": 1}
    assert b["preset"] == "tiny-roberta" and b["parameters"] == {}  # its package is installed
    with pytest.raises(ConfigError, match="fallback"):
        grid.load_grid([{"name": "c", "baseline": "xgb", "fallback": {"model": 1}}])


def test_metrics_outside_the_vocabulary_fail_the_row(tmp_path):
    runs.save_json(tmp_path / "metrics.json", {"cv_log_loss": 0.9, "cv_accuracy": 0.5})
    row = grid._row({"name": "old", "baseline": "xgb", "preset": None}, "ok", 1.0,
                    run_dir=tmp_path)
    assert row["status"] == "failed" and "missing key(s) ['log_loss'" in row["error"]
    assert row["error"].endswith("(+ OPTIONAL_METRIC_KEYS)")


def test_malformed_grid_yaml_is_one_line(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("- name: a\n  baseline: xgb\n  parameters: {n_folds: 2\n")
    with pytest.raises(ConfigError) as err:
        grid.load_grid(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: not valid YAML (line ") and "\n" not in msg
    assert cli(["grid", "--grid", str(path), "--out-dir", str(tmp_path / "o")]) == 2


def fit_in_process(baseline, run_dir, data_dir, preset, params, progress=False):
    """`notebooks.run_notebook` without a kernel: the same `xgb.fit` the notebook calls."""
    from lmsys_pref import xgb
    from lmsys_pref.configs.xgb import XGBConfig

    xgb.fit(XGBConfig.from_preset(preset or "xgb", **params, data_dir=str(data_dir),
                                  out_dir=str(run_dir)))


def test_changed_data_is_scored_again_and_the_log_says_why(tmp_path, sample_dir, monkeypatch,
                                                          caplog):
    import logging
    import shutil

    monkeypatch.setattr(grid.notebooks, "run_notebook", fit_in_process)
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    entries = [{"name": "x", "baseline": "xgb", "parameters": TINY}]
    assert grid.run_grid(entries, data, tmp_path / "runs", progress=False).status[0] == "ok"
    moved = tmp_path / "moved"  # the same content elsewhere: the same run
    shutil.copytree(data, moved)
    assert grid.run_grid(entries, moved, tmp_path / "runs", progress=False).status[0] == \
        "skipped"
    test = pd.read_csv(data / "test.csv", dtype=str)
    test.iloc[:7].to_csv(data / "test.csv", index=False)  # a new test file, same path
    with caplog.at_level(logging.INFO, "lmsys_pref.grid"):
        again = grid.run_grid(entries, data, tmp_path / "runs", progress=False)
    assert again.status[0] == "ok" and "test.csv: content changed" in caplog.text
    sub = pd.read_csv(tmp_path / "runs" / "x" / "submission.csv", dtype={"id": str})
    assert sub["id"].tolist() == test["id"][:7].tolist()  # the new test's ids, not the old
