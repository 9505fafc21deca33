"""Grid runs with papermill: a YAML list of runs, one run folder each, one leaderboard.

    # grids/example.yaml
    - name: xgb-small
      baseline: xgb
      parameters: {n_estimators: 200, n_folds: 3}
    - name: gemma-270m
      baseline: gemma
      preset: gemma3-270m
      fallback: {preset: tiny-gemma2}   # when the preset's PyPI model is not installed

`lmsys-pref grid --grid G --data-dir D --out-dir O` (`make grid`) executes each run's notebook into
O/<name>/ through `notebooks.run_notebook` (the path behind `make train-*`), keeps going when a
run fails, and writes O/summary.csv and O/summary.md sorted by log loss (the `log_loss` of each
run's metrics.json, see `runs.METRIC_KEYS`). A run whose folder already holds metrics.json and
submission.csv, made with the same settings and the same data (a content digest of train and
test, not the folder's path), is not run again; otherwise the log says what changed.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from ..configs import ConfigError, load_preset
from ..configs.tasks import TASKS
from ..runs import load_json, read_metrics, resume, save_json
from . import notebooks

log = logging.getLogger("lmsys_pref.grid")

COLUMNS = ["name", "baseline", "preset", "task", "eval", "log_loss", "accuracy", "seconds",
           "status", "error"]
RUN_KEYS = {"name", "baseline", "preset", "parameters", "fallback"}
RECORD = "grid.json"  # per-run record: the settings it ran with, its status and wall time
DONE_FILES = ("metrics.json", "submission.csv")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def load_grid(grid: str | Path | list[dict]) -> list[dict[str, Any]]:
    """Read and check a grid: a YAML list of mappings with `name`, `baseline`, optional `preset`,
    `parameters` and `fallback` (`preset` and/or `parameters` used instead when the preset's
    `pypi:` model package is not installed).

    Only the grid's shape is checked here (a bad entry stops everything before a run starts); a
    bad baseline name or parameter becomes a failed row at run time.

    Raises:
        ConfigError: not a list, an entry without a name, a duplicate or unsafe name, an unknown
            key, or `parameters` that is not a mapping. The message names the grid and the entry.
    """
    where = str(grid) if isinstance(grid, (str, Path)) else "grid"
    runs = _read_yaml(Path(grid)) if isinstance(grid, (str, Path)) else grid
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{where}: expected a non-empty YAML list of runs")
    seen: set[str] = set()
    for i, run in enumerate(runs):
        _check_entry(run, f"{where}: entry {i + 1}", seen)
    return [_resolve({"name": str(r["name"]), "baseline": str(r["baseline"]),
                      "preset": r.get("preset"), "parameters": dict(r.get("parameters") or {})},
                     r.get("fallback")) for r in runs]


def _read_yaml(path: Path) -> Any:
    """A grid file's YAML; a syntax error is one `ConfigError` line naming the file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({at}{what})") from None


def _check_entry(run: Any, entry: str, seen: set[str]) -> None:
    """Raise `ConfigError` naming `entry` when a grid entry is malformed; records its name."""
    if not isinstance(run, dict) or "name" not in run or "baseline" not in run:
        raise ConfigError(f"{entry}: each run needs at least `name` and `baseline`; got {run!r}")
    name = str(run["name"])
    if not _NAME.match(name) or name in seen:
        raise ConfigError(f"{entry}: name {name!r} is "
                          f"{'used twice' if name in seen else 'not a safe folder name'}")
    seen.add(name)
    if set(run) - RUN_KEYS:
        raise ConfigError(f"{entry} ({name}): unknown key(s) {sorted(set(run) - RUN_KEYS)}; "
                          f"known: {sorted(RUN_KEYS)}")
    fallback = run.get("fallback") or {}
    if not all(isinstance(m, dict) for m in (run.get("parameters") or {}, fallback,
                                             fallback.get("parameters") or {})):
        raise ConfigError(f"{entry} ({name}): `parameters` must be a mapping")
    if set(fallback) - {"preset", "parameters"}:
        raise ConfigError(f"{entry} ({name}): `fallback` takes `preset` and `parameters`")


def missing_model_package(preset: str | None) -> str | None:
    """The PyPI package a preset's `model_id: pypi:<package>` needs, when it is not installed."""
    try:
        model_id = str(load_preset(preset).get("model_id", "")) if preset else ""
    except ConfigError:
        return None  # an unknown preset fails in its run, with the preset error
    package = model_id[5:] if model_id.startswith("pypi:") else ""
    return package if package and importlib.util.find_spec(package) is None else None


