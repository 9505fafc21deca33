"""Kaggle kernels built from the project's notebooks: `make kernels`.

Each kernel in `KERNELS` becomes a folder with its notebook and `kernel-metadata.json`. The
notebook is the project's own, with two changes:

- its parameters cell holds the kernel's Kaggle values as defaults (`out_dir`, `devices`, `tta`,
  `dtype`), plus `wheels_dir`; the inputs (`data_dir`, `wheels_dir`, `model_dir`, `model_id`)
  stay None there, so a papermill `-p` or an edited line changes only what it names;
- right after it, an install cell finds each input left None under `/kaggle/input` by what it
  holds, in today's layout or the old flat one (`layout.py`, inlined: lmsys_pref is not
  installed yet), stops before installing anything when one is missing, then checks the Python
  version against the wheels dataset's `wheels.json` and installs lmsys_pref offline
  (`pip --no-index`) with the kernel's wheel set.

Inference kernels come from `notebooks/predict.ipynb` (a model uploaded with `make push-model`);
training kernels from the baseline's notebook where training fits Kaggle's limits (XGBoost on CPU,
RoBERTa-base on 2xT4; the LoRA LLMs train elsewhere and are scored here). `Target` says what they
are built for: the competition and the base of the LoRA run they score.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from ..commands import nbstrip, notebooks
from ..configs.tasks import for_slug
from ..runs import save_json
from .install_cell import TAG, input_specs, install_cell
from .layout import (  # noqa: F401 (model_dataset, check_competition: kernels' names too)
    BASE_HANDLES,
    COMPETITIONS,
    DEFAULT_COMPETITION,
    INPUT,
    PREFIX,
    WORKING,
    base_name,
    check_competition,
    model_dataset,
)
from .wheels import DATASET as WHEELS
from .wheels import WHEEL_SETS

COMPETITION = DEFAULT_COMPETITION  # the old name of the default
GPUS = "cuda:0,cuda:1"
MACHINE_SHAPE = "NvidiaTeslaT4"  # Kaggle's "GPU T4 x2"
PLACEHOLDER_USER = "your-kaggle-username"
METADATA = "kernel-metadata.json"
INSTALL_TAG = TAG
REQUIRED = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
            "is_private": bool, "enable_gpu": bool, "enable_internet": bool,
            "dataset_sources": list, "competition_sources": list, "kernel_sources": list,
            "model_sources": list}


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One Kaggle kernel: its source notebook, its Kaggle parameters, and what it reads."""

    notebook: str
    """File in notebooks/."""
    summary: str
    """One line for `--help` and the README."""
    params: dict = dataclasses.field(default_factory=dict)
    """Notebook parameters on Kaggle (out_dir is added for every kernel; inputs are found)."""
    gpu: bool = False
    """Needs the 2xT4 GPUs (T4: fp16, no bf16, so GPU kernels set dtype fp16)."""
    scores: str = ""
    """Family of the uploaded model it scores (xgb, roberta, gemma, llama); '' = trains."""
    base_model: str = ""
    """model_id of the default base of the LoRA runs it scores (a Kaggle Model, found as
    `model_id`); `Target.base_model` of the same family replaces it."""
    weights: str = ""
    """Slug of the user's dataset of base weights it trains from (found as `model_id`)."""
    wheel_set: str = "base"
    """Which requirements of the wheels dataset it installs (`wheels.WHEEL_SETS`)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What the kernels are built for (`make kernels COMPETITION= RUN_DIR= BASE_MODEL=`)."""

    competition: str = DEFAULT_COMPETITION
    """Competition slug (`layout.COMPETITIONS`): its sources and the data folder's name."""
    base_model: str = ""
    """model_id of the base the scored LoRA run was trained on ('' = each kernel's own)."""
    base_handle: str = ""
    """Its Kaggle Models handle, replacing `layout.BASE_HANDLES`' ('' = the table's)."""

    def bases(self) -> dict[str, str]:
        """The model_id -> Kaggle Models handle table, with this target's override."""
        extra = {self.base_model: self.base_handle} if self.base_handle else {}
        return {**BASE_HANDLES, **extra}

    def base_for(self, spec: Kernel) -> str:
        """The base model_id of kernel `spec` ('' for a kernel without one)."""
        family = spec.scores if spec.base_model else ""
        return self.base_model if family and family in self.base_model.lower() else spec.base_model


_T4 = {"devices": GPUS, "dtype": "fp16"}
# stop early, saying what would fit; the limit is the competition's (9 h, or 12 h for the WSDM
# Cup: `time_limit_h` from its task), the budget's own margin (it stops above 95 %) on top
_T4_SCORING = {**_T4, "tta": "swap", "time_limit_h": 9}

