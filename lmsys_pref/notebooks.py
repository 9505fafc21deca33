"""Execute a baseline's notebook with papermill: the one path behind `make train-*`, batch runs
and the notebook tests, so all three run the same code."""
from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import ConfigError, parse_params

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = Path(os.environ.get("LMSYS_PREF_NOTEBOOKS", REPO / "notebooks"))


@dataclass(frozen=True)
class Baseline:
    """A trainable baseline: its notebook, its config class and its default preset."""

    notebook: str
    config: str  # "module:Class"
    preset: str | None = None

    def config_class(self):
        module, cls = self.config.split(":")
        return getattr(importlib.import_module(module), cls)


BASELINES = {
    "xgb": Baseline("xgboost.ipynb", "lmsys_pref.configs.xgb:XGBConfig", "xgb"),
    "gemma": Baseline("gemma.ipynb", "lmsys_pref.configs.lm:LMConfig", "gemma2-2b"),
    "llama": Baseline("llama.ipynb", "lmsys_pref.configs.lm:LMConfig", "llama3-8b"),
    "roberta": Baseline("roberta.ipynb", "lmsys_pref.configs.encoder:EncoderConfig",
                        "roberta-base"),
}


class NotebookError(RuntimeError):
    """A notebook cell raised; the message carries the original error line."""


def notebook_parameters(baseline: str, data_dir: str | None, out_dir: str,
                        preset: str | None, params: dict[str, Any] | None) -> dict[str, Any]:
    """The papermill parameters of a run, checked against the baseline's config fields."""
    if baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {baseline!r}; known: {sorted(BASELINES)}")
    spec = BASELINES[baseline]
    fields = set(spec.config_class().field_names())
    params = dict(params or {})
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(f"baseline {baseline!r}: unknown parameter(s) {unknown}; "
                          f"known: {sorted(fields)}")
    out = {**params, "out_dir": str(out_dir)}
    if data_dir is not None:
        out["data_dir"] = str(data_dir)
    if spec.preset is not None or preset is not None:
        out["preset"] = preset or spec.preset
    return out


def run_notebook(baseline: str, out_dir: str | Path, data_dir: str | Path | None = None,
                 preset: str | None = None, params: dict[str, Any] | None = None,
                 progress: bool = True) -> Path:
    """Execute `notebooks/<baseline>.ipynb` into `out_dir`; returns the executed notebook's path.

    Raises:
        ConfigError: unknown baseline or parameter (before anything runs).
        NotebookError: a cell failed; the message names the notebook and the error.
    """
    import papermill as pm

    params = notebook_parameters(baseline, data_dir and str(data_dir), str(out_dir), preset,
                                 params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = NOTEBOOK_DIR / BASELINES[baseline].notebook
    dst = out_dir / src.name
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, progress_bar=progress,
                            kernel_name="python3", cwd=str(REPO))
    except pm.PapermillExecutionError as err:
        raise NotebookError(f"{src.name} failed in cell {err.exec_count}: {err.ename}: "
                            f"{err.evalue} (executed notebook: {dst})") from None
    return dst


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref train <baseline> --out-dir D [--data-dir D] [--preset P] [-p k v]`."""
    ap = argparse.ArgumentParser(prog="lmsys_pref train")
    ap.add_argument("baseline", choices=sorted(BASELINES))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--preset", default=None)
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        nb = run_notebook(args.baseline, args.out_dir, args.data_dir, args.preset or None,
                          parse_params(args.param))
    except NotebookError as err:
        print(f"error: {err}")
        return 1
    print(f"done in {time.time() - t0:.0f}s: {nb}")
    return 0
