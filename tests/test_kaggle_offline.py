"""Kaggle offline, played here as Kaggle runs it: the built kernels execute with papermill and NO
input parameters, under a real `/kaggle` (a temporary folder bound there in a private mount
namespace, `unshare -m`, so the machine's own `/` is untouched) in a network namespace without
internet, and must find their inputs, install lmsys_pref from the wheels and write a valid
`/kaggle/working/submission.csv`.

Today's layout: competition data in /kaggle/input/competitions/<slug>, datasets in
/kaggle/input/datasets/<user>/<slug>; the old flat one: /kaggle/input/<slug>. `/kaggle/input` is
mounted read-only. The stand-in image is a throwaway venv whose site-packages adds this venv's
packages minus lmsys_pref (a folder of symlinks), so lmsys_pref really comes from the wheel and
pip writes only into the throwaway venv; IPython's startup imports numpy and matplotlib before
the first cell, as Kaggle's image does, and the image holds a stale torchao 0.10 (as Kaggle's did
in 2026-09), which the install cell of a kernel importing peft must remove. Where /kaggle does
not exist, an empty mount point is made for the run and removed afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
from fake_dists import plant

import lmsys_pref
from lmsys_pref.kaggle import kernels, wheels
from lmsys_pref.runs import submission

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
USER = "alice-k"
KERNEL = "kaggle-standin"
LIVE = "llm-classification-finetuning"
OLD = "lmsys-chatbot-arena"  # the 2024 competition, closed: kernels still build for it
WSDM = "wsdm-cup-multilingual-chatbot-arena"  # its own format: parquet, id + winner, 12 h
WSDM_SAMPLE = ROOT / "data" / "sample-wsdm"
STALE_TORCHAO = "0.10.0"  # what Kaggle's image held in 2026-09; peft needs >= 0.16.0
PYTHON = "%d.%d" % sys.version_info[:2]
CPU = {"devices": "cpu", "dtype": "fp32"}  # hardware only: the GPU kernels' T4 values
# Size only, for the default suite (the preset's 5 folds x 600 trees take a minute on 2 busy
# cores); test_xgb_train_own_defaults runs the kernel with nothing passed at all.
FAST_XGB = {"n_folds": 2, "n_estimators": 15, "early_stopping_rounds": 5}
TINY_TRAIN = {"max_train_rows": 32, "max_steps": 2, "max_length": 64, "batch_size": 4,
              "grad_accum": 1, "torch_threads": 1, **CPU}
RUNNER = """import json, sys
import papermill as pm
try:
    pm.execute_notebook(sys.argv[1], sys.argv[2], kernel_name=sys.argv[3], progress_bar=False,
                        cwd="/kaggle/working", parameters=json.loads(sys.argv[4]))
except pm.PapermillExecutionError as err:
    sys.exit(f"KERNEL STOPPED {err.ename}: {err.evalue}")
"""
NAMESPACE = """set -e
ip link set lo up
mount --bind "$1" /kaggle
mount --bind /kaggle/input /kaggle/input
mount -o remount,bind,ro /kaggle/input
shift
exec "$@"
"""


@pytest.fixture(scope="module")
def kaggle_mount():
    """/kaggle as a mount point (made here, removed afterwards, when absent); skips where a
    private mount + network namespace is not allowed."""
    if sys.platform != "linux" or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs Linux with unshare(1) and ip(8) for a private /kaggle without internet")
    probe = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"unshare -m -n is not allowed here: {probe.stderr.strip()}")
    made = not Path("/kaggle").exists()
    try:
        Path("/kaggle").mkdir(exist_ok=True)
    except OSError as err:
        pytest.skip(f"no /kaggle mount point can be made: {err}")
    yield Path("/kaggle")
    if made:
        Path("/kaggle").rmdir()


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """Built kernels (default competition and the live one), the wheels, the competition data."""
    tmp = tmp_path_factory.mktemp("offline")
    built = {slug: tmp / slug for slug in (OLD, LIVE)}
    for slug, folder in built.items():
        kernels.build_kernels(folder, USER, target=kernels.Target(slug))
    wheel_dir = wheels.build_wheels(tmp / "wheels", USER, python_versions=(PYTHON,), no_deps=True)
    data = tmp / "competition"
    data.mkdir()
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(SAMPLE / name, data / name)
    return built, wheel_dir, data


def today(slug: str, data: Path, wheel_dir: Path, **datasets: Path) -> dict[str, Path]:
    """Today's layout: /kaggle/input path -> the folder mounted there."""
    return {f"competitions/{slug}": data, f"datasets/{USER}/{wheels.DATASET}": wheel_dir,
            **{f"datasets/{USER}/{name}": src for name, src in datasets.items()}}


