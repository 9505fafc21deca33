"""Strip outputs from notebooks so they stay reviewable in git.

    lmsys-pref nbstrip notebooks/*.ipynb          # strip in place (`make strip-notebooks`)
    lmsys-pref nbstrip --check notebooks/*.ipynb  # exit 1 if one has outputs
    python -m lmsys_pref.commands.nbstrip < in.ipynb  # stdin -> stdout: the git filter

Removes cell outputs, execution counts and run metadata (papermill, execution timing, widgets);
keeps cell tags (the papermill `parameters` tag) and the kernelspec.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

RUN_METADATA = ("papermill", "execution", "widgets", "collapsed", "scrolled")


def is_stripped(nb: nbformat.NotebookNode) -> bool:
    """True when no code cell has outputs, an execution count or run metadata."""
    return all(not c.get("outputs") and c.get("execution_count") is None
               and not set(c.metadata) & set(RUN_METADATA)
               for c in nb.cells if c.cell_type == "code") and "papermill" not in nb.metadata


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip `nb` in place and return it."""
    for cell in nb.cells:
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb


def strip_file(path: str | Path) -> bool:
    """Strip one .ipynb file in place; returns True when it changed."""
    nb = nbformat.read(str(path), as_version=4)
    if is_stripped(nb):
        return False
    nbformat.write(strip(nb), str(path))
    return True


def main(argv: list[str] | None = None) -> int:
    """Strip (or `--check`) the notebooks named; with none, stdin to stdout (a git filter)."""
    ap = argparse.ArgumentParser(prog="lmsys-pref nbstrip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="notebooks; none: stdin -> stdout")
    ap.add_argument("--check", action="store_true", help="only report; exit 1 if not stripped")
    args = ap.parse_args(argv)
    if not args.paths:
        nbformat.write(strip(nbformat.read(sys.stdin, as_version=4)), sys.stdout)
        return 0
    bad = []
    for path in args.paths:
        if args.check:
            if not is_stripped(nbformat.read(str(path), as_version=4)):
                bad.append(path)
        elif strip_file(path):
            print(f"stripped {path}")
    for path in bad:
        print(f"{path}: has outputs; run `lmsys-pref nbstrip {path}`")
    return int(bool(bad))


if __name__ == "__main__":
    sys.exit(main())
