"""The offline wheels dataset of the Kaggle kernels: lmsys_pref and only what the image lacks.

    make kaggle-wheels   # python -m lmsys_pref kernels wheels --out-dir kaggle_kernels/build/wheels

The folder (uploaded as <you>/lmsys-pref-wheels by `make push-wheels`) holds:

    *.whl                 lmsys_pref, and the packages the Kaggle image lacks or has too old
    requirements.txt      wheel set "base" (XGBoost, RoBERTa): lmsys_pref==<version>, then a
                          floor (>=) for every image package it needs; pip keeps the image's own
    requirements-lm.txt   wheel set "lm" (quantized Gemma/Llama): the same plus bitsandbytes
    wheels.json           the Python versions the wheels are for, the image, each set's wheels
    dataset-metadata.json

A kernel's install cell checks its Python against wheels.json, then runs
`pip install --no-index --find-links <folder> -r <folder>/<its set's requirements>`. What the image
provides is `kaggle_image.KAGGLE_IMAGE`; torch, triton and nvidia-* never get a wheel, and numpy or
matplotlib (imported before the first cell) are never upgraded.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from ..runs import save_json
from .image import KAGGLE_IMAGE, KaggleImage
from .wheel_check import (
    MANIFEST,
    applies,
    check_wheel_set,
    platforms,
    requirements_file,
    wheel_requirements,
)

log = logging.getLogger("lmsys_pref.kaggle.wheels")

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "lmsys_pref"
DATASET = "lmsys-pref-wheels"
PYTHON_VERSIONS = (KAGGLE_IMAGE.python,)
GLIBC = KAGGLE_IMAGE.glibc
WHEEL_SETS = {"base": (), "encoder": ("lm",), "lm": ("lm", "gpu")}
"""Wheel set -> lmsys_pref extras it installs; each kernel names its set (XGBoost: base, no
torch stack; RoBERTa: encoder; the LoRA LLMs: lm, with bitsandbytes)."""
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def parse_python_versions(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`['3.12', '3.11,3.13']` -> `('3.12', '3.11', '3.13')`; a clear error for anything else."""
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    bad = [v for v in out if not re.fullmatch(r"3\.\d{1,2}", v)]
    if bad or not out:
        raise ValueError(f"--python-version {bad or values}: expected major.minor such as 3.12")
    return tuple(dict.fromkeys(out))


