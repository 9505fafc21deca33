"""Kaggle kernels built from the project's notebooks: `make kernels`.

Each kernel in `KERNELS` becomes a folder with its notebook and `kernel-metadata.json`. The
notebook is the project's own, with two changes:

- its parameters cell holds the kernel's Kaggle values as defaults (`/kaggle/input/...` paths,
  `devices`, `tta`, `dtype`), plus `wheels_dir`, so a papermill `-p` changes only what it names;
- right after it, an install cell checks the Python version against the wheels dataset's
  `wheels.json` and installs lmsys_pref offline (`pip --no-index`) with the kernel's wheel set.

Inference kernels come from `notebooks/predict.ipynb` (a model uploaded with `make push-model`);
training kernels from the baseline's notebook where training fits Kaggle's limits (XGBoost on CPU,
RoBERTa-base on 2xT4; the LoRA LLMs train elsewhere and are scored here).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import string
from pathlib import Path
from typing import Any

from .. import nbstrip, notebooks
from ..runs import save_json
from .wheel_check import requirements_file
from .wheels import DATASET as WHEELS
from .wheels import WHEEL_SETS

log = logging.getLogger("lmsys_pref.kaggle.kernels")

COMPETITION = "lmsys-chatbot-arena"
INPUT = "/kaggle/input"
WORKING = "/kaggle/working"
GPUS = "cuda:0,cuda:1"
MACHINE_SHAPE = "NvidiaTeslaT4"  # Kaggle's "GPU T4 x2"
PREFIX = "lmsys-pref"
PLACEHOLDER_USER = "your-kaggle-username"
METADATA = "kernel-metadata.json"
INSTALL_TAG = "kaggle-install"
REQUIRED = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
            "is_private": bool, "enable_gpu": bool, "enable_internet": bool,
            "dataset_sources": list, "competition_sources": list, "kernel_sources": list,
            "model_sources": list}


def model_dataset(baseline: str) -> str:
    """Slug of the dataset holding a trained run's model/ (`make push-model`)."""
    return f"{PREFIX}-{baseline}-model"


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One Kaggle kernel: its source notebook, its Kaggle parameters, and what it mounts."""

    notebook: str
    """File in notebooks/."""
    summary: str
    """One line for `--help` and the README."""
    params: dict = dataclasses.field(default_factory=dict)
    """Notebook parameters on Kaggle (data_dir and out_dir are added for every kernel)."""
    gpu: bool = False
    """Needs the 2xT4 GPUs (T4: fp16, no bf16, so GPU kernels set dtype fp16)."""
    datasets: tuple = ()
    """Dataset sources besides the wheels: a slug is the user's own, `owner/slug` anyone's."""
    models: tuple = ()
    """Kaggle Models handles (`owner/model/framework/variation/version`) of base weights."""
    base_model: str = ""
    """Where the base weights are mounted; injected as `model_id` when the notebook has it."""
    wheel_set: str = "base"
    """Which requirements of the wheels dataset it installs (`wheels.WHEEL_SETS`)."""


_GEMMA = "google/gemma-2/transformers/gemma-2-2b-it/2"
_LLAMA = "metaresearch/llama-3/transformers/8b-chat-hf/1"
_T4 = {"devices": GPUS, "dtype": "fp16"}


def _mounted(handle: str) -> str:
    """Mount path of a Kaggle Models handle (the owner is not part of it)."""
    return f"{INPUT}/{handle.split('/', 1)[1]}"


KERNELS: dict[str, Kernel] = {
    "xgb-train": Kernel("xgboost.ipynb", "XGBoost: trained and scored in the kernel (CPU)",
                        {"preset": "xgb", "tta": "swap", "n_jobs": 0}),
    "xgb-infer": Kernel("predict.ipynb", "score test.csv with an uploaded XGBoost run (CPU)",
                        {"model_dir": f"{INPUT}/{model_dataset('xgb')}", "tta": "swap"},
                        datasets=(model_dataset("xgb"),)),
    "roberta-train": Kernel("roberta.ipynb", "RoBERTa-base MSE, k-fold, trained in the kernel",
                            {"preset": "roberta-base", **_T4, "tta": "swap",
                             "model_id": f"{INPUT}/roberta-base"},
                            gpu=True, datasets=("roberta-base",), wheel_set="encoder"),
    "roberta-infer": Kernel("predict.ipynb", "score test.csv with an uploaded RoBERTa run",
                            {"model_dir": f"{INPUT}/{model_dataset('roberta')}", **_T4,
                             "tta": "swap"}, gpu=True, datasets=(model_dataset("roberta"),),
                            wheel_set="encoder"),
    "gemma-infer": Kernel("predict.ipynb", "Gemma-2 LoRA adapter + head on 2xT4, swap TTA",
                          {"model_dir": f"{INPUT}/{model_dataset('gemma')}", **_T4,
                           "tta": "swap"}, gpu=True, datasets=(model_dataset("gemma"),),
                          models=(_GEMMA,), base_model=_mounted(_GEMMA), wheel_set="lm"),
    "llama-infer": Kernel("predict.ipynb", "Llama-3 LoRA adapter (8-bit) + head on 2xT4, swap TTA",
                          {"model_dir": f"{INPUT}/{model_dataset('llama')}", **_T4,
                           "tta": "swap"}, gpu=True, datasets=(model_dataset("llama"),),
                          models=(_LLAMA,), base_model=_mounted(_LLAMA), wheel_set="lm"),
}

INSTALL_CELL = string.Template('''\
# Kaggle runs offline: install lmsys_pref from the wheels dataset $dataset
# (`make kaggle-wheels`, `make push-wheels`). It pins lmsys_pref and what the image lacks; the
# image's own packages (torch, numpy, pandas, ...) are kept, so nothing already imported changes.
import importlib as _importlib, json as _json, subprocess as _subprocess, sys as _sys
from pathlib import Path as _Path

_wheels = _Path(wheels_dir)
if not (_wheels / "wheels.json").exists():
    raise RuntimeError(f"{_wheels}/wheels.json not found: add the dataset $dataset as an input "
                       "(upload it with `make push-wheels`)")
_built_for = _json.loads((_wheels / "wheels.json").read_text())["python_versions"]
_running = "%d.%d" % _sys.version_info[:2]
if _running not in _built_for:
    raise RuntimeError(f"this kernel runs Python {_running} but the wheels in {_wheels} are for "
                       f"Python {', '.join(_built_for)}: rebuild them with `make kaggle-wheels "
                       f"PYTHON_VERSION={_running}` and upload them with `make push-wheels`")
_pip = _subprocess.run([_sys.executable, "-m", "pip", "install", "-q", "--no-index",
                        "--find-links", str(_wheels), "-r", str(_wheels / "$requirements")],
                       capture_output=True, text=True)
if _pip.returncode:
    raise RuntimeError(f"pip could not install lmsys_pref from {_wheels}:\\n{_pip.stderr[-3000:]}")
_importlib.invalidate_caches()''')

_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_]\w*)\s*=\s*[^#]*?(?P<comment>\s*#.*)?$")


def check_username(username: str | None) -> str:
    """The Kaggle username from the option or $KAGGLE_USERNAME; a clear error when unusable."""
    username = username or os.environ.get("KAGGLE_USERNAME") or ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", username):
        raise ValueError(f"Kaggle username {username!r} is not valid: pass --username "
                         "(make ... KAGGLE_USERNAME=<you>) or set $KAGGLE_USERNAME")
    return username


def slug(name: str) -> str:
    """Kernel slug; the title is the same words with spaces, so Kaggle derives the same slug."""
    return f"{PREFIX}-{name}"


def kernel_metadata(name: str, username: str, private: bool = True) -> dict[str, Any]:
    """The kernel-metadata.json of kernel `name` for `username`."""
    spec = KERNELS[name]
    own = [d if "/" in d else f"{username}/{d}" for d in (WHEELS, *spec.datasets)]
    meta = {"id": f"{username}/{slug(name)}", "title": slug(name).replace("-", " "),
            "code_file": f"{slug(name)}.ipynb", "language": "python", "kernel_type": "notebook",
            "is_private": private, "enable_gpu": spec.gpu, "enable_tpu": False,
            "enable_internet": False, "dataset_sources": own,
            "competition_sources": [COMPETITION], "kernel_sources": [],
            "model_sources": list(spec.models)}
    if spec.gpu:
        meta["machine_shape"] = MACHINE_SHAPE
    return meta


def validate_metadata(meta: dict[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """Check a kernel-metadata.json mapping (and, with `folder`, that its code file is there).

    Raises:
        ValueError: naming the key that is missing or wrong.
    """
    where = f"{folder}/{METADATA}" if folder else METADATA
    for key, typ in REQUIRED.items():
        if not isinstance(meta.get(key), typ):
            raise ValueError(f"{where}: {key!r} must be a {typ.__name__}, got {meta.get(key)!r}")
    owner, _, kernel_slug = meta["id"].partition("/")
    if not owner or not kernel_slug or meta["title"].lower().replace(" ", "-") != kernel_slug:
        raise ValueError(f"{where}: id {meta['id']!r} must be <username>/<slug of the title>")
    checks = {"language": meta["language"] == "python",
              "kernel_type": meta["kernel_type"] == "notebook",
              "enable_internet": meta["enable_internet"] is False,
              "competition_sources": COMPETITION in meta["competition_sources"],
              "dataset_sources": f"{owner}/{WHEELS}" in meta["dataset_sources"]}
    for key, ok in checks.items():
        if not ok:
            raise ValueError(f"{where}: bad {key!r}: {meta[key]!r}")
    if folder is not None and not (Path(folder) / meta["code_file"]).exists():
        raise ValueError(f"{where}: code_file {meta['code_file']} is missing")
    return meta


def kernel_parameters(name: str, notebook_params: set[str]) -> dict[str, Any]:
    """The Kaggle parameters of kernel `name`, checked against its notebook's parameters."""
    spec = KERNELS[name]
    params = {"data_dir": f"{INPUT}/{COMPETITION}", "out_dir": WORKING, **spec.params}
    if spec.base_model and "model_id" in notebook_params:
        params["model_id"] = spec.base_model
    elif spec.base_model:
        log.warning("%s: %s has no model_id parameter; the base weights are read from the path "
                    "saved with the model", name, spec.notebook)
    unknown = sorted(set(params) - notebook_params)
    if unknown:
        raise ValueError(f"kernel {name}: notebooks/{spec.notebook} has no parameter(s) "
                         f"{unknown}; its parameters: {sorted(notebook_params)}")
    return params


