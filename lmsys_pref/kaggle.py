"""Kaggle kernels from the project's notebooks, the offline wheels dataset, and pushing.

    python -m lmsys_pref kernels build  --out-dir kaggle_kernels/build --username ME
    python -m lmsys_pref kernels wheels --out-dir kaggle_kernels/build/wheels --username ME
    python -m lmsys_pref kernels push   --kernel gemma-infer --out-dir kaggle_kernels/build

`build` writes one folder per kernel in `KERNELS`: the notebook prepared by papermill
(`prepare_only`: Kaggle parameters injected, nothing executed) behind a first cell that installs
lmsys_pref from the wheels dataset, plus `kernel-metadata.json`. Inference kernels come from
`notebooks/predict.ipynb` (a model uploaded as a dataset); training kernels from the baseline's
own notebook where training fits Kaggle's limits (XGBoost on CPU, RoBERTa-base on 2xT4; the LoRA
LLMs train elsewhere and are scored here).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from . import nbstrip, notebooks
from .runs import save_json

log = logging.getLogger("lmsys_pref.kaggle")

COMPETITION = "lmsys-chatbot-arena"
INPUT = "/kaggle/input"
WORKING = "/kaggle/working"
GPUS = "cuda:0,cuda:1"
MACHINE_SHAPE = "NvidiaTeslaT4"  # Kaggle's "GPU T4 x2"
PREFIX = "lmsys-pref"
WHEELS = f"{PREFIX}-wheels"
PLACEHOLDER_USER = "your-kaggle-username"
METADATA = "kernel-metadata.json"
REQUIRED = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
            "is_private": bool, "enable_gpu": bool, "enable_internet": bool,
            "dataset_sources": list, "competition_sources": list, "kernel_sources": list,
            "model_sources": list}


def model_dataset(baseline: str) -> str:
    """Slug of the dataset holding a trained run folder's model/ (uploaded by the user)."""
    return f"{PREFIX}-{baseline}-model"


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One Kaggle kernel: its source notebook, the parameters injected, and what it mounts."""

    notebook: str
    """File in notebooks/."""
    summary: str
    """One line for `--help` and the README."""
    params: dict = dataclasses.field(default_factory=dict)
    """Notebook parameters on Kaggle (data_dir and out_dir are added for every kernel)."""
    gpu: bool = False
    """Needs the 2xT4 GPUs."""
    datasets: tuple = ()
    """Dataset sources besides the wheels: a slug is the user's own, `owner/slug` anyone's."""
    models: tuple = ()
    """Kaggle Models handles (`owner/model/framework/variation/version`) of base weights."""
    base_model: str = ""
    """Where the base weights are mounted; injected as `model_id` when the notebook has it."""


_GEMMA = "google/gemma-2/transformers/gemma-2-2b-it/2"
_LLAMA = "metaresearch/llama-3/transformers/8b-chat-hf/1"


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
                            {"preset": "roberta-base", "devices": GPUS, "tta": "swap",
                             "model_id": f"{INPUT}/roberta-base"},
                            gpu=True, datasets=("roberta-base",)),
    "roberta-infer": Kernel("predict.ipynb", "score test.csv with an uploaded RoBERTa run",
                            {"model_dir": f"{INPUT}/{model_dataset('roberta')}", "devices": GPUS,
                             "tta": "swap"}, gpu=True, datasets=(model_dataset("roberta"),)),
    "gemma-infer": Kernel("predict.ipynb", "Gemma-2 LoRA adapter + head on 2xT4, swap TTA",
                          {"model_dir": f"{INPUT}/{model_dataset('gemma')}", "devices": GPUS,
                           "tta": "swap"}, gpu=True, datasets=(model_dataset("gemma"),),
                          models=(_GEMMA,), base_model=_mounted(_GEMMA)),
    "llama-infer": Kernel("predict.ipynb", "Llama-3 LoRA adapter + head on 2xT4, swap TTA",
                          {"model_dir": f"{INPUT}/{model_dataset('llama')}", "devices": GPUS,
                           "tta": "swap"}, gpu=True, datasets=(model_dataset("llama"),),
                          models=(_LLAMA,), base_model=_mounted(_LLAMA)),
}

INSTALL_CELL = """\
# Kaggle runs this offline: install lmsys_pref and its pinned dependencies from the wheels
# dataset (`make kaggle-wheels`, uploaded as {dataset}).
%pip install -q --no-index --find-links {path} -r {path}/requirements.txt"""


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


def build_kernel(name: str, out_dir: str | Path, username: str, private: bool = True) -> Path:
    """Write out_dir/<name>/ (prepared notebook + kernel-metadata.json); returns the folder."""
    import nbformat
    import papermill as pm

    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known: {sorted(KERNELS)}")
    src = notebooks.NOTEBOOK_DIR / KERNELS[name].notebook
    if not src.exists():
        raise FileNotFoundError(f"{src}: notebook of kernel {name} is missing")
    params = kernel_parameters(name, set(pm.inspect_notebook(str(src))))
    meta = kernel_metadata(name, username, private)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / meta["code_file"]
    pm.execute_notebook(str(src), str(dst), parameters=params, prepare_only=True,
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(str(dst), as_version=4)
    cell = nbformat.v4.new_code_cell(INSTALL_CELL.format(dataset=f"{username}/{WHEELS}",
                                                         path=f"{INPUT}/{WHEELS}"))
    cell.metadata["tags"] = ["kaggle-install"]
    nb.cells.insert(0, cell)
    nbformat.write(nbstrip.strip(nb), str(dst))  # drops papermill's local paths too
    save_json(folder / METADATA, validate_metadata(meta))
    return folder


def build_kernels(out_dir: str | Path, username: str, names: list[str] | None = None,
                  private: bool = True) -> list[Path]:
    """Build every kernel (or `names`) under `out_dir`."""
    username = check_username(username)
    logging.getLogger("papermill").setLevel(logging.WARNING)  # one line per kernel is enough
    return [build_kernel(n, out_dir, username, private) for n in (names or list(KERNELS))]


def credentials_found() -> bool:
    """Kaggle API credentials in the environment or in the kaggle config folder."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME")
                                              and os.environ.get("KAGGLE_KEY")):
        return True
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config / "kaggle.json").exists() or (config / "access_token").exists()


