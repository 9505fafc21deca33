"""Offline wheels for Kaggle: lmsys_pref and its pinned dependencies as a dataset folder.

Internet is off in the competition, so the kernels install from this folder:

    pip install --no-index --find-links /kaggle/input/lmsys-pref-wheels \
        -r /kaggle/input/lmsys-pref-wheels/requirements.txt

The pins are the versions installed here (the ones the tests ran with). requirements.txt pins
lmsys_pref and its direct dependencies; the folder also holds every transitive dependency, so pip
finds one whenever the Kaggle image lacks it or has a version that does not fit. Left out by
default: torch (Kaggle's CUDA build must stay) and the notebook runtime Kaggle runs the kernel
with (ipykernel, papermill, nbformat).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .runs import save_json

log = logging.getLogger("lmsys_pref.wheels")

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "lmsys_pref"
KAGGLE_PROVIDED = ("torch", "ipykernel", "papermill", "nbformat")
# Kaggle's image: Linux x86-64, CPython 3.11, glibc >= 2.31 (Ubuntu 20.04 and later).
PYTHON_VERSION = "3.11"
GLIBC = "2.31"
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def _requirements(dist: str, extras: tuple[str, ...] = ()) -> list[str]:
    """Names of the requirements of an installed `dist` that apply here (with `extras`)."""
    names = []
    for text in metadata.distribution(dist).requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("",) + extras):
            names.append(canonicalize_name(req.name))
    return names


def pinned_requirements(dist: str = PACKAGE, extras: tuple[str, ...] = ("gpu",),
                        exclude: tuple[str, ...] = KAGGLE_PROVIDED, transitive: bool = True
                        ) -> dict[str, str]:
    """Installed versions of the dependencies of `dist` (and of theirs, when `transitive`).

    Excluded packages are not followed, so their own dependencies are left out too.

    Raises:
        ValueError: a needed package is not installed here (names it and who needs it).
    """
    skip = {canonicalize_name(n) for n in exclude}
    pins: dict[str, str] = {}
    todo = [(dist, name) for name in _requirements(dist, extras)]
    while todo:
        parent, name = todo.pop(0)
        if name in pins or name in skip:
            continue
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{name} (needed by {parent}) is not installed; run `make install` "
                             "first so the wheels match a tested environment") from None
        if transitive:
            todo += [(name, sub) for sub in _requirements(name)]
    return dict(sorted(pins.items()))


def build_package_wheel(out_dir: str | Path, repo: str | Path = REPO) -> Path:
    """Build the lmsys_pref wheel into `out_dir` from a copy of the project (keeps the checkout
    free of build/ folders); offline: no build isolation, the venv's setuptools builds it."""
    out_dir = Path(out_dir).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(Path(repo) / PACKAGE, src / PACKAGE,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in PROJECT_FILES:
            if (Path(repo) / name).exists():
                shutil.copy(Path(repo) / name, src / name)
        _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out_dir), str(src))
    wheels = sorted(out_dir.glob(f"{PACKAGE}-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel wrote no {PACKAGE} wheel into {out_dir}")
    return wheels[-1]


def platforms(glibc: str = GLIBC) -> list[str]:
    """Every manylinux x86-64 tag a system with this glibc runs, newest first.

    pip does not expand `manylinux_2_x` tags given with `--platform`, so all are listed.
    """
    major, minor = (int(p) for p in glibc.split("."))
    if (major, minor) < (2, 17):
        raise ValueError(f"glibc {glibc}: manylinux wheels need 2.17 or later")
    return [f"manylinux_2_{m}_x86_64" for m in range(minor, 16, -1)] + ["manylinux2014_x86_64"]


def download_wheels(pins: dict[str, str], out_dir: str | Path,
                    python_version: str = PYTHON_VERSION, glibc: str = GLIBC) -> None:
    """`pip download` binary wheels of exactly `pins` for Kaggle's interpreter and platform."""
    if not pins:
        return
    tags = [arg for tag in platforms(glibc) for arg in ("--platform", tag)]
    _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(out_dir),
         "--python-version", python_version, *tags, "--implementation", "cp",
         *[f"{name}=={version}" for name, version in pins.items()])


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    log.info("%s", " ".join(cmd[:8]) + (" ..." if len(cmd) > 8 else ""))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip {args[0]} failed (exit {done.returncode}):\n"
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")


def dataset_metadata(username: str, slug: str) -> dict:
    """dataset-metadata.json of the wheels folder (`kaggle datasets create -p <folder>`)."""
    return {"title": slug, "id": f"{username}/{slug}",
            "subtitle": "Offline wheels of lmsys_pref and its pinned dependencies",
            "licenses": [{"name": "other"}]}  # third-party wheels under their own licences


def build_wheels(out_dir: str | Path, username: str, slug: str, *, no_deps: bool = False,
                 packages: list[str] | None = None, exclude: tuple[str, ...] = KAGGLE_PROVIDED,
                 python_version: str = PYTHON_VERSION, glibc: str = GLIBC) -> Path:
    """Write the wheels dataset folder: wheels, requirements.txt and dataset-metadata.json.

    Args:
        out_dir: the folder (created).
        username: Kaggle username owning the dataset.
        slug: dataset slug (mounted at /kaggle/input/<slug>).
        no_deps: only the lmsys_pref wheel (offline and fast; tests use it).
        packages: only these dependencies (a subset of the pinned ones).
        exclude: dependencies left to the Kaggle image (not followed).
        python_version, glibc: the interpreter and the (oldest) glibc the wheels are for.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_package_wheel(out)
    direct = {} if no_deps else pinned_requirements(exclude=exclude, transitive=False)
    pins = {} if no_deps else pinned_requirements(exclude=exclude)
    if packages is not None:
        wanted = {canonicalize_name(p) for p in packages}
        unknown = sorted(wanted - set(pins))
        if unknown:
            raise ValueError(f"--packages {unknown}: not dependencies of {PACKAGE} "
                             f"(known: {sorted(pins)})")
        pins = {k: v for k, v in pins.items() if k in wanted}
        direct = {k: v for k, v in direct.items() if k in wanted}
    download_wheels(pins, out, python_version, glibc)
    version = wheel.name.split("-")[1]
    lines = [f"{PACKAGE}=={version}"] + [f"{k}=={v}" for k, v in direct.items()]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    save_json(out / "dataset-metadata.json", dataset_metadata(username, slug))
    log.info("%d wheel(s) in %s", len(list(out.glob("*.whl"))), out)
    return out
