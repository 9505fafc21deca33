"""A stand-in for a package installed in an image: for the tests of what the Kaggle kernels do
with the image's own packages (a stale torchao removed offline)."""
from __future__ import annotations

from pathlib import Path


def plant(site: Path, name: str, version: str) -> Path:
    """An installed distribution `name` in `site`: a package folder and a dist-info whose RECORD
    lets `pip uninstall` remove it."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{p},,\n" for p in (
        f"{name}/__init__.py", f"{info.name}/METADATA", f"{info.name}/RECORD")))
    return site