KERNELS: dict[str, Kernel] = {
    "xgb-train": Kernel("xgboost.ipynb", "XGBoost: trained and scored in the kernel (CPU)",
                        {"preset": "xgb", "tta": "swap", "n_jobs": 0}),
    "xgb-infer": Kernel("predict.ipynb", "score test.csv with an uploaded XGBoost run (CPU)",
                        {"tta": "swap"}, scores="xgb"),
    "roberta-train": Kernel("transformer.ipynb", "RoBERTa-base MSE, k-fold, trained in the kernel",
                            {"preset": "roberta-base", **_T4, "tta": "swap"}, gpu=True,
                            weights="roberta-base", wheel_set="encoder"),
    "roberta-infer": Kernel("predict.ipynb", "score test.csv with an uploaded RoBERTa run",
                            _T4_SCORING, gpu=True, scores="roberta",
                            wheel_set="encoder"),
    "gemma-infer": Kernel("predict.ipynb", "Gemma-2 LoRA adapter + head on 2xT4, swap TTA",
                          _T4_SCORING, gpu=True, scores="gemma",
                          base_model="google/gemma-2-2b-it", wheel_set="lm"),
    "llama-infer": Kernel("predict.ipynb", "Llama-3 LoRA adapter + head on 2xT4, swap TTA",
                          _T4_SCORING, gpu=True, scores="llama",
                          base_model="meta-llama/Meta-Llama-3-8B-Instruct", wheel_set="lm"),
}


def check_target(target: Target) -> Target:
    """A clear ValueError for a competition or base the kernels cannot be built for."""
    check_competition(target.competition)
    families = {k.scores for k in KERNELS.values() if k.base_model}
    if target.base_model and not any(f in target.base_model.lower() for f in families):
        raise ValueError(f"base model {target.base_model!r} fits none of the LoRA kernels "
                         f"({', '.join(sorted(families))})")
    if target.base_model and not target.bases().get(target.base_model):
        raise ValueError(f"base model {target.base_model!r} has no Kaggle Models handle in the "
                         f"table ({', '.join(BASE_HANDLES)}); pass --base-handle "
                         "owner/model/framework/variation/version (make kernels BASE_HANDLE=)")
    return target


def model_slug(name: str, target: Target) -> str:
    """The model dataset kernel `name` scores ('' for a training kernel)."""
    spec = KERNELS[name]
    base = target.base_for(spec)
    return model_dataset(base_name(base, spec.scores, target.bases()) if base
                         else spec.scores) if spec.scores else ""


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


def kernel_metadata(name: str, username: str, private: bool = True,
                    target: Target = Target()) -> dict[str, Any]:
    """The kernel-metadata.json of kernel `name` for `username`, built for `target`."""
    spec, base = KERNELS[name], target.base_for(KERNELS[name])
    datasets = [WHEELS] + [d for d in (model_slug(name, target), spec.weights) if d]
    meta = {"id": f"{username}/{slug(name)}", "title": slug(name).replace("-", " "),
            "code_file": f"{slug(name)}.ipynb", "language": "python", "kernel_type": "notebook",
            "is_private": private, "enable_gpu": spec.gpu, "enable_tpu": False,
            "enable_internet": False, "dataset_sources": [f"{username}/{d}" for d in datasets],
            "competition_sources": [target.competition], "kernel_sources": [],
            "model_sources": [target.bases()[base]] if base else []}
    if spec.gpu:
        meta["machine_shape"] = MACHINE_SHAPE
    return meta


