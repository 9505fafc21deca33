"""Files and folders that appear whole or not at all.

Everything a run writes goes to a temporary sibling first and is renamed into place with
`os.replace` (atomic on one file system); on any failure the temporary is removed, so a crash,
a full disk or a kill never leaves a cut-off `oof.csv` or a stray `.submission.csv.tmp` that
looks like output. An `OSError` without a file name gets the target's path, so the one-line
message of the CLI names it. Standard library only (the torch-free core and configs use it).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp"  # temporaries are hidden files ending in .tmp; `is_temporary` finds leftovers


def _named(err: BaseException, path: Path) -> None:
    if isinstance(err, OSError) and not err.filename:
        err.filename = str(path)


def _sibling(path: Path, tag: str = "") -> Path:
    """A fresh hidden temporary name beside `path` (`is_temporary` recognises it)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{tag}{TMP_MARK}")


def is_temporary(path: Path) -> bool:
    """Whether `path` is a temporary left by this module (e.g. by a killed run)."""
    return path.name.startswith(".") and TMP_MARK in path.name


def make_parent(path: Path) -> None:
    """Create `path`'s folder; an OSError names the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _named(err, path.parent)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write it, and on success it replaces `path`.

    On failure (any exception, KeyboardInterrupt included) the temporary is removed and the
    exception re-raised, an `OSError` naming `path`; a previous `path` is left untouched.
    """
    path = Path(path)
    make_parent(path)
    tmp = _sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _named(err, path)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically; returns its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; fill it, and on success it becomes `path`.

    An existing `path` is replaced only once the new folder is complete; on failure the
    temporary folder is removed and `path` (if any) is left as it was.

    Example:
        with atomic_dir(out / "model") as tmp:
            model.save_pretrained(tmp)
    """
    path = Path(path)
    make_parent(path)
    tmp = _sibling(path)
    try:
        tmp.mkdir()
        yield tmp
        old = _sibling(path, ".old")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _named(err, path)
        raise