def _image(tmp: Path) -> Path:
    """A fresh stand-in image: a venv seeing this venv's packages minus lmsys_pref, with its
    Jupyter kernel spec; IPython's startup imports numpy and matplotlib, as on Kaggle."""
    site, farm = Path(sysconfig.get_paths()["purelib"]), tmp / "image-site"
    farm.mkdir(parents=True)
    for entry in site.iterdir():
        if "lmsys_pref" not in entry.name and entry.name != "__pycache__":
            (farm / entry.name).symlink_to(entry)
    env = tmp / "image-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    venv_site = Path(next(env.glob("lib/python*/site-packages")))
    (venv_site / "kaggle_image.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    plant(venv_site, "torchao", STALE_TORCHAO)
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


def stale_torchao_here(env: Path) -> bool:
    """Whether the stand-in image `env` still holds its stale torchao."""
    return any(env.glob(f"lib/python*/site-packages/torchao-{STALE_TORCHAO}.dist-info"))


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
            for p in folder.rglob("*")}


def run_kernel(name: str, built: Path, tmp: Path, inputs: dict[str, Path],
               sizes: dict | None = None, typed: dict | None = None
               ) -> subprocess.CompletedProcess:
    """Execute built kernel `name` on a fresh stand-in image with `inputs` under /kaggle/input;
    only hardware or size settings (`sizes`, never a path) are passed as parameters, plus what
    a user types into the parameter cell that no search can know (`typed`: a cascade's later
    models, named by their /kaggle/input paths)."""
    assert not any("/" in str(v) or k.endswith(("_dir", "_id")) for k, v in (sizes or {}).items())
    assert all(str(v).startswith("/kaggle/input/") for v in (typed or {}).values())
    sizes = {**(sizes or {}), **(typed or {})}
    root = tmp / "kaggle"
    for where, src in inputs.items():
        shutil.copytree(src, root / "input" / where)
    (root / "working").mkdir(parents=True)
    before, env = _snapshot(root / "input"), _image(tmp)
    notebook = built / name / kernels.kernel_metadata(name, USER)["code_file"]
    done = subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", NAMESPACE, "sh", str(root), sys.executable, "-c",
         RUNNER, str(notebook), str(tmp / "executed.ipynb"), KERNEL, json.dumps(sizes or {})],
        capture_output=True, text=True, env={**os.environ, "JUPYTER_PATH": str(tmp / "jupyter")})
    assert _snapshot(root / "input") == before, "the kernel wrote into /kaggle/input"
    done.working, done.image, done.executed = root / "working", env, tmp / "executed.ipynb"
    return done


