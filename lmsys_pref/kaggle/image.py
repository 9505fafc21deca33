"""What Kaggle's notebook image already provides, so the wheels dataset ships only what it lacks.

The kernels install lmsys_pref into a running Jupyter kernel on this image. Replacing an image
package there is what broke them (numpy and matplotlib are imported by IPython's startup before
the first cell; pandas 2 -> 3 is a major version), so `wheels.py` keeps every package listed here
with a floor (`>=`) and ships a wheel only where the image's version is below lmsys_pref's floor.

Read from (December 2025, the first Python 3.12 image):
- Kaggle/docker-python commit 4ae73d1 "Upgrade to Python 3.12" (2025-12-12): FROM the Colab
  runtime `release-colab-external_20251024-060052_RC00`; re-pins numpy==2.0.2, pandas==2.2.2,
  scipy<=1.15.3, huggingface-hub==0.36.0, protobuf==5.29.5; adds papermill and
  transformers>=4.51.0 (kaggle_requirements.txt).
- That Colab runtime's package list (googlecolab/backend-info, pip-freeze.txt at 2025-10-24):
  Python 3.12.12 on Ubuntu 22.04 (glibc 2.35) and the versions below.
Later images (2026) have the same or newer versions of these packages (Colab 2026-05-14: numpy
2.0.2, pandas 2.2.2, transformers 5.0.0, peft 0.19.1, xgboost 3.2.0), so they are floors too.

Some image packages break our stack merely by being there (`IMAGE_BREAKERS`): the install cell
removes them offline (`pip uninstall -y`) before lmsys_pref is installed, one printed line each.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


@dataclasses.dataclass(frozen=True)
class KaggleImage:
    """A notebook image: its interpreter, platform and preinstalled packages."""

    name: str
    """Which image the facts were read from."""
    python: str
    """`major.minor` of its CPython."""
    python_full: str
    """Full version, for environment markers such as `python_full_version`."""
    glibc: str
    """glibc of its OS; decides which manylinux wheels run there."""
    packages: Mapping[str, str]
    """Canonical name -> version installed in the image (or a floor where marked)."""
    prefixes: tuple[str, ...] = ("nvidia-",)
    """Name prefixes of families the image has in full (CUDA libraries of its torch)."""
    startup_imports: tuple[str, ...] = ("numpy", "matplotlib")
    """Imported by IPython before the first cell: replacing them in a cell breaks the kernel."""
    never_shipped: tuple[str, ...] = ("torch", "triton")
    """Never a wheel (with `prefixes`): the image's CUDA build of torch must stay."""

    def version(self, name: str) -> Version | None:
        """The image's version of `name`, None when the image lacks it (or has the whole family
        but no single version, as for nvidia-*)."""
        found = self.packages.get(canonicalize_name(name))
        return Version(found) if found else None

    def has(self, name: str) -> bool:
        """Whether the image ships `name` at all."""
        name = canonicalize_name(name)
        return name in self.packages or name.startswith(self.prefixes)

    def never_ship(self, name: str) -> bool:
        """Whether a wheel of `name` must never go into the dataset."""
        name = canonicalize_name(name)
        return name in self.never_shipped or name.startswith(self.prefixes)

    def satisfies(self, req: Requirement) -> bool:
        """Whether the image's own version of `req`'s package meets `req` (pip keeps it)."""
        if not self.has(req.name):
            return False
        found = self.version(req.name)
        return found is None or req.specifier.contains(found, prereleases=True)

    def marker_environment(self, python: str | None = None) -> dict[str, str]:
        """Environment-marker values of this image, or of `python` on the same platform."""
        python = python or self.python
        full = self.python_full if python == self.python else f"{python}.0"
        return {"python_version": python, "python_full_version": full,
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                "platform_machine": "x86_64"}