def push(folder: str | Path, username: str | None = None) -> int:
    """`kaggle kernels push -p <folder>`; returns its exit status (2 when it cannot start).

    `username` (optional) must own the built kernel; the placeholder user never pushes.
    """
    folder = Path(folder)
    if not (folder / METADATA).exists():
        print(f"error: {folder / METADATA} not found; build it first with `make kernels`")
        return 2
    meta = validate_metadata(json.loads((folder / METADATA).read_text()), folder)
    if meta["id"].startswith(f"{PLACEHOLDER_USER}/"):
        print(f"error: {folder} was built for the placeholder user; rebuild with "
              "`make kernels KAGGLE_USERNAME=<you>`")
        return 2
    owner = meta["id"].split("/")[0]
    if username and username not in (owner, PLACEHOLDER_USER):
        print(f"error: {folder} was built for {owner}, not {username}; rebuild with "
              f"`make kernels KAGGLE_USERNAME={username}`")
        return 2
    exe = shutil.which("kaggle")
    if exe is None:
        print("error: the kaggle CLI is not installed: `.venv/bin/pip install kaggle`")
        return 2
    if not credentials_found():
        print("error: no Kaggle credentials: put your API token in ~/.kaggle/kaggle.json "
              "(kaggle.com > Settings > API > Create New Token) or set KAGGLE_USERNAME and "
              "KAGGLE_KEY")
        return 2
    return subprocess.run([exe, "kernels", "push", "-p", str(folder)]).returncode


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref kernels build|wheels|push ...`."""
    from . import wheels

    ap = argparse.ArgumentParser(prog="lmsys_pref kernels", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="kernel folders with kernel-metadata.json")
    b.add_argument("--kernel", action="append", choices=sorted(KERNELS),
                   help="only this kernel (repeatable; default all)")
    b.add_argument("--public", action="store_true", help="is_private false")
    w = sub.add_parser("wheels", help="the offline wheels dataset folder")
    w.add_argument("--no-deps", action="store_true", help="only the lmsys_pref wheel")
    w.add_argument("--packages", nargs="+", help="only these dependencies")
    w.add_argument("--python-version", default=wheels.PYTHON_VERSION)
    w.add_argument("--glibc", default=wheels.GLIBC, help="oldest glibc of the target system")
    p = sub.add_parser("push", help="kaggle kernels push -p <out-dir>/<kernel>")
    p.add_argument("--kernel", required=True, choices=sorted(KERNELS))
    for parser in (b, w, p):
        parser.add_argument("--out-dir", required=True)
        parser.add_argument("--username", default=None, help="Kaggle user (or $KAGGLE_USERNAME)")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        for folder in build_kernels(args.out_dir, args.username, args.kernel, not args.public):
            print(f"built {folder}")
    elif args.cmd == "wheels":
        out = wheels.build_wheels(args.out_dir, check_username(args.username), WHEELS,
                                  no_deps=args.no_deps, packages=args.packages,
                                  python_version=args.python_version, glibc=args.glibc)
        print(f"wheels dataset: {out} (upload: kaggle datasets create -p {out})")
    else:
        return push(Path(args.out_dir) / args.kernel, args.username)
    return 0
