"""Figures and `report.md` for a run folder: calibration, confusion, P/R/F1, loss by length/turns,
and whether its held-out figures are honest (metrics.json `cv_honest`, `cv_leaks`).

Reads the rows the run scored: the file its metrics.json names (`eval`: oof -> `oof.csv`, val ->
`val.csv`, see `runs.METRIC_KEYS`), else whichever of the two exists; lengths and turn
counts come from the labelled data the run trained on (`data_dir` of the saved config in
`model/lmsys_pref.json`, or the `data_dir` argument). A report replaces the previous one whole
(`REPORT_FILES`): a re-run without the data leaves no loss-by-length figure of an older one.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: headless machines and papermill kernels
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from .. import data, runs  # noqa: E402
from ..configs.tasks import LMSYS_2024, Task, get  # noqa: E402
from ..data import CLASS_NAMES, metrics  # noqa: E402
from ..files.atomic import write_text  # noqa: E402

log = logging.getLogger("lmsys_pref")
PRED_FILES = tuple(runs.EVAL_FILES.values())  # oof.csv, val.csv
# Everything a report writes; a new report first removes them all (`clear_report`).
REPORT_FILES = runs.REPORT_FIGURES + ("report.md", "report.json")


def load_predictions(run_dir: str | Path) -> tuple[pd.DataFrame, Path]:
    """The labelled predictions of a run and the file they came from: the one named by the
    `eval` of its metrics.json, or (without one) oof.csv, else val.csv.

    Raises:
        FileNotFoundError: neither file exists.
        DataError: a needed column is missing or a label is not 0/1/2.
    """
    run_dir = Path(run_dir)
    names = PRED_FILES
    if (run_dir / "metrics.json").exists():
        scored = runs.load_json(run_dir / "metrics.json").get("eval")
        names = (runs.EVAL_FILES[scored],) if scored in runs.EVAL_FILES else names
    path = next((run_dir / n for n in names if (run_dir / n).exists()), None)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no {' or '.join(names)}; is it a train run?")
    df = runs.read_probs(path)
    classes = run_task(run_dir).prob_columns
    missing = [c for c in ("id", "label", *classes) if c not in df.columns]
    if missing:
        raise data.DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    bad = ~df["label"].isin(range(len(classes)))
    if bad.any():
        raise data.DataError(f"{path}: row id {df.loc[bad, 'id'].iloc[0]}: column 'label' is "
                             f"{df.loc[bad, 'label'].iloc[0]!r}, expected one of "
                             f"{list(range(len(classes)))}")
    return df, path


def honesty_lines(run_dir: str | Path) -> list[str]:
    """What metrics.json says of the run's held-out honesty, as markdown lines: `cv_honest`
    first, then each of `cv_leaks` (input, file, rows its models saw, why); [] when the run
    does not record it (runs made before it was, blends of them)."""
    path = Path(run_dir) / "metrics.json"
    m = runs.load_json(path) if path.is_file() else {}
    if "cv_honest" not in m:
        return []
    if m["cv_honest"]:
        return ["cv_honest: true (no input the run trained on came from models that saw its "
                "held-out rows)"]
    lines = [f"cv_honest: **false**: its {m.get('eval') or 'held-out'} figures flatter it; "
             "judge it on rows no step of it touched"]
    for leak in m.get("cv_leaks", []):
        rows = "" if leak.get("leaked_rows") is None else \
            f"{leak['leaked_rows']} held-out row(s) seen; "
        lines.append(f"- {leak.get('input')} `{leak.get('file')}`"
                     + (f" (run {leak['run']})" if leak.get("run") else "")
                     + f": {rows}{leak.get('why')}")
    return lines


def run_task(run_dir: str | Path) -> Task:
    """The task a run folder was made for: its metrics.json's `task` (lmsys-2024 for runs made
    before tasks were recorded)."""
    path = Path(run_dir) / "metrics.json"
    name = runs.load_json(path).get("task") if path.is_file() else None
    return get(name) if name else LMSYS_2024


def find_data_dir(run_dir: str | Path, data_dir: str | Path | None = None) -> Path | None:
    """`data_dir` if given, else the one in the run's saved config (None when unknown)."""
    if data_dir is not None:
        return Path(data_dir)
    try:
        saved = runs.read_model_meta(run_dir)["config"].get("data_dir")
    except (FileNotFoundError, KeyError):
        return None
    return Path(saved) if saved and data.find_file(saved, "train", required=False) else None