def _resolve(run: dict, fallback: dict | None) -> dict:
    """`run`, or its fallback (preset, and parameters merged over the run's) when the run's
    preset needs a model package that is not installed."""
    package = missing_model_package(run["preset"]) if fallback else None
    if package is None:
        return run
    log.warning("run %s: package %s is not installed; using the fallback %s", run["name"],
                package, fallback)
    return {**run, "preset": fallback.get("preset", run["preset"]),
            "parameters": {**run["parameters"], **(fallback.get("parameters") or {})}}


def _settings(run: dict, data_dir: str | Path | None) -> dict[str, Any]:
    """What a finished run must match to be skipped on a re-run: the baseline, preset and
    parameters, and the run's content fingerprint (`resume.content_fingerprint`: every field
    of its config and a digest of the data it reads, train and test files included; the data
    folder's path is not part of it)."""
    settings = {"baseline": run["baseline"], "preset": run["preset"],
                "parameters": run["parameters"]}
    spec = notebooks.BASELINES.get(run["baseline"])
    try:
        values = {**run["parameters"], **({"data_dir": str(data_dir)} if data_dir else {})}
        cfg = spec.config_class().from_preset(run["preset"] or spec.preset, **values)
        settings["fingerprint"] = resume.content_fingerprint(cfg)
    except (AttributeError, ConfigError, OSError, ValueError):
        pass  # a run that cannot even be configured fails when it runs, with that error
    return settings


def stale_reason(run_dir: str | Path, settings: dict | None = None) -> str | None:
    """Why `run_dir` does not hold a reusable run (None when it does): an output is missing,
    or its grid record (`RECORD`) says it failed or ran with other settings or other data."""
    run_dir = Path(run_dir)
    missing = [f for f in DONE_FILES if not (run_dir / f).exists()]
    if missing:
        return f"no {missing[0]}"
    record = run_dir / RECORD
    if settings is None or not record.exists():
        return None
    saved = load_json(record)
    if saved.get("status") != "ok":
        return f"its last run {saved.get('status')}"
    old, new = saved.get("settings") or {}, settings
    changed = [k for k in ("baseline", "preset", "parameters") if old.get(k) != new.get(k)]
    changed += resume.differing_fields(old.get("fingerprint") or {}, new.get("fingerprint") or {})
    return f"changed: {'; '.join(changed)}" if changed else None


def is_finished(run_dir: str | Path, settings: dict | None = None) -> bool:
    """True when `run_dir` holds a complete run; when a grid record (`RECORD`) is there, it
    must say the run succeeded with these `settings` (see `stale_reason`)."""
    return stale_reason(run_dir, settings) is None


def _row(run: dict, status: str, seconds: float, error: str = "",
         run_dir: Path | None = None) -> dict[str, Any]:
    """One leaderboard row; scores come from the run's metrics.json when there is one (a
    metrics.json outside the vocabulary of `runs.METRIC_KEYS` makes the row failed)."""
    metrics: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "metrics.json").exists():
        try:
            metrics = read_metrics(run_dir)
        except ValueError as err:
            status, error = "failed", f"ValueError: {err}"
    spec = notebooks.BASELINES.get(run["baseline"])
    return {"name": run["name"], "baseline": run["baseline"],
            "preset": run["preset"] or (spec.preset if spec else None) or "",
            "task": metrics.get("task") or "",
            "eval": metrics.get("eval") or "",
            "log_loss": _number(metrics.get("log_loss")),
            "accuracy": _number(metrics.get("accuracy")),
            "seconds": round(float(seconds), 1), "status": status, "error": error}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def run_one(run: dict, data_dir: str | Path | None, run_dir: Path, progress: bool = False,
            force: bool = False) -> dict[str, Any]:
    """Execute one grid entry into `run_dir`; never raises for a failing run.

    Returns:
        Its summary row; `status` is "ok", "skipped" (finished before with the same settings),
        or "failed" with the error's first line in `error`.
    """
    params = dict(run["parameters"])
    data_dir = params.pop("data_dir", None) or data_dir  # an entry's own wins
    run = {**run, "parameters": params}
    settings = _settings(run, data_dir)
    why = None if force else stale_reason(run_dir, settings)
    if not force and why is None:
        record = run_dir / RECORD
        seconds = load_json(record)["seconds"] if record.exists() else math.nan
        return _row(run, "skipped", seconds, run_dir=run_dir)
    if why and (run_dir / RECORD).exists():
        log.info("run %s: running again (%s)", run["name"], why)
    t0 = time.time()
    try:
        notebooks.run_notebook(run["baseline"], run_dir, data_dir, run["preset"],
                               run["parameters"], progress=progress)
        missing = [f for f in DONE_FILES if not (run_dir / f).exists()]
        if missing:
            raise RuntimeError(f"the notebook finished without writing {missing} in {run_dir}")
        status, error = "ok", ""
    except Exception as err:  # noqa: BLE001 - any failure is one row; the other runs go on
        first_line = str(err).splitlines()[0] if str(err) else ""
        status, error = "failed", f"{type(err).__name__}: {first_line}"
        log.error("run %s failed: %s", run["name"], error)
    seconds = time.time() - t0
    if run_dir.exists():  # an unknown baseline fails before the folder exists
        save_json(run_dir / RECORD, {"settings": settings, "status": status, "error": error,
                                     "seconds": seconds})
    # a failed run's folder may still hold an older run's metrics: report none
    return _row(run, status, seconds, error, run_dir if status == "ok" else None)