def validate_metadata(meta: dict[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """Check a kernel-metadata.json mapping (and, with `folder`, that its code file is there).

    Raises:
        ValueError: naming the key that is missing or wrong (and the accepted competitions).
    """
    where = f"{folder}/{METADATA}" if folder else METADATA
    for key, typ in REQUIRED.items():
        if not isinstance(meta.get(key), typ):
            raise ValueError(f"{where}: {key!r} must be a {typ.__name__}, got {meta.get(key)!r}")
    owner, _, kernel_slug = meta["id"].partition("/")
    if not owner or not kernel_slug or meta["title"].lower().replace(" ", "-") != kernel_slug:
        raise ValueError(f"{where}: id {meta['id']!r} must be <username>/<slug of the title>")
    if not set(meta["competition_sources"]) & set(COMPETITIONS):
        raise ValueError(f"{where}: bad 'competition_sources': {meta['competition_sources']!r}; "
                         f"accepted: {', '.join(COMPETITIONS)}")
    checks = {"language": meta["language"] == "python",
              "kernel_type": meta["kernel_type"] == "notebook",
              "enable_internet": meta["enable_internet"] is False,
              "dataset_sources": f"{owner}/{WHEELS}" in meta["dataset_sources"]}
    for key, ok in checks.items():
        if not ok:
            raise ValueError(f"{where}: bad {key!r}: {meta[key]!r}")
    if folder is not None and not (Path(folder) / meta["code_file"]).exists():
        raise ValueError(f"{where}: code_file {meta['code_file']} is missing")
    return meta


def kernel_parameters(name: str, notebook_params: set[str], target: Target = Target()
                      ) -> tuple[dict[str, Any], dict[str, str]]:
    """The Kaggle parameters of kernel `name`, checked against its notebook's parameters, and a
    note for each one its install cell fills in (the inputs, the T4 quantization)."""
    spec, base = KERNELS[name], target.base_for(KERNELS[name])
    wants = input_specs(spec, target, PLACEHOLDER_USER, model_slug(name, target))
    notes = {k: f"None: found under {INPUT} by its {' + '.join(w['files'])}"
             for k, w in wants.items()}
    if base:
        notes["model_id"] = (f"None: the Kaggle Model of the run's base, found under {INPUT} "
                             f"(this build: {target.bases()[base]})")
    if base and spec.gpu and "quantization" in notebook_params:
        notes["quantization"] = ("None: the saved setting, or 8bit for a base a T4 holds only "
                                 "quantized (9B, 8B) and for a merged full model of >= 7B")
    params = {"out_dir": WORKING, **spec.params, **{k: None for k in notes if k != "wheels_dir"}}
    if "time_limit_h" in params:
        params["time_limit_h"] = for_slug(target.competition).kernel_hours
    unknown = sorted(set(params) - notebook_params)
    if unknown:
        raise ValueError(f"kernel {name}: notebooks/{spec.notebook} has no parameter(s) "
                         f"{unknown}; its parameters: {sorted(notebook_params)}")
    return params, notes


def kaggle_parameters_cell(source: str, params: dict[str, Any], name: str,
                           notes: dict[str, str] | None = None) -> str:
    """The notebook's parameters cell with the Kaggle values as its defaults (`notes` as their
    comments), plus wheels_dir."""
    from papermill.translators import PythonTranslator

    notes = notes or {}
    lines, done = [f"# Kaggle defaults of kernel {name}: `papermill -p` changes only what it "
                   "names."], set()
    for line in source.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match["name"] in params:
            value = PythonTranslator.translate(params[match["name"]])
            note = f"  # {notes[match['name']]}" if match["name"] in notes else ""
            line = f"{match['name']} = {value}{note or match['comment'] or ''}"
            done.add(match["name"])
        lines.append(line)
    if set(params) - done:
        raise ValueError(f"kernel {name}: no assignment of {sorted(set(params) - done)} in the "
                         "notebook's parameters cell")
    found = notes.get("wheels_dir", f"None: found under {INPUT} by its wheels.json")
    lines.append(f"wheels_dir = None  # the wheels dataset (Kaggle kernels only); {found}")
    return "\n".join(lines)


def build_kernel(name: str, out_dir: str | Path, username: str, private: bool = True,
                 target: Target = Target()) -> Path:
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
    params, notes = kernel_parameters(name, set(pm.inspect_notebook(str(src))), target)
    nb = nbformat.read(str(src), as_version=4)
    where = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(where) != 1:
        raise ValueError(f"{src}: needs exactly one cell tagged 'parameters', found {len(where)}")
    cell = nb.cells[where[0]]
    cell.source = kaggle_parameters_cell(cell.source, params, name, notes)
    install = nbformat.v4.new_code_cell(install_cell(spec, target, username,
                                                     model_slug(name, target)))
    install.metadata["tags"] = [INSTALL_TAG]
    nb.cells.insert(where[0] + 1, install)
    meta = kernel_metadata(name, username, private, target)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbstrip.strip(nb), str(folder / meta["code_file"]))
    save_json(folder / METADATA, validate_metadata(meta))
    return folder


def build_kernels(out_dir: str | Path, username: str, names: list[str] | None = None,
                  private: bool = True, target: Target = Target()) -> list[Path]:
    """Build every kernel (or `names`) under `out_dir` for `target`."""
    username, target = check_username(username), check_target(target)
    return [build_kernel(n, out_dir, username, private, target)
            for n in (names or list(KERNELS))]