def printed(done: subprocess.CompletedProcess) -> str:
    """What the executed kernel's cells printed."""
    import nbformat

    nb = nbformat.read(str(done.executed), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


def installed_here(env: Path) -> bool:
    """Whether lmsys_pref was installed into the stand-in image `env`."""
    return any(env.glob("lib/python*/site-packages/lmsys_pref-*.dist-info"))


def assert_submission(done: subprocess.CompletedProcess, data: Path) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    test_ids = pd.read_csv(data / "test.csv")["id"].tolist()
    sub = submission.read(done.working / "submission.csv", test_ids)  # exact ids, in order
    assert len(sub) == len(test_ids) == 50
    assert installed_here(done.image)  # lmsys_pref came from the wheel, not from .venv


@pytest.fixture(scope="module")
def xgb_trained(offline, kaggle_mount, tmp_path_factory):
    """xgb-train for the live competition, today's layout (fewer folds and trees)."""
    built, wheel_dir, data = offline
    tmp = tmp_path_factory.mktemp("xgb-train")
    return run_kernel("xgb-train", built[LIVE], tmp, today(LIVE, data, wheel_dir), FAST_XGB)


def test_xgb_train_today_layout(xgb_trained, offline):
    assert_submission(xgb_trained, offline[2])
    assert f"data_dir = '/kaggle/input/competitions/{LIVE}'" in printed(xgb_trained)
    assert stale_torchao_here(xgb_trained.image)  # XGBoost never imports peft: left alone
    assert "torchao" not in printed(xgb_trained)
    assert (Path(sysconfig.get_paths()["purelib"])
            / f"lmsys_pref-{lmsys_pref.__version__}.dist-info").exists()  # .venv untouched


def test_xgb_infer_today_layout(xgb_trained, offline, tmp_path):
    """The user uploads xgb-train's model/ (make push-model) and scores it with xgb-infer."""
    built, wheel_dir, data = offline
    model = xgb_trained.working / "model"
    done = run_kernel("xgb-infer", built[LIVE], tmp_path,
                      today(LIVE, data, wheel_dir, **{kernels.model_dataset("xgb"): model}))
    assert_submission(done, data)


def test_xgb_infer_old_flat_layout(xgb_trained, offline, tmp_path):
    built, wheel_dir, data = offline
    inputs = {OLD: data, wheels.DATASET: wheel_dir,
              kernels.model_dataset("xgb"): xgb_trained.working / "model"}
    done = run_kernel("xgb-infer", built[OLD], tmp_path, inputs)
    assert_submission(done, data)
    assert "model_dir = '/kaggle/input/lmsys-pref-xgb-model'" in printed(done)


def test_wrong_inputs_stop_before_installing(offline, kaggle_mount, tmp_path):
    """No model dataset attached: one message naming it and what /kaggle/input holds."""
    built, wheel_dir, data = offline
    done = run_kernel("xgb-infer", built[LIVE], tmp_path, today(LIVE, data, wheel_dir))
    assert done.returncode != 0 and "KERNEL STOPPED RuntimeError" in done.stderr
    message = done.stderr[done.stderr.index("KERNEL STOPPED"):]
    assert f"attach the dataset {USER}/lmsys-pref-xgb-model (make push-model)" in message
    assert f"competitions/{LIVE}" in message and f"datasets/{USER}/lmsys-pref-wheels" in message
    assert not installed_here(done.image) and not (done.working / "submission.csv").exists()


AFTER_INSTALL = """import importlib.util
import peft
import lmsys_pref
print("torchao importable:", importlib.util.find_spec("torchao") is not None)
"""


def test_lm_kernel_removes_the_images_stale_torchao(offline, kaggle_mount, tmp_path):
    """gemma-infer's install cell, then peft and lmsys_pref imported: the image's torchao 0.10
    (which peft >= 0.21 rejects) is uninstalled offline, saying so in one line."""
    import nbformat

    from lmsys_pref import runs

    built, wheel_dir, data = offline
    code = kernels.kernel_metadata("gemma-infer", USER)["code_file"]
    nb = nbformat.read(str(built[LIVE] / "gemma-infer" / code), as_version=4)
    at = [c.metadata.get("tags", []) for c in nb.cells].index([kernels.INSTALL_TAG])
    nb.cells = nb.cells[:at + 1] + [nbformat.v4.new_code_cell(AFTER_INSTALL)]
    (tmp_path / "cut" / "gemma-infer").mkdir(parents=True)
    nbformat.write(nb, str(tmp_path / "cut" / "gemma-infer" / code))
    model = tmp_path / "tiny-model"  # a random tiny base: no Kaggle Model to attach
    runs.write_model_meta(model, "lm", {"model_id": "pypi:x", "lora_r": 4,
                                        "random_init": {"model_type": "gemma2"}})
    done = run_kernel("gemma-infer", tmp_path / "cut", tmp_path / "kernel",
                      today(LIVE, data, wheel_dir, **{kernels.model_dataset("gemma"): model}))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = printed(done).splitlines()
    removed = [x for x in lines if "torchao" in x and "removed" in x]
    assert removed == [f"removed the image's torchao {STALE_TORCHAO} (pip uninstall -y, "
                       "offline): peft (>= 0.21) rejects torchao below 0.16.0 "
                       "(peft/import_utils.py, is_torchao_available)"]
    assert "torchao importable: False" in lines
    assert not stale_torchao_here(done.image) and installed_here(done.image)


@pytest.mark.slow
def test_xgb_train_own_defaults(offline, kaggle_mount, tmp_path):
    """Exactly as Kaggle runs it: nothing passed, the preset's folds and trees."""
    built, wheel_dir, data = offline
    done = run_kernel("xgb-train", built[OLD], tmp_path, today(OLD, data, wheel_dir))
    assert_submission(done, data)


@pytest.mark.slow
def test_gemma_infer_today_layout(offline, kaggle_mount, tmp_path):
    """gemma-infer on a tiny 2-fold LoRA run trained elsewhere (here, on CPU) and merged into
    one model by `lmsys-pref merge-folds`, as the 1st place scored five folds in 9 hours."""
    from lmsys_pref.cli import main as cli
    from lmsys_pref.commands import notebooks

    built, wheel_dir, data = offline
    run, model = tmp_path / "run", tmp_path / "merged"
    notebooks.run_notebook("gemma", run, data, "tiny-gemma2", {**TINY_TRAIN, "n_folds": 2},
                           progress=False)
    assert cli(["merge-folds", str(run), str(model)]) == 0
    dataset = kernels.model_dataset("gemma")  # push-model's name for a base outside the table
    done = run_kernel("gemma-infer", built[LIVE], tmp_path / "kernel",
                      today(LIVE, data, wheel_dir, **{dataset: model}), CPU)
    assert_submission(done, data)
    found = printed(done)
    assert f"model_dir = '/kaggle/input/datasets/{USER}/{dataset}'" in found
    assert "model_id = None" in found  # a random-init tiny base: no Kaggle Model needed


def test_gemma_infer_scores_an_ab_tokens_judge_with_a_cascade(offline, kaggle_mount, tmp_path):
    """gemma-infer on a merged 2-fold A/B-token judge (found by content), with a classifier run
    as the cascade's second stage on the least certain half (its path typed by the user)."""
    from lmsys_pref.cli import main as cli
    from lmsys_pref.commands import notebooks

    built, wheel_dir, data = offline
    judge_run, judge, second = tmp_path / "judge_run", tmp_path / "judge", tmp_path / "second"
    notebooks.run_notebook("gemma", judge_run, data, "tiny-gemma2",
                           {**TINY_TRAIN, "n_folds": 2, "head": "ab_tokens"}, progress=False)
    assert cli(["merge-folds", str(judge_run), str(judge)]) == 0
    notebooks.run_notebook("gemma", second, data, "tiny-gemma2", TINY_TRAIN, progress=False)
    dataset = kernels.model_dataset("gemma")
    stage = f"/kaggle/input/datasets/{USER}/second-stage/model:0.5"
    done = run_kernel("gemma-infer", built[LIVE], tmp_path / "kernel",
                      today(LIVE, data, wheel_dir, **{dataset: judge, "second-stage": second}),
                      CPU, typed={"cascade": stage})
    assert_submission(done, data)
    found = printed(done)
    assert f"model_dir = '/kaggle/input/datasets/{USER}/{dataset}'" in found
    meta = json.loads((done.working / "predict.json").read_text())
    assert meta["cascade"][1]["rows"] == 25, meta["cascade"]  # half of the 50


@pytest.fixture(scope="module")
def wsdm_built(offline, tmp_path_factory):
    """The kernels built for the WSDM Cup 2025 (the wheels are the default fixture's)."""
    folder = tmp_path_factory.mktemp("wsdm") / WSDM
    kernels.build_kernels(folder, USER, target=kernels.Target(WSDM))
    return folder


def test_wsdm_kernels_find_the_parquet_inputs_and_write_id_winner(wsdm_built, offline,
                                                                  kaggle_mount, tmp_path):
    """xgb-train and xgb-infer built for the WSDM Cup, its data as Kaggle mounts it today:
    the parquet folder is found, the run takes the task from it, the submission is id,winner
    with every test id (integers there) verbatim and in order."""
    _, wheel_dir, _ = offline
    test_ids = pd.read_parquet(WSDM_SAMPLE / "test.parquet")["id"].astype(str).tolist()
    trained = run_kernel("xgb-train", wsdm_built, tmp_path / "train",
                         today(WSDM, WSDM_SAMPLE, wheel_dir), FAST_XGB)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"data_dir = '/kaggle/input/competitions/{WSDM}'" in printed(trained)
    for done in (trained, run_kernel("xgb-infer", wsdm_built, tmp_path / "infer", today(
            WSDM, WSDM_SAMPLE, wheel_dir, **{kernels.model_dataset("xgb"): trained.working
                                            / "model"}))):
        assert done.returncode == 0, done.stderr[-3000:]
        sub = submission.read(done.working / "submission.csv", test_ids)
        assert list(sub.columns) == ["id", "winner"] and set(sub["winner"]) <= {"model_a",
                                                                                "model_b"}

