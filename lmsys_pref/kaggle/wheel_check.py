"""Rules of the Kaggle wheels dataset, checked offline from the folder alone.

`check_wheel_set` resolves every wheel set's requirements the way pip will on the image: a
requirement the image's own version meets is left to the image; anything else must be a wheel in
the folder that installs on the target CPython (manylinux x86-64, the image's glibc), and its own
requirements are resolved in turn. On top of that: no wheel of torch/triton/nvidia-*, no wheel no
set needs (the image already has it), no `==` pin of an image package, and the size goal.
"""
from __future__ import annotations

import dataclasses
import email.parser
import json
import zipfile
from pathlib import Path

from packaging import tags
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .image import KAGGLE_IMAGE, KaggleImage

MANIFEST = "wheels.json"
MAX_MB = 300.0  # the goal for the whole dataset (1 MB = 10**6 bytes)
PACKAGE = "lmsys-pref"  # canonical name of the project's own wheel


def requirements_file(wheel_set: str) -> str:
    """File name of a wheel set's requirements in the dataset."""
    return "requirements.txt" if wheel_set == "base" else f"requirements-{wheel_set}.txt"


def platforms(glibc: str = KAGGLE_IMAGE.glibc) -> list[str]:
    """Every manylinux x86-64 tag a system with this glibc runs, newest first.

    pip does not expand `manylinux_2_x` tags given with `--platform`, so all are listed.
    """
    major, minor = (int(p) for p in glibc.split("."))
    if (major, minor) < (2, 17):
        raise ValueError(f"glibc {glibc}: manylinux wheels need 2.17 or later")
    return [f"manylinux_2_{m}_x86_64" for m in range(minor, 16, -1)] + ["manylinux2014_x86_64"]


def supported_tags(python: str, glibc: str = KAGGLE_IMAGE.glibc) -> set[tags.Tag]:
    """The wheel tags CPython `python` installs on manylinux x86-64 with this glibc."""
    version = tuple(int(p) for p in python.split("."))
    interpreter, plats = f"cp{version[0]}{version[1]}", platforms(glibc)
    return (set(tags.cpython_tags(version, abis=[interpreter], platforms=plats))
            | set(tags.compatible_tags(version, interpreter, plats)))


def wheel_requirements(wheel: str | Path) -> list[Requirement]:
    """The Requires-Dist of a wheel file, read from its METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.HeaderParser().parsestr(zf.read(name).decode("utf-8"))
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def applies(req: Requirement, env: dict[str, str], extras=()) -> bool:
    """Whether `req` holds on the target `env` when installed with `extras`."""
    return req.marker is None or any(req.marker.evaluate({**env, "extra": e})
                                     for e in ("",) + tuple(extras))


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A wheel file of the folder, as its file name describes it."""

    path: Path
    name: str
    version: Version
    tags: frozenset

    @classmethod
    def of(cls, path: Path) -> "Wheel":
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        return cls(path, name, version, frozenset(wheel_tags))


def check_wheel_set(folder: str | Path, image: KaggleImage = KAGGLE_IMAGE,
                    max_mb: float = MAX_MB) -> list[str]:
    """Every rule the folder breaks, one line each (empty when it is fit to upload)."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return [f"{folder / MANIFEST} is missing; build the folder with `make kaggle-wheels`"]
    manifest = json.loads((folder / MANIFEST).read_text())
    wheels = [Wheel.of(p) for p in sorted(folder.glob("*.whl"))]
    targets = {py: supported_tags(py, manifest["glibc"]) for py in manifest["python_versions"]}
    problems = [f"{w.path.name}: {w.name} comes from the image, never from a wheel"
                for w in wheels if image.never_ship(w.name)]
    problems += [f"{w.path.name}: installs on none of CPython {', '.join(targets)} "
                 f"manylinux x86-64 (glibc {manifest['glibc']})"
                 for w in wheels if not any(w.tags & t for t in targets.values())]
    used: set[Path] = set()
    for entry in manifest["sets"].values():
        path = folder / entry["requirements"]
        if not path.exists():
            problems.append(f"{path.name} is missing")
            continue
        lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
        problems += _pin_problems(lines, image, path.name)
        for py, supported in targets.items():
            problems += _resolve(lines, wheels, supported, image, py, used, path.name,
                                 offline=manifest.get("offline", False))
    problems += [f"{w.path.name}: needed by no wheel set (the image has it or nothing needs it)"
                 for w in wheels if w.path not in used]
    total = sum(w.path.stat().st_size for w in wheels) / 1e6
    if total > max_mb:
        problems.append(f"the wheels take {total:.1f} MB, over the {max_mb:g} MB goal")
    return problems


def _pin_problems(lines: list[str], image: KaggleImage, where: str) -> list[str]:
    first = Requirement(lines[0]) if lines else None
    problems = [] if first and canonicalize_name(first.name) == PACKAGE and any(
        s.operator == "==" for s in first.specifier) else [f"{where}: must start with lmsys_pref=="]
    for line in lines:
        req = Requirement(line)
        if image.has(req.name) and any(s.operator in ("==", "===") for s in req.specifier):
            problems.append(f"{where}: {line} pins a package of the image; floors (>=) only")
    return problems


def _resolve(lines: list[str], wheels: list[Wheel], supported: set, image: KaggleImage,
             python: str, used: set[Path], where: str, offline: bool = False) -> list[str]:
    """Resolve `lines` on the image + these wheels for one Python; marks the wheels used.

    `offline` (a `--no-deps` folder, as the tests build): an image package below our floor is
    what a real build downloads, so its missing wheel is no problem there.
    """
    env, problems, seen = image.marker_environment(python), [], set()
    todo = [(where, Requirement(line), ()) for line in lines]
    while todo:
        parent, req, extras = todo.pop()
        if not applies(req, env, extras) or image.satisfies(req):
            continue
        fits = [w for w in wheels if w.name == canonicalize_name(req.name) and w.tags & supported
                and req.specifier.contains(w.version, prereleases=True)]
        if not fits and offline and image.has(req.name):
            continue
        if not fits:
            have = image.version(req.name) or ("present" if image.has(req.name) else "absent")
            problems.append(f"{where} (Python {python}): {req} needed by {parent}: the image's "
                            f"{req.name} is {have} and no wheel here fits")
            continue
        best = max(fits, key=lambda w: w.version)
        used.add(best.path)
        if (best.path, tuple(req.extras)) not in seen:
            seen.add((best.path, tuple(req.extras)))
            todo += [(best.path.name, sub, tuple(req.extras))
                     for sub in wheel_requirements(best.path)]
    return problems
