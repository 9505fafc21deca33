"""Kaggle kernel folders, their metadata, the wheels dataset and `push` without credentials."""
from __future__ import annotations

import json
import os
import stat
import zipfile
from configparser import ConfigParser
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

from lmsys_pref import kaggle, notebooks, wheels
from lmsys_pref.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
USER = "alice-k"


def _available() -> list[str]:
    return [n for n, k in kaggle.KERNELS.items() if (notebooks.NOTEBOOK_DIR / k.notebook).exists()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """All kernels whose notebook exists, built by the CLI `make kernels` runs."""
    out = tmp_path_factory.mktemp("kernels")
    argv = ["kernels", "build", "--out-dir", str(out), "--username", USER]
    for name in _available():
        argv += ["--kernel", name]
    assert cli(argv) == 0
    return out


@pytest.mark.parametrize("name", sorted(kaggle.KERNELS))
def test_kernel_folder(built, name):
    spec = kaggle.KERNELS[name]
    if not (notebooks.NOTEBOOK_DIR / spec.notebook).exists():
        pytest.skip(f"notebooks/{spec.notebook} does not exist yet")
    folder = built / name
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    for key, typ in kaggle.REQUIRED.items():
        assert isinstance(meta[key], typ), key
    assert meta["id"] == f"{USER}/lmsys-pref-{name}"
    assert meta["title"].lower().replace(" ", "-") == meta["id"].split("/")[1]
    assert (meta["language"], meta["kernel_type"]) == ("python", "notebook")
    assert meta["is_private"] is True and meta["enable_internet"] is False
    assert meta["enable_gpu"] is spec.gpu is (name.split("-")[0] != "xgb")
    assert meta["competition_sources"] == ["lmsys-chatbot-arena"]
    assert f"{USER}/lmsys-pref-wheels" in meta["dataset_sources"]
    if name.endswith("-infer"):
        assert f"{USER}/lmsys-pref-{name.split('-')[0]}-model" in meta["dataset_sources"]
    assert all(len(m.split("/")) == 5 for m in meta["model_sources"])
    kaggle.validate_metadata(meta, folder)

    nb = nbformat.read(str(folder / meta["code_file"]), as_version=4)
    nbformat.validate(nb)
    install = nb.cells[0].source
    assert "--no-index" in install and "--find-links /kaggle/input/lmsys-pref-wheels" in install
    injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert 'data_dir = "/kaggle/input/lmsys-chatbot-arena"' in injected[0]
    assert 'out_dir = "/kaggle/working"' in injected[0]
    assert 'tta = "swap"' in injected[0]
    assert ('devices = "cuda:0,cuda:1"' in injected[0]) is spec.gpu
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_metadata_rejects_bad_values():
    good = kaggle.kernel_metadata("gemma-infer", USER)
    assert good["machine_shape"] == "NvidiaTeslaT4" and good["model_sources"]
    kaggle.validate_metadata(good)
    for key, value, msg in [("enable_internet", True, "enable_internet"),
                            ("is_private", "true", "is_private"),
                            ("competition_sources", [], "competition_sources"),
                            ("title", "Other Title", "slug of the title"),
                            ("dataset_sources", ["x/y"], "dataset_sources")]:
        with pytest.raises(ValueError, match=msg):
            kaggle.validate_metadata({**good, key: value})
    with pytest.raises(ValueError, match="'code_file'"):
        kaggle.validate_metadata({k: v for k, v in good.items() if k != "code_file"})


def test_username_from_env_or_error(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    assert kaggle.check_username(None) == "bob"
    assert kaggle.check_username("carol_1") == "carol_1"
    monkeypatch.delenv("KAGGLE_USERNAME")
    with pytest.raises(ValueError, match="KAGGLE_USERNAME"):
        kaggle.check_username(None)
    with pytest.raises(ValueError, match="not valid"):
        kaggle.check_username("a/b")


def test_parameter_missing_from_notebook_is_an_error(monkeypatch):
    spec = kaggle.KERNELS["xgb-infer"]
    monkeypatch.setitem(kaggle.KERNELS, "xgb-infer",
                        kaggle.Kernel(spec.notebook, spec.summary, {"no_such_field": 1}))
    with pytest.raises(ValueError, match="no_such_field"):
        kaggle.kernel_parameters("xgb-infer", {"data_dir", "out_dir"})


def test_pinned_requirements_follow_setup_cfg():
    cfg = ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    declared = {Requirement(r).name.lower().replace("_", "-")
                for r in cfg["options"]["install_requires"].split("\n") if r.strip()}
    direct = wheels.pinned_requirements(transitive=False)
    expected = (declared | {"bitsandbytes"}) - {"torch", "ipykernel", "papermill", "nbformat"}
    assert set(direct) == expected
    full = wheels.pinned_requirements()
    assert set(direct) < set(full) and "tokenizers" in full and "torch" not in full
    from importlib.metadata import version
    assert full["transformers"] == version("transformers")


def test_wheels_no_deps(tmp_path):
    out = tmp_path / "wheels"
    argv = ["kernels", "wheels", "--no-deps", "--out-dir", str(out), "--username", USER]
    assert cli(argv) == 0
    (wheel,) = out.glob("lmsys_pref-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmsys_pref/cli.py" in names and "lmsys_pref/presets/xgb.yaml" in names
    assert (out / "requirements.txt").read_text().splitlines() == [
        f"lmsys_pref=={wheel.name.split('-')[1]}"]
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == f"{USER}/lmsys-pref-wheels" and meta["licenses"][0]["name"]


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    return tmp_path


def _fake_kaggle(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {log}\nexit 3\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_push_needs_cli_and_credentials(built, no_credentials, monkeypatch, capsys):
    argv = ["kernels", "push", "--kernel", "xgb-infer", "--out-dir", str(built)]
    monkeypatch.setenv("PATH", str(no_credentials / "empty"))
    assert cli(argv) == 2
    assert "kaggle CLI is not installed" in capsys.readouterr().out

    log = no_credentials / "args.txt"
    _fake_kaggle(no_credentials / "bin", log)
    monkeypatch.setenv("PATH", str(no_credentials / "bin") + os.pathsep + os.environ["PATH"])
    assert cli(argv) == 2
    assert "no Kaggle credentials" in capsys.readouterr().out
    assert not log.exists()

    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert cli(argv) == 3  # the CLI's own exit status comes back
    assert log.read_text().split() == ["kernels", "push", "-p", str(built / "xgb-infer")]


def test_push_refuses_unbuilt_or_placeholder(tmp_path, capsys):
    assert kaggle.push(tmp_path / "nothing") == 2
    assert "make kernels" in capsys.readouterr().out
    folder = kaggle.build_kernel("xgb-infer", tmp_path, kaggle.PLACEHOLDER_USER)
    assert kaggle.push(folder) == 2
    assert "KAGGLE_USERNAME=<you>" in capsys.readouterr().out
    folder = kaggle.build_kernel("xgb-infer", tmp_path, USER)
    assert kaggle.push(folder, "mallory") == 2
    assert f"built for {USER}, not mallory" in capsys.readouterr().out


def test_wheel_platform_tags():
    tags = wheels.platforms("2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert tags[-1] == "manylinux2014_x86_64" and len(tags) == 13
    with pytest.raises(ValueError, match="2.17"):
        wheels.platforms("2.5")