_PACKAGES = {
    # The scientific stack (Kaggle re-pinned numpy, pandas and scipy in the 3.12 image).
    "numpy": "2.0.2", "pandas": "2.2.2", "scipy": "1.15.3", "scikit-learn": "1.6.1",
    "matplotlib": "3.10.0", "pyarrow": "18.1.0", "xgboost": "3.1.1",
    # torch with its CUDA libraries (nvidia-* via `prefixes`), and the Hugging Face stack.
    "torch": "2.8.0", "triton": "3.4.0", "transformers": "4.57.1", "accelerate": "1.11.0",
    "peft": "0.17.1", "tokenizers": "0.22.1", "safetensors": "0.6.2",
    "huggingface-hub": "0.36.0", "sentencepiece": "0.2.1", "protobuf": "5.29.5",
    # The notebook runtime; papermill is Kaggle's addition, unpinned: 2.6.0 (April 2024) is a
    # floor of what a December 2025 build installs, not the exact version.
    "papermill": "2.6.0", "ipykernel": "6.17.1", "ipython": "7.34.0", "nbformat": "5.10.4",
    "nbclient": "0.10.2", "jupyter-client": "7.4.9",
    # Small common dependencies.
    "tqdm": "4.67.1", "pyyaml": "6.0.3", "packaging": "25.0", "psutil": "5.9.5",
    "filelock": "3.20.0", "regex": "2024.11.6", "requests": "2.32.4", "jinja2": "3.1.6",
    "fsspec": "2025.3.0", "typing-extensions": "4.15.0", "joblib": "1.5.2",
    "threadpoolctl": "3.6.0", "pillow": "11.3.0", "click": "8.3.0", "tenacity": "8.5.0",
    "entrypoints": "0.4", "aiohttp": "3.13.1", "kaggle": "1.7.4.5",
}

@dataclasses.dataclass(frozen=True)
class Breaker:
    """An image package that breaks our stack when installed below `least`."""

    name: str
    least: str
    """The oldest version our stack accepts; older ones are removed (no wheel replaces them)."""
    why: str
    """One line: what rejects it (cited from that package's source)."""
    extras: tuple[str, ...] = ("lm",)
    """The lmsys_pref extras whose stack it breaks: only wheel sets installing them remove it."""


IMAGE_BREAKERS = (
    # A 2026-09 report: the image's torchao 0.10 made peft fail; public kernels uninstall it.
    # peft >= 0.21 (setup.cfg's `lm` floor) checks torchao whenever it is importable:
    # peft/import_utils.py, is_torchao_available(), TORCHAO_MINIMUM_VERSION = 0.16.0; peft 0.21
    # raises ImportError below it when a LoRA layer is built (0.22 warns and disables torchao).
    Breaker("torchao", "0.16.0", "peft (>= 0.21) rejects torchao below 0.16.0 "
            "(peft/import_utils.py, is_torchao_available)"),
)


def breakers_for(extras: tuple[str, ...]) -> dict[str, list[str]]:
    """name -> [least version, why] of the breakers of a wheel set installing `extras`."""
    return {b.name: [b.least, b.why] for b in IMAGE_BREAKERS if set(b.extras) & set(extras)}


def stale_packages(breakers):
    """(name, version, least, why) of each package of `breakers` (name -> [least, why]) that is
    installed below its least version. Standard library only: the install cell runs a copy
    (`inspect.getsource`) before lmsys_pref, or packaging, can be relied on."""
    from importlib import metadata

    def release(version):  # '0.10.0' -> (0, 10, 0); '0.16.0.dev1+cu121' -> (0, 16, 0)
        numbers = []
        for part in version.split(".")[:3]:
            digits = part[:len(part) - len(part.lstrip("0123456789"))]
            numbers.append(int(digits or 0))
        return tuple(numbers)

    stale = []
    for name, (least, why) in breakers.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if release(version) < release(least):
            stale.append((name, version, least, why))
    return stale


KAGGLE_IMAGE = KaggleImage(
    name="Kaggle docker-python 4ae73d1 (2025-12-12, Python 3.12) on Colab "
         "release-colab-external_20251024-060052_RC00",
    python="3.12", python_full="3.12.12", glibc="2.35",
    packages=MappingProxyType(_PACKAGES))
