"""What a notebook shows at its end: the run's metrics as a table and the run's figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..runs import METRIC_KEYS, OPTIONAL_METRIC_KEYS, check_metrics


def metrics_table(metrics: dict) -> pd.DataFrame:
    """The scalar metrics of a run (`runs.METRIC_KEYS`, then the optional ones it has) as a
    one-column table; per-fold lists are left out.

    Raises:
        ValueError: `metrics` is not in the vocabulary of `runs.METRIC_KEYS`.
    """
    check_metrics(metrics)
    keys = [*METRIC_KEYS, *OPTIONAL_METRIC_KEYS]
    rows = {k: metrics[k] for k in keys if k in metrics and not isinstance(metrics[k], list)}
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


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
