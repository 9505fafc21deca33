"""Files and folders that appear whole or not at all.

Everything a run writes goes to a temporary sibling first and is renamed into place with
`os.replace` (atomic on one file system); on any failure the temporary is removed, so a crash,
a full disk or a kill never leaves a cut-off `oof.csv` or a stray `.submission.csv.tmp` that
looks like output. An `OSError` without a file name gets the target's path, so the one-line
message of the CLI names it. `exclusive` holds a run folder for one run at a time (an advisory
lock: a second run into the same OUT_DIR stops at once, naming the first run's process).
Standard library only (the torch-free core and configs use it).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded there
    fcntl = None

TMP_MARK = ".tmp"  # temporaries are hidden files ending in .tmp; `is_temporary` finds leftovers
_REPLACED = re.compile(r"\.(.+)\.[0-9a-f]{8}\.old" + re.escape(TMP_MARK))  # `atomic_dir`'s old one


def _named(err: BaseException, path: Path) -> None:
    if isinstance(err, OSError) and not err.filename:
        err.filename = str(path)


def _sibling(path: Path, tag: str = "") -> Path:
    """A fresh hidden temporary name beside `path` (`is_temporary` recognises it)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{tag}{TMP_MARK}")


def is_temporary(path: Path) -> bool:
    """Whether `path` is a temporary left by this module (e.g. by a killed run)."""
    return path.name.startswith(".") and TMP_MARK in path.name


def clear_temporaries(folder: str | Path) -> None:
    """Delete the temporaries a killed run left in `folder`.

    One is not deleted: `atomic_dir` renames the folder it replaces to `.NAME.<hex>.old.tmp`
    before the new one takes its name, so a kill between the two renames leaves the older,
    whole folder there and no NAME; it is renamed back to NAME.
    """
    folder = Path(folder)
    for path in sorted(filter(is_temporary, folder.iterdir())):
        old = _REPLACED.fullmatch(path.name)
        if old and not (folder / old.group(1)).exists():
            os.replace(path, folder / old.group(1))
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


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


def swap_in(new: Path, target: Path, old: Path) -> None:
    """Rename `new` to `target`: an existing `target` is renamed to `old` first and deleted
    after; when the rename fails, `target` is put back as it was."""
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            old.unlink()


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
        swap_in(tmp, path, _sibling(path, ".old"))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _named(err, path)
        raise


# --- one run per folder -------------------------------------------------------------------------
LOCK_NAME = ".lmsys_pref.lock"  # inside the locked folder, only while a run holds it
LOCKS_ENV = "LMSYS_PREF_HELD_FOLDERS"  # "path=pid" entries a parent holds for its kernels
_held: dict[str, list] = {}  # folder -> [file descriptor, depth]: re-entrant in one process


class FolderBusy(OSError):
    """Another process holds the folder's lock; the message names that process."""


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 4096) or b"{}")
    except ValueError:
        return {}


def _held_by_parent(key: str, holder: dict) -> bool:
    """Whether the holder is the process that started us for this folder (a notebook kernel
    runs the run its parent locked)."""
    entries = dict(e.rsplit("=", 1) for e in os.environ.get(LOCKS_ENV, "").split(os.pathsep)
                   if "=" in e)
    return entries.get(key) is not None and entries[key] == str(holder.get("pid"))


def _acquire(folder: Path) -> int | None:
    """The locked descriptor of `folder`'s lock file, or None when a parent holds it."""
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if _held_by_parent(str(folder), holder):
                return None
            raise FolderBusy(errno.EBUSY, f"in use by another run (pid {holder.get('pid', '?')}"
                             f", started {holder.get('started', '?')}: {holder.get('command', '?')}"
                             "); wait for it to finish or choose another folder",
                             str(folder)) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not unlinked by a leaving holder
                break
        os.close(fd)
    info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300]}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    return fd


@contextlib.contextmanager
def exclusive(folder: str | Path) -> Iterator[Path]:
    """Hold `folder` (created if needed) for one run: a second process asking for it gets
    `FolderBusy` at once, naming the first one's pid and command. Re-entrant in one process;
    processes started inside the block (papermill kernels) inherit the right to it through
    the environment. No-op where `fcntl` is missing (Windows)."""
    folder = Path(folder).resolve()
    key = str(folder)
    if fcntl is None or key in _held:
        if key in _held:
            _held[key][1] += 1
        try:
            yield folder
        finally:
            if key in _held:
                _held[key][1] -= 1
        return
    make_parent(folder / LOCK_NAME)
    fd = _acquire(folder)
    if fd is None:  # our parent holds it
        yield folder
        return
    _held[key] = [fd, 1]
    old_env = os.environ.get(LOCKS_ENV)
    os.environ[LOCKS_ENV] = os.pathsep.join(filter(None, (old_env, f"{key}={os.getpid()}")))
    try:
        yield folder
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            _restore_env(old_env)
            with contextlib.suppress(OSError):
                os.unlink(folder / LOCK_NAME)
            os.close(fd)


def _restore_env(old: str | None) -> None:
    if old is None:
        os.environ.pop(LOCKS_ENV, None)
    else:
        os.environ[LOCKS_ENV] = old
