"""`python -m lmsys_pref <command> ...` (also `lmsys-pref`): one door for make, grids and users.

Each command lives in the module that owns it, as `cli_main(argv) -> int`; this file only routes,
so that `lmsys-pref predict` on an XGBoost model never imports torch. Expected failures end here
as one line on stderr and a non-zero exit: 2 for a bad parameter (`ConfigError`), 1 for bad
input data, a failed run or an OS error (the message names the path); set
`LMSYS_PREF_TRACEBACK=1` to see the traceback instead.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

from . import __version__

COMMANDS = {
    "train": ("lmsys_pref.commands.notebooks:cli_main", "train a baseline (runs its notebook)"),
    "predict": ("lmsys_pref.commands.predict:cli_main", "score test.csv with a saved model"),
    "bias": ("lmsys_pref.eval.bias:cli_main", "bias probes of a saved model"),
    "report": ("lmsys_pref.eval.report:cli_main", "figures + report.md for a run folder"),
    "calibrate": ("lmsys_pref.eval.blend:calibrate_main", "temperature-scale a run on its OOF"),
    "blend": ("lmsys_pref.eval.blend:cli_main", "blend runs with weights fitted on OOF"),
    "grid": ("lmsys_pref.commands.grid:cli_main", "a YAML grid of runs + a leaderboard"),
    "dist": ("lmsys_pref.commands.launch:cli_main", "predict or train over N processes (torchrun)"),
    "eda": ("lmsys_pref.commands.notebooks:eda_main", "the EDA notebook on a data folder"),
    "planted": ("lmsys_pref.eval.planted:cli_main", "a planted-signal task: make it, score it"),
    "nbstrip": ("lmsys_pref.commands.nbstrip:main", "strip notebook outputs (also a git filter)"),
    "kernels": ("lmsys_pref.kaggle.commands:cli_main", "Kaggle kernel folders and wheels"),
    "pseudo-label": ("lmsys_pref.commands.pseudo_label:cli_main", "soft labels from runs"),
    "merge-folds": ("lmsys_pref.train.merge:cli_main", "a k-fold run's folds as one model"),
    "import-model": ("lmsys_pref.model.importer:cli_main", "a peft adapter as a model folder"),
}


def error_line(err: BaseException) -> str:
    """One line for the user: an OS error as `path: reason`, anything else its message."""
    if isinstance(err, OSError) and err.filename:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _usage(out) -> None:
    width = max(map(len, COMMANDS))
    print("usage: lmsys-pref <command> [options]   (lmsys-pref <command> --help for its options;"
          " lmsys-pref --version)\n", file=out)
    for name, (_, text) in COMMANDS.items():
        print(f"  {name:<{width}}  {text}", file=out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"lmsys_pref {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        _usage(sys.stdout)
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
        _usage(sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module, fn = COMMANDS[argv[0]][0].split(":")
    try:
        return int(getattr(importlib.import_module(module), fn)(argv[1:]) or 0)
    except (ValueError, OSError, RuntimeError, KeyboardInterrupt) as err:
        if os.environ.get("LMSYS_PREF_TRACEBACK"):
            raise
        if isinstance(err, KeyboardInterrupt):
            print("error: interrupted", file=sys.stderr)
            return 130
        print(f"error: {error_line(err)}", file=sys.stderr)
        from .configs import ConfigError  # light: yaml + dataclasses

        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
