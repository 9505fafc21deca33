"""`python -m lmsys_pref <command> ...` (also `lmsys-pref`): one door for make, batch and users.

Each command lives in the module that owns it, as `cli_main(argv) -> int`; this file only routes,
so that `lmsys-pref predict` on an XGBoost model never imports torch.
"""
from __future__ import annotations

import importlib
import logging
import sys

COMMANDS = {
    "train": ("lmsys_pref.notebooks:cli_main", "train a baseline by executing its notebook"),
    "predict": ("lmsys_pref.predict:cli_main", "score test.csv with a saved model"),
    "bias": ("lmsys_pref.bias:cli_main", "bias probes of a saved model"),
    "report": ("lmsys_pref.report:cli_main", "figures + report.md for a run folder"),
    "calibrate": ("lmsys_pref.blend:calibrate_main", "temperature-scale a run on its OOF"),
    "blend": ("lmsys_pref.blend:cli_main", "blend runs with weights fitted on OOF"),
    "batch": ("lmsys_pref.batch:cli_main", "papermill grid of runs + summary"),
    "kernels": ("lmsys_pref.kaggle:cli_main", "Kaggle kernel folders and wheels"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        print("usage: python -m lmsys_pref <command> [options]\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    target, _ = COMMANDS[argv[0]]
    module, fn = target.split(":")
    try:
        return int(getattr(importlib.import_module(module), fn)(argv[1:]) or 0)
    except (ValueError, FileNotFoundError) as err:  # bad input: one clear line, non-zero exit
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
