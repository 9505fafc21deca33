"""report.md + figures for a run folder: golden per-group losses, data_dir discovery, bad input."""
import json

import numpy as np
import pytest

from lmsys_pref import cli, data, runs
from lmsys_pref.data import metrics
from lmsys_pref.eval import report


@pytest.fixture(scope="module")
def train(quirks_dir):
    return data.load_split(quirks_dir / "train.csv")


def make_run(path, train, name="oof.csv", data_dir=None, seed=0):
    """A run folder with predictions for every row of `train` (and a saved config if asked)."""
    probs = np.random.default_rng(seed).dirichlet([2, 2, 2], size=len(train))
    oof = runs.probs_frame(train["id"], probs, train["label"])
    runs.write_outputs(path, test_ids=None, test_probs=None, metrics={}, oof=oof, oof_name=name)
    if data_dir is not None:
        runs.write_model_meta(path / "model", "xgb", {"data_dir": str(data_dir)})
    return path, probs


def test_loss_by_group_golden():
    labels = np.array([0, 1, 2, 0])
    probs = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.8, 0.1, 0.1], [1.0, 0.0, 0.0]])
    table = report.loss_by(labels, probs, np.array(["x", "x", "y", "y"]))
    assert table["n"].tolist() == [2, 2]
    assert table.loc["x", "log_loss"] == pytest.approx(np.log(2))
    assert table.loc["y", "log_loss"] == pytest.approx((np.log(10) - np.log(1 - 2e-15)) / 2,
                                                       rel=1e-6)
    assert table["accuracy"].tolist() == [1.0, 0.5]


def test_report_from_saved_config(tmp_path, train, quirks_dir):
    run, probs = make_run(tmp_path / "run", train, data_dir=quirks_dir)
    path = report.write_report(run)
    assert path == run / "report.md"
    for fig in ("calibration.png", "confusion.png", "loss_by_length.png", "loss_by_turns.png"):
        assert (run / fig).stat().st_size > 1000, fig
    text = path.read_text()
    want = metrics.log_loss(train["label"], probs)
    assert f"log loss **{want:.4f}**" in text
    # turn rows: the quirks fixture has 25 one-turn, 14 two-turn and 1 three-turn prompts
    assert "| 1 | 25 |" in text and "| 2 | 14 |" in text and "| 3 | 1 |" in text
    assert text.count("| (") == 5  # five length quintiles
    saved = json.loads((run / "report.json").read_text())
    assert saved["log_loss"] == pytest.approx(want)
    assert saved["per_class"]["tie"]["support"] == int((train["label"] == 2).sum())


def test_report_val_csv_explicit_data_dir_and_cli(tmp_path, train, quirks_dir):
    run, _ = make_run(tmp_path / "run", train.iloc[:30], name="val.csv")
    assert cli.main(["report", "--run-dir", str(run), "--data-dir", str(quirks_dir)]) == 0
    assert "val.csv" in (run / "report.md").read_text()
    assert (run / "loss_by_turns.png").exists()


def test_report_without_data_leaves_sections_out(tmp_path, train):
    run, _ = make_run(tmp_path / "run", train)
    text = report.write_report(run).read_text()
    assert "left out" in text and not (run / "loss_by_length.png").exists()
    assert (run / "calibration.png").exists()


def test_report_bad_input(tmp_path, train, quirks_dir):
    with pytest.raises(FileNotFoundError, match="oof.csv or val.csv"):
        report.write_report(tmp_path)
    run, _ = make_run(tmp_path / "run", train)
    df = runs.read_probs(run / "oof.csv")
    df.loc[2, "id"] = "999999"
    df.to_csv(run / "oof.csv", index=False)
    with pytest.raises(data.DataError, match=r"999999"):
        report.write_report(run, quirks_dir)
    df.loc[2, "label"] = 5
    df.to_csv(run / "oof.csv", index=False)
    with pytest.raises(data.DataError, match=r"row id 999999: column 'label'"):
        report.write_report(run, quirks_dir)
    df.drop(columns="label").to_csv(run / "oof.csv", index=False)
    with pytest.raises(data.DataError, match=r"missing column\(s\) \['label'\]"):
        report.write_report(run)


def test_report_reads_the_rows_metrics_json_names(tmp_path, train):
    run, _ = make_run(tmp_path / "run", train, name="oof.csv")
    _, val_probs = make_run(run, train.iloc[:30], name="val.csv", seed=1)
    runs.save_json(run / "metrics.json", runs.run_metrics(
        train["label"].iloc[:30], val_probs, eval="val", n_train=40, n_test=0, seconds=1.0))
    preds, src = report.load_predictions(run)
    assert src.name == "val.csv" and len(preds) == 30
    (run / "val.csv").unlink()  # metrics.json names val.csv: oof.csv is not a stand-in
    with pytest.raises(FileNotFoundError, match=r"no val\.csv;"):
        report.load_predictions(run)