def kaggle_parameters_cell(source: str, params: dict[str, Any], name: str) -> str:
    """The notebook's parameters cell with the Kaggle values as its defaults, plus wheels_dir."""
    from papermill.translators import PythonTranslator

    lines, done = [f"# Kaggle defaults of kernel {name}: `papermill -p` changes only what it "
                   "names."], set()
    for line in source.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match["name"] in params:
            value = PythonTranslator.translate(params[match["name"]])
            line = f"{match['name']} = {value}{match['comment'] or ''}"
            done.add(match["name"])
        lines.append(line)
    if set(params) - done:
        raise ValueError(f"kernel {name}: no assignment of {sorted(set(params) - done)} in the "
                         "notebook's parameters cell")
    lines.append(f'wheels_dir = "{INPUT}/{WHEELS}"  # the wheels dataset (Kaggle kernels only)')
    return "\n".join(lines)


def build_kernel(name: str, out_dir: str | Path, username: str, private: bool = True) -> Path:
    """Write out_dir/<name>/ (kernel notebook + kernel-metadata.json); returns the folder."""
    import nbformat
    import papermill as pm

    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known: {sorted(KERNELS)}")
    spec = KERNELS[name]
    src = notebooks.NOTEBOOK_DIR / spec.notebook
    if not src.exists():
        raise FileNotFoundError(f"{src}: notebook of kernel {name} is missing")
    if spec.wheel_set not in WHEEL_SETS:
        raise ValueError(f"kernel {name}: wheel set {spec.wheel_set!r} not in {sorted(WHEEL_SETS)}")
    params = kernel_parameters(name, set(pm.inspect_notebook(str(src))))
    nb = nbformat.read(str(src), as_version=4)
    where = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(where) != 1:
        raise ValueError(f"{src}: needs exactly one cell tagged 'parameters', found {len(where)}")
    nb.cells[where[0]].source = kaggle_parameters_cell(nb.cells[where[0]].source, params, name)
    install = nbformat.v4.new_code_cell(INSTALL_CELL.substitute(
        dataset=f"{username}/{WHEELS}", requirements=requirements_file(spec.wheel_set)))
    install.metadata["tags"] = [INSTALL_TAG]
    nb.cells.insert(where[0] + 1, install)
    meta = kernel_metadata(name, username, private)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbstrip.strip(nb), str(folder / meta["code_file"]))
    save_json(folder / METADATA, validate_metadata(meta))
    return folder


def build_kernels(out_dir: str | Path, username: str, names: list[str] | None = None,
                  private: bool = True) -> list[Path]:
    """Build every kernel (or `names`) under `out_dir`."""
    username = check_username(username)
    return [build_kernel(n, out_dir, username, private) for n in (names or list(KERNELS))]