def row_groups(preds: pd.DataFrame, data_dir: Path, task: Task = LMSYS_2024) -> pd.DataFrame:
    """Length bucket, turn count (and language, where train has one) of each prediction row,
    joined on id with train.csv."""
    path = data.find_file(data_dir, "train")
    df = data.load_split(path, labelled=False, lenient=True, task=task).set_index("id")
    missing = sorted(set(preds["id"].tolist()) - set(df.index.tolist()))
    if missing:
        raise data.DataError(f"{path}: id(s) {missing[:10]} of the predictions are not in column "
                             f"'id' ({len(missing)} missing); pass the run's --data-dir")
    rows = df.loc[preds["id"]]
    chars = (rows["response_a"].map(lambda t: sum(map(len, t)))
             + rows["response_b"].map(lambda t: sum(map(len, t)))).to_numpy()
    turns = rows["prompt"].map(len).clip(upper=4).to_numpy()
    out = pd.DataFrame({"length": pd.qcut(chars, 5, duplicates="drop").astype(str),
                        "length_order": pd.qcut(chars, 5, labels=False, duplicates="drop"),
                        "turns": np.where(turns >= 4, "4+", turns.astype(str))})
    if "language" in rows.columns:
        out["language"] = rows["language"].fillna("").astype(str).to_numpy()
    return out


def loss_by(labels: np.ndarray, probs: np.ndarray, groups: pd.Series, order=None) -> pd.DataFrame:
    """Rows, log loss and accuracy per group value."""
    p = metrics.normalise(probs)
    nll = -np.log(p[np.arange(len(p)), labels])
    df = pd.DataFrame({"g": np.asarray(groups), "nll": nll, "hit": p.argmax(1) == labels,
                       "o": np.asarray(order if order is not None else groups)})
    out = df.groupby("g").agg(n=("nll", "size"), log_loss=("nll", "mean"),
                              accuracy=("hit", "mean"), o=("o", "first"))
    return out.sort_values("o").drop(columns="o")


