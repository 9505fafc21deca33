"""The wheels dataset: only what the Kaggle image lacks, floors for what it has, every wheel
installable on the target CPython/manylinux tags (checked from file names and METADATA only);
the image packages that break our stack (torchao below peft's minimum), removed by the cell."""
from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from fake_dists import plant
from packaging.requirements import Requirement
from packaging.tags import Tag

from lmsys_pref.cli import main as cli
from lmsys_pref.kaggle import image, wheel_check, wheels
from lmsys_pref.kaggle.image import KAGGLE_IMAGE

USER = "alice-k"


@pytest.fixture(scope="module")
def no_deps_set(tmp_path_factory) -> Path:
    """`make kaggle-wheels` offline: the lmsys_pref wheel for CPython 3.12 and 3.13."""
    out = tmp_path_factory.mktemp("wheels") / "wheels"
    assert cli(["kernels", "wheels", "--no-deps", "--out-dir", str(out), "--username", USER,
                "--python-version", "3.12,3.13"]) == 0
    return out


@pytest.fixture
def folder(no_deps_set, tmp_path) -> Path:
    """A copy of the offline set to break."""
    return Path(shutil.copytree(no_deps_set, tmp_path / "wheels"))


def test_no_deps_folder(no_deps_set):
    (wheel,) = no_deps_set.glob("lmsys_pref-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmsys_pref/cli.py" in names and "lmsys_pref/configs/presets/xgb.yaml" in names
    lines = (no_deps_set / "requirements.txt").read_text().splitlines()
    assert lines[0] == f"lmsys_pref=={wheel.name.split('-')[1]}"
    floors = [Requirement(line) for line in lines[1:]]
    assert {"numpy", "pandas", "xgboost"} <= {r.name for r in floors}
    assert not {"torch", "transformers"} & {r.name for r in floors}  # XGBoost needs no torch
    encoder = (no_deps_set / "requirements-encoder.txt").read_text()
    assert "torch>=2.8" in encoder and "transformers>=5.17" in encoder
    assert all(KAGGLE_IMAGE.has(r.name) and {s.operator for s in r.specifier} == {">="}
               for r in floors)
    manifest = json.loads((no_deps_set / "wheels.json").read_text())
    assert manifest["python_versions"] == ["3.12", "3.13"] and manifest["glibc"] == "2.35"
    assert set(manifest["sets"]) == {"base", "encoder", "lm"} and manifest["files"] == 1
    assert manifest["offline"] is True
    meta = json.loads((no_deps_set / "dataset-metadata.json").read_text())
    assert meta["id"] == f"{USER}/lmsys-pref-wheels" and meta["licenses"][0]["name"]
    assert wheel_check.check_wheel_set(no_deps_set) == []


def _direct(no_deps_set: Path) -> list[Requirement]:
    return wheel_check.wheel_requirements(next(no_deps_set.glob("lmsys_pref-*.whl")))


def test_plan_ships_only_what_the_image_lacks(no_deps_set):
    direct = _direct(no_deps_set)
    base = wheels.plan_wheels(direct, wheels.WHEEL_SETS["base"], "3.12")
    assert base.shipped == {}  # XGBoost/RoBERTa kernels: the image has every dependency
    lm = wheels.plan_wheels(direct, wheels.WHEEL_SETS["lm"], "3.12")
    # the image of KAGGLE_IMAGE has transformers 4.57, peft 0.17, accelerate 1.11: below the
    # floors the LM code was tested at, so they ship (with floors); bitsandbytes it lacks
    assert {"bitsandbytes", "transformers", "peft", "accelerate"} <= set(lm.shipped)
    assert lm.shipped["bitsandbytes"] == version("bitsandbytes")
    assert f"bitsandbytes=={version('bitsandbytes')}" in lm.lines
    assert "transformers>=5.17" in lm.lines and "peft>=0.21" in lm.lines
    assert not any(KAGGLE_IMAGE.has(Requirement(x).name) and "==" in x for x in lm.lines)
    assert not any(KAGGLE_IMAGE.never_ship(n) for n in lm.shipped)


def test_plan_ships_an_image_package_below_our_floor_with_a_floor(no_deps_set):
    old = dataclasses.replace(KAGGLE_IMAGE, packages={**KAGGLE_IMAGE.packages,
                                                      "transformers": "4.0.0"})
    plan = wheels.plan_wheels(_direct(no_deps_set), ("lm",), "3.12", old)
    assert plan.shipped["transformers"] == version("transformers")
    assert "transformers>=5.17" in plan.lines
    assert not any(KAGGLE_IMAGE.has(Requirement(x).name) and "==" in x for x in plan.lines)


@pytest.mark.parametrize("name, match", [("numpy", "before the first cell"),
                                         ("matplotlib", "before the first cell"),
                                         ("torch", "never from a wheel")])
def test_plan_never_replaces_torch_or_what_ipython_imported(no_deps_set, name, match):
    old = dataclasses.replace(KAGGLE_IMAGE, packages={**KAGGLE_IMAGE.packages, name: "0.1"})
    with pytest.raises(ValueError, match=match):
        wheels.plan_wheels(_direct(no_deps_set), ("lm",), "3.12", old)


def _touch(folder: Path, name: str) -> None:
    (folder / name).write_bytes(b"not opened: rejected by its file name")


def test_check_flags_wrong_tags_image_wheels_and_pins(folder):
    for name in ("torch-2.8.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                 "nvidia_nccl_cu12-2.27.3-py3-none-manylinux2014_x86_64.whl",
                 "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                 "bar-1.0-py3-none-win_amd64.whl",
                 "baz-1.0-cp312-cp312-manylinux_2_39_x86_64.whl"):
        _touch(folder, name)
    with open(folder / "requirements.txt", "a") as f:
        f.write("pandas==2.2.2\n")
    found = wheel_check.check_wheel_set(folder)
    problems = "\n".join(found)
    assert "torch-2.8.0-cp312-cp312-manylinux_2_28_x86_64.whl: torch comes from the" in problems
    assert "nvidia_nccl_cu12-2.27.3-py3-none-manylinux2014_x86_64.whl: nvidia-nccl" in problems
    untaggable = sorted(p.split(":")[0] for p in found
                        if "installs on none of CPython 3.12, 3.13" in p)
    assert untaggable == ["bar-1.0-py3-none-win_amd64.whl",
                          "baz-1.0-cp312-cp312-manylinux_2_39_x86_64.whl",
                          "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
    assert "requirements.txt: pandas==2.2.2 pins a package of the image" in problems
    assert "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl: needed by no wheel set" in problems


def _wheel(folder: Path, name: str, ver: str, requires: list[str], tag="py3-none-any") -> None:
    dist = f"{name}-{ver}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{ver}-{tag}.whl", "w") as zf:
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
            name, ver, "".join(f"Requires-Dist: {r}\n" for r in requires)))


