"""Small display helpers for the end of a notebook: a metrics table and the run's figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

HEADLINE = ("cv_log_loss", "cv_accuracy", "val_log_loss", "val_accuracy", "untuned_log_loss",
            "n_train", "n_test", "seconds")


def metrics_table(metrics: dict) -> pd.DataFrame:
    """The headline numbers of a run as a one-column table (missing ones left out)."""
    rows = {k: metrics[k] for k in HEADLINE if k in metrics}
    return pd.DataFrame({"value": rows})


def show_report(run_dir: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Write the run's report (calibration, confusion matrix, ...) and display its figures.

    Returns:
        The PNG files shown.
    """
    from . import report  # matplotlib is only needed here

    report.write_report(run_dir, data_dir)
    pngs = sorted(Path(run_dir).glob("*.png"))
    try:
        from IPython.display import Image, display
        for png in pngs:
            display(Image(filename=str(png)))
    except ImportError:  # outside IPython the files are the output
        pass
    return pngs
