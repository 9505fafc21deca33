"""Every figure a run saves is closed once saved (`train.outputs.plot_history`, `eval.report`,
`eval.bias_report`): a test session or a grid of runs in one process never piles up open
figures (matplotlib warns past 20)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from lmsys_pref import xgb
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.eval import bias_report, report
from lmsys_pref.train import outputs

CORPUS = Path(__file__).resolve().parent / "fixtures" / "bad_inputs"


def test_plot_history_saves_loss_png_and_leaves_no_open_figure(tmp_path):
    history = [{"step": 1, "loss": 1.2}, {"step": 2, "loss": 1.0, "eval_log_loss": 1.05}]
    (tmp_path / outputs.HISTORY).write_text(json.dumps(history))
    before = plt.get_fignums()
    fig = outputs.plot_history(tmp_path)
    assert plt.get_fignums() == before  # closed
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert [len(ax.lines) for ax in fig.axes] == [3]  # train loss, val log loss, ln 3: returned


def test_report_and_bias_charts_leave_no_open_figure(tmp_path):
    out = tmp_path / "run"
    xgb.fit(XGBConfig(data_dir=str(CORPUS / "_base"), out_dir=str(out), n_folds=2,
                      n_estimators=5, early_stopping_rounds=0))
    before = plt.get_fignums()
    report.write_report(out)
    bias_report.bar_chart(tmp_path / "bars.png", {"none": {"x": 0.4}, "swap": {"x": 0.5}},
                          ["x"], "bars", ref=0.5)
    assert plt.get_fignums() == before
    assert (out / "calibration.png").exists() and (tmp_path / "bars.png").exists()