def requirement_line(req: Requirement) -> str:
    """`req` without its marker (already evaluated for the target)."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


@dataclasses.dataclass
class WheelPlan:
    """What one wheel set needs beyond the image, for one Python version."""

    lines: list[str]
    """requirements lines after the lmsys_pref pin."""
    shipped: dict[str, str]
    """Canonical name -> installed (tested) version of each wheel to download."""


def plan_wheels(direct: list[Requirement], extras: tuple[str, ...], python: str,
                image: KaggleImage = KAGGLE_IMAGE) -> WheelPlan:
    """Walk lmsys_pref's requirements: the image keeps what meets our floor; the rest (and what
    it needs in turn) is shipped at the version installed here.

    Raises:
        ValueError: torch/nvidia-* or a package imported at kernel start would need replacing,
            or a needed package is not installed here.
    """
    env = image.marker_environment(python)
    plan = WheelPlan([], {})
    todo = [(PACKAGE, req, True) for req in direct if applies(req, env, extras)]
    while todo:
        parent, req, is_direct = todo.pop(0)
        name = canonicalize_name(req.name)
        if not image.satisfies(req):
            _check_replaceable(image, req, parent)
            if name not in plan.shipped:
                plan.shipped[name] = _installed_version(req, parent)
                needs = map(Requirement, metadata.requires(name) or [])
                todo += [(name, sub, False) for sub in needs
                         if applies(sub, env, tuple(req.extras))]
        if is_direct:  # image packages: floors only; the rest pinned to the tested version
            pinned = name in plan.shipped and not image.has(name)
            plan.lines.append(f"{name}=={plan.shipped[name]}" if pinned
                              else requirement_line(req))
    return plan


def _check_replaceable(image: KaggleImage, req: Requirement, parent: str) -> None:
    have = image.version(req.name)
    if image.never_ship(req.name):
        raise ValueError(f"{parent} needs {req}, but {req.name} comes from the image "
                         f"({have or 'absent'}) and never from a wheel; lower the requirement")
    if canonicalize_name(req.name) in image.startup_imports and image.has(req.name):
        raise ValueError(f"{parent} needs {req}; the image's {req.name} {have} is imported "
                         "before the first cell, so a kernel cannot upgrade it; lower the floor")


def _installed_version(req: Requirement, parent: str) -> str:
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        raise ValueError(f"{req.name} (needed by {parent}) is not installed here; run `make "
                         "install` so the shipped wheels are the tested versions") from None
    if not req.specifier.contains(version, prereleases=True):
        raise ValueError(f"{parent} needs {req} but {version} is installed here")
    return version


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


def download_wheels(pins: dict[str, str], out_dir: str | Path, python_version: str,
                    glibc: str = GLIBC) -> None:
    """`pip download` binary wheels of exactly `pins` for CPython `python_version` on Linux."""
    if not pins:
        return
    plats = [arg for tag in platforms(glibc) for arg in ("--platform", tag)]
    _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(out_dir),
         "--python-version", python_version, *plats, "--implementation", "cp",
         *[f"{name}=={version}" for name, version in sorted(pins.items())])


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    log.info("%s", " ".join(cmd[:8]) + (" ..." if len(cmd) > 8 else ""))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip {args[0]} failed (exit {done.returncode}):\n"
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")


def dataset_metadata(username: str, slug: str = DATASET) -> dict:
    """dataset-metadata.json of the wheels folder (`kaggle datasets create -p <folder>`)."""
    return {"title": slug, "id": f"{username}/{slug}",
            "subtitle": "Offline wheels of lmsys_pref and what the Kaggle image lacks",
            "licenses": [{"name": "other"}]}  # third-party wheels under their own licences


def build_wheels(out_dir: str | Path, username: str, *,
                 python_versions: tuple[str, ...] = PYTHON_VERSIONS, glibc: str = GLIBC,
                 no_deps: bool = False, image: KaggleImage = KAGGLE_IMAGE) -> Path:
    """Write the wheels dataset folder (old wheels and requirements in it are removed first).

    Args:
        out_dir: the folder (created).
        username: Kaggle username owning the dataset.
        python_versions: CPython versions the wheels are for (the image's by default).
        glibc: the oldest glibc of the target system.
        no_deps: only the lmsys_pref wheel, nothing downloaded (offline; tests use it).
        image: what the target image provides.

    Raises:
        ValueError: the folder breaks a rule of `check_wheel_set` (listed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.whl"), *out.glob("requirements*.txt"), out / MANIFEST]:
        old.unlink(missing_ok=True)
    wheel = build_package_wheel(out)
    pin = f"{PACKAGE}=={parse_wheel_filename(wheel.name)[1]}"
    direct, downloads, sets = wheel_requirements(wheel), {}, {}
    for set_name, extras in WHEEL_SETS.items():
        plans = {py: plan_wheels(direct, extras, py, image) for py in python_versions}
        shipped = {} if no_deps else {k: v for p in plans.values() for k, v in p.shipped.items()}
        lines = [pin] + [line for line in dict.fromkeys(x for p in plans.values() for x in p.lines)
                         if canonicalize_name(Requirement(line).name) in shipped
                         or image.has(Requirement(line).name)]
        (out / requirements_file(set_name)).write_text("\n".join(lines) + "\n")
        sets[set_name] = sorted(shipped)
        for py, plan in plans.items():
            downloads.setdefault(py, {}).update({} if no_deps else plan.shipped)
    for py, pins in downloads.items():
        download_wheels(pins, out, py, glibc)
    save_json(out / MANIFEST, {**_manifest(out, python_versions, glibc, image, sets),
                               "offline": no_deps})
    save_json(out / "dataset-metadata.json", dataset_metadata(username))
    problems = check_wheel_set(out, image)
    if problems:
        raise ValueError(f"{out}: the wheels dataset breaks its rules:\n  " + "\n  ".join(problems))
    log.info("%s", summary(out))
    return out


def _manifest(out: Path, python_versions, glibc, image, sets: dict[str, list[str]]) -> dict:
    files = {p.name: p for p in out.glob("*.whl")}

    def names(shipped: list[str]) -> list[str]:
        return sorted(f for f in files if parse_wheel_filename(f)[0] in {"lmsys-pref", *shipped})

    def mb(chosen) -> float:
        return round(sum(files[f].stat().st_size for f in chosen) / 1e6, 2)

    return {"python_versions": list(python_versions), "glibc": glibc, "image": image.name,
            "sets": {s: {"requirements": requirements_file(s), "wheels": names(shipped),
                         "mb": mb(names(shipped))} for s, shipped in sets.items()},
            "files": len(files), "total_mb": mb(files)}


def summary(folder: str | Path) -> str:
    """One line: wheel count and size of the dataset and of each set."""
    m = json.loads((Path(folder) / MANIFEST).read_text())
    sets = ", ".join(f"{s} {v['mb']} MB ({len(v['wheels'])} wheels)" for s, v in m["sets"].items())
    pythons = ", ".join(m["python_versions"])
    return (f"{m['files']} wheel(s), {m['total_mb']} MB for Python {pythons} in {folder}; "
            f"sets: {sets}")