def leaderboard(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a frame, grouped by task, each task's runs best first by its own metric (log
    loss ascending for the 2024 format, accuracy descending for the WSDM Cup's); runs without
    a score go last."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["task"] = df["task"].fillna("")
    accuracy_tasks = {name for name, t in TASKS.items() if t.higher_is_better}
    key = np.where(df["task"].isin(accuracy_tasks), -df["accuracy"].astype(float),
                   df["log_loss"].astype(float))
    unscored = df["task"].eq("")  # a failed run: no metrics.json, last
    return (df.assign(_last=unscored, _key=key)
            .sort_values(["_last", "task", "_key", "name"], na_position="last", kind="stable")
            .drop(columns=["_last", "_key"]).reset_index(drop=True))


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table of the summary (no extra dependency)."""
    def cell(value: Any, col: str) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "–"
            return f"{value:.4f}" if col in ("log_loss", "accuracy") else f"{value:.0f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v, c) for c, v in row.items()) + " |"
              for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def write_summary(df: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """Write summary.csv and summary.md into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(to_markdown(df))
    return out / "summary.csv", out / "summary.md"


def run_grid(grid: str | Path | list[dict], data_dir: str | Path | None, out_dir: str | Path,
             progress: bool = True, force: bool = False) -> pd.DataFrame:
    """Run every entry of `grid` into `out_dir/<name>/` and write the summary.

    Args:
        grid: a YAML file or an already loaded list of runs (see `load_grid`).
        data_dir: the competition folder passed to every notebook as `data_dir` (an entry's own
            `parameters: {data_dir: ...}` wins: a grid may mix tasks).
        out_dir: the grid folder; gets one folder per run plus summary.csv and summary.md.
        progress: progress bars over the runs and over the cells of each notebook.
        force: run again even the runs that finished before.

    Returns:
        The leaderboard (`COLUMNS`: name, baseline, preset, eval, log_loss, accuracy, ...).
    """
    runs = load_grid(grid)
    out = Path(out_dir)
    rows = []
    bar = tqdm(runs, desc="grid", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run["name"])
        rows.append(run_one(run, data_dir, out / run["name"], progress=progress, force=force))
        write_summary(leaderboard(rows), out)  # the table so far, in case the grid is stopped
    return leaderboard(rows)


def cli_main(argv: list[str]) -> int:
    """`lmsys-pref grid --grid G --data-dir D --out-dir O [--force]`; exit 1 when a run failed."""
    ap = argparse.ArgumentParser(prog="lmsys-pref grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", required=True, help="YAML list of runs")
    ap.add_argument("--data-dir", default=None, help="competition folder for every run")
    ap.add_argument("--out-dir", required=True, help="grid folder: <name>/ per run + summary")
    ap.add_argument("--force", action="store_true", help="re-run finished runs too")
    args = ap.parse_args(argv)
    df = run_grid(args.grid, args.data_dir, args.out_dir, force=args.force)
    print(to_markdown(df.drop(columns="error")))
    for _, row in df[df.status == "failed"].iterrows():
        print(f"failed: {row['name']}: {row['error']}")
    print(f"summary: {Path(args.out_dir) / 'summary.csv'}")
    return int((df.status == "failed").any())