def test_check_resolves_shipped_wheels_and_their_needs(folder):
    _wheel(folder, "fakepkg", "1.0", ["numpy>=1.17", "missingdep>=1", 'extraonly; extra == "x"'],
           tag="cp312-abi3-manylinux_2_17_x86_64")  # abi3: installs on 3.12 and 3.13
    with open(folder / "requirements-lm.txt", "a") as f:
        f.write("fakepkg==1.0\n")
    problems = wheel_check.check_wheel_set(folder)
    assert len(problems) == 2 and all("missingdep>=1 needed by fakepkg-1.0" in p for p in problems)
    assert {"Python 3.12" in problems[0], "Python 3.13" in problems[1]} == {True}
    _wheel(folder, "missingdep", "1.2", [])
    assert wheel_check.check_wheel_set(folder) == []  # numpy: the image's; extraonly: not asked
    assert "over the 0.01 MB goal" in wheel_check.check_wheel_set(folder, max_mb=0.01)[0]


def test_check_needs_the_manifest_and_the_pin(folder):
    (folder / "requirements.txt").write_text("numpy>=1.24\n")
    assert wheel_check.check_wheel_set(folder) == ["requirements.txt: must start with lmsys_pref=="]
    (folder / "wheels.json").unlink()
    assert "make kaggle-wheels" in wheel_check.check_wheel_set(folder)[0]


def test_supported_tags_are_the_targets():
    tags = wheel_check.supported_tags("3.12", "2.35")
    for good in ("cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_35_x86_64",
                 "cp39-abi3-manylinux2014_x86_64", "py3-none-manylinux_2_24_x86_64",
                 "py3-none-any"):
        assert Tag(*good.split("-")) in tags, good
    for bad in ("cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_36_x86_64",
                "cp312-cp312-win_amd64", "cp312-cp312-manylinux_2_17_aarch64",
                "cp312-cp312-linux_x86_64"):
        assert Tag(*bad.split("-")) not in tags, bad


def test_platform_tags():
    plats = wheel_check.platforms("2.28")
    assert plats[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in plats
    assert plats[-1] == "manylinux2014_x86_64" and len(plats) == 13
    with pytest.raises(ValueError, match="2.17"):
        wheel_check.platforms("2.5")


def test_python_versions_option():
    assert wheels.parse_python_versions(["3.12", "3.11,3.13", "3.12"]) == ("3.12", "3.11", "3.13")
    assert wheels.PYTHON_VERSIONS == (KAGGLE_IMAGE.python,) == ("3.12",)
    with pytest.raises(ValueError, match="major.minor"):
        wheels.parse_python_versions(["3"])


@pytest.mark.parametrize("installed, stale", [("0.10.0", True), ("0.16.0", False),
                                              ("0.17.0.dev20260901+cu128", False)])
def test_image_breakers_are_found_by_version(tmp_path, monkeypatch, installed, stale):
    """The image's torchao 0.10 breaks peft; 0.16.0 and later do not; absent is fine."""
    breakers = image.breakers_for(wheels.WHEEL_SETS["lm"])
    assert image.stale_packages(breakers) == []  # not installed here
    monkeypatch.syspath_prepend(str(plant(tmp_path, "torchao", installed)))
    found = image.stale_packages(breakers)
    assert found == ([("torchao", installed, "0.16.0", breakers["torchao"][1])] if stale else [])
    assert image.breakers_for(wheels.WHEEL_SETS["base"]) == {}  # XGBoost never imports peft


def test_the_torchao_floor_is_the_one_peft_checks():
    """IMAGE_BREAKERS' torchao minimum is read from the installed peft's own check."""
    import inspect
    import re

    from peft import import_utils

    source = inspect.getsource(import_utils.is_torchao_available)
    found = re.search(r'TORCHAO_MINIMUM_VERSION = packaging\.version\.parse\("([\d.]+)"\)', source)
    assert found, source
    torchao = {b.name: b for b in image.IMAGE_BREAKERS}["torchao"]
    assert torchao.least == found[1] and "peft/import_utils.py" in torchao.why


def test_the_install_cell_removes_breakers_of_its_wheel_set_only():
    from lmsys_pref.kaggle import install_cell, kernels

    target = kernels.Target()
    cells = {n: install_cell.install_cell(k, target, USER, kernels.model_slug(n, target))
             for n, k in kernels.KERNELS.items()}
    for name, cell in cells.items():
        removes = "'torchao': ['0.16.0'," in cell
        assert removes is (kernels.KERNELS[name].wheel_set != "base"), name
        assert cell.index('"uninstall", "-y"') < cell.index('"pip", "install"')
