"""Entries of a folder moved into one of its subfolders whole or not at all.

`move_aside(folder, names, dest)` moves the entries `names` of `folder` into `folder/dest`,
and replaces an older `dest` only once every entry has moved:

1. each entry is renamed into a staging folder, `folder/.aside.moving`, one by one;
2. the older `dest` (if any) is renamed to `.<dest>.displaced.moving`, the staging folder
   becomes `dest`, and the displaced folder is deleted.

Only renames inside one folder (one file system): nothing is copied, so nothing is half
written. When a rename fails, the entries already staged are moved back (and a displaced `dest`
too), so the folder is as it was, and the `OSError` names the entry that could not move; when
moving back fails as well, `MoveError` names every entry and where it is now. A kill part-way
leaves the staging or the displaced folder; `finish_interrupted` (the first step of the next
`move_aside`) puts them back. Their names carry no `.tmp` (`atomic.is_temporary`): they hold a
run's real files, so a clean-up of temporaries never deletes them. Standard library only.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Sequence

from .atomic import swap_in

STAGING = ".aside.moving"
DISPLACED = ".displaced.moving"  # `.<dest>.displaced.moving`: the older `dest` being replaced


class MoveError(OSError):
    """A move failed half-way and could not be undone; the message says where each entry is."""


def _displaced(target: Path) -> Path:
    return target.with_name(f".{target.name}{DISPLACED}")


def finish_interrupted(folder: str | Path) -> list[str]:
    """Undo what a killed `move_aside` left in `folder`; returns the entries put back.

    A displaced folder comes back as `dest` when `dest` is missing (the kill came between the
    two renames) and is deleted otherwise (only its deletion was cut); the staged entries go
    back into `folder`.

    Raises:
        MoveError: a staged entry has the name of an entry `folder` holds again (both named).
    """
    folder = Path(folder)
    for displaced in folder.glob(f".*{DISPLACED}"):
        target = folder / displaced.name[1:-len(DISPLACED)]
        if target.exists():
            _remove(displaced)
        else:
            os.replace(displaced, target)
    staging = folder / STAGING
    if not staging.is_dir():
        return []
    staged = sorted(p.name for p in staging.iterdir())
    clash = [name for name in staged if (folder / name).exists()]
    if clash:
        raise MoveError(errno.EEXIST, f"an interrupted move left {clash} in {staging}, and the "
                        "folder holds entries of the same names again; move one of each pair "
                        "away", str(folder))
    for name in staged:
        os.replace(staging / name, folder / name)
    staging.rmdir()
    return staged


def _remove(path: Path) -> None:
    """Delete a displaced folder (or file); what cannot be deleted is left for the next try."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _install(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`, an older `target` out of the way first and deleted after."""
    swap_in(staging, target, _displaced(target))


def _put_back(folder: Path, moved: Sequence[str], dest: str, err: OSError) -> OSError:
    """Move the staged entries back after `err`; the error to raise says where things are
    (`err.filename`: the entry, or the `dest` folder, whose rename failed)."""
    staging = folder / STAGING
    stuck = []
    for name in reversed(moved):
        try:
            os.replace(staging / name, folder / name)
        except OSError:
            stuck.append(name)
    if not stuck and not _displaced(folder / dest).exists():
        with contextlib.suppress(OSError):  # an empty staging folder left is removed next time
            staging.rmdir()
        return OSError(err.errno, f"moving entries into {dest}/ failed here ({err.strerror or err})"
                       "; nothing was moved, every entry is where it was",
                       str(err.filename or folder))
    back = sorted(set(moved) - set(stuck))
    older = _displaced(folder / dest)
    return MoveError(err.errno, f"moving entries into {dest}/ failed ({err.strerror or err}) "
                     f"and could not be undone: {sorted(stuck)} are in {staging}, {back} "
                     f"are back in {folder}" + (f", the older {dest}/ is {older}"
                                                if older.exists() else "")
                     + f"; the next move into {dest}/ (the next run here) puts them back first",
                     str(folder))


def move_aside(folder: str | Path, names: Sequence[str], dest: str) -> Path:
    """Move the entries `names` of `folder` into `folder/dest` (replacing an older `dest`),
    all of them or none (see the module doc); returns `folder/dest`.

    Raises:
        OSError: an entry could not move; nothing was moved (the message names the entry).
        MoveError: moving back failed too; the message says which entries are where.
    """
    folder = Path(folder)
    finish_interrupted(folder)
    staging = folder / STAGING
    staging.mkdir()
    moved: list[str] = []
    try:
        for name in names:
            os.replace(folder / name, staging / name)
            moved.append(name)
        _install(staging, folder / dest)
    except OSError as err:
        raise _put_back(folder, moved, dest, err) from err
    return folder / dest