def plot_calibration(labels: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """Reliability curve of each class (one-vs-rest) and of the top class."""
    p = metrics.normalise(probs)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    curves = [(CLASS_NAMES[i], labels == i, p[:, i]) for i in range(p.shape[1])]
    curves.append(("top class", p.argmax(1) == labels, p.max(1)))
    for name, y, score in curves:
        frac, mean = calibration_curve(y, score, n_bins=10, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, label=name)
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(labels: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """Confusion matrix of argmax predictions (rows: truth)."""
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    k = probs.shape[1]
    ConfusionMatrixDisplay.from_predictions(labels, probs.argmax(1), labels=list(range(k)),
                                            display_labels=list(CLASS_NAMES[:k]), ax=ax,
                                            colorbar=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_groups(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Log loss per group as bars, row counts on top."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    bars = ax.bar(np.arange(len(table)), table["log_loss"])
    ax.set_xticks(np.arange(len(table)), table.index.astype(str))
    ax.bar_label(bars, labels=[f"n={n}" for n in table["n"]], fontsize=7)
    ax.set(ylabel="log loss", title=title)
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _md_table(df: pd.DataFrame, first: str) -> str:
    cols = list(df.columns)
    lines = [f"| {first} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    cells = {c: [f"{v:.4f}" if isinstance(v, float) else str(v) for v in df[c].tolist()]
             for c in cols}  # column-wise, so integer columns stay integers
    for i, idx in enumerate(df.index):
        lines.append(f"| {idx} | " + " | ".join(cells[c][i] for c in cols) + " |")
    return "\n".join(lines)


def write_report(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Write the figures and `report.md` into `run_dir`; returns the report's path.

    Length and turn sections need the training data; without it they are left out (noted).
    """
    run_dir = Path(run_dir)
    clear_report(run_dir)  # the report is replaced whole: no figure of an older one stays
    if (run_dir / "metrics.json").exists() and not any((run_dir / n).exists()
                                                       for n in PRED_FILES):
        return _write_unscored(run_dir)
    preds, src = load_predictions(run_dir)
    task = run_task(run_dir)
    labels = preds["label"].to_numpy(dtype=int)
    probs = preds[list(task.prob_columns)].to_numpy(dtype=np.float64)
    ev = metrics.evaluate(labels, probs)
    per_class = pd.DataFrame(ev["per_class"]).T
    per_class["support"] = per_class["support"].astype(int)
    plot_calibration(labels, probs, run_dir / "calibration.png")
    plot_confusion(labels, probs, run_dir / "confusion.png")
    parts = [f"# Report: {run_dir.name}\n", f"Predictions: `{src.name}` ({len(preds)} rows).\n",
             _headline(ev, task), *_honesty_section(run_dir), "## Per class\n",
             _md_table(per_class, "class"),
             "\n![calibration](calibration.png) ![confusion](confusion.png)\n"]
    ddir = find_data_dir(run_dir, data_dir)
    if ddir is None:
        log.warning("%s: no data_dir known; length and turn sections left out", run_dir)
        parts.append("_Length and turn sections left out: the training data was not found "
                     "(pass --data-dir)._\n")
    else:
        groups = row_groups(preds, ddir, task)
        by_len = loss_by(labels, probs, groups["length"], groups["length_order"])
        by_turns = loss_by(labels, probs, groups["turns"])
        plot_groups(by_len, run_dir / "loss_by_length.png", "Log loss by total answer length")
        plot_groups(by_turns, run_dir / "loss_by_turns.png", "Log loss by number of turns")
        parts += ["## By length (characters of both answers, quintiles)\n",
                  _md_table(by_len, "length"), "\n![length](loss_by_length.png)\n",
                  "## By number of turns\n", _md_table(by_turns, "turns"),
                  "\n![turns](loss_by_turns.png)\n"]
        if "language" in groups:
            parts += ["## By language\n", _md_table(
                loss_by(labels, probs, groups["language"]).sort_values("n", ascending=False),
                "language")]
    runs.save_json(run_dir / "report.json", ev)
    return write_text(run_dir / "report.md", "\n".join(parts))  # last, whole: the report is done


def _honesty_section(run_dir: Path) -> list[str]:
    lines = honesty_lines(run_dir)
    return ["## Held-out honesty\n", "\n".join(lines) + "\n"] if lines else []


def _headline(ev: dict, task: Task) -> str:
    """The scores, the task's own metric first and in bold."""
    scores = {"log loss": ev["log_loss"], "accuracy": ev["accuracy"], "ECE": ev["ece"]}
    first = "accuracy" if task.metric == "accuracy" else "log loss"
    rest = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != first)
    return f"- {first} **{scores[first]:.4f}** ({task.name}), {rest}\n"


def clear_report(run_dir: Path) -> list[str]:
    """Delete the files an earlier report wrote (`REPORT_FILES`); returns their names."""
    gone = [name for name in REPORT_FILES if (run_dir / name).is_file()]
    for name in gone:
        (run_dir / name).unlink()
    return gone


def _write_unscored(run_dir: Path) -> Path:
    """report.md of a run that scored no labelled row (e.g. XGBoost with n_folds 0 or 1)."""
    log.warning("%s: no %s (no row was scored out of fold); report without figures", run_dir,
                " or ".join(PRED_FILES))
    return write_text(run_dir / "report.md",
                      f"# Report: {run_dir.name}\n\nNo labelled row was scored out of fold "
                      f"(no {' or '.join(PRED_FILES)}; e.g. `n_folds` 0 or 1, a final fit only), "
                      "so there is no log loss, calibration or confusion matrix to show.\n\n"
                      + "\n".join(_honesty_section(run_dir)))


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref report --run-dir R [--data-dir D]`."""
    ap = argparse.ArgumentParser(prog="lmsys_pref report")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--data-dir", default=None, help="labelled data of the run (default: the "
                                                     "data_dir of its saved config)")
    args = ap.parse_args(argv)
    print(f"wrote {write_report(args.run_dir, args.data_dir)}")
    for line in honesty_lines(args.run_dir):
        print(line.replace("**", ""))
    return 0
