"""The first cell of every Kaggle kernel: find the inputs, then install lmsys_pref offline.

It runs before lmsys_pref is installed, so it is self-contained: the discovery functions of
`layout.py` are copied into it (the same functions the tests call directly), followed by this
kernel's input specs (`input_specs`), the removal of image packages that break its stack
(`image.IMAGE_BREAKERS`, offline `pip uninstall -y`, one printed line each) and the offline
`pip install` from the wheels dataset. Nothing is installed or removed when an input is missing:
the cell stops with one message naming what to attach and what `/kaggle/input` holds.
"""
from __future__ import annotations

import inspect
import pprint
import string
from typing import Any

from ..configs.tasks import for_slug
from .image import breakers_for, stale_packages
from .layout import FILES, NOT_A_BASE, T4_FULL_PARAMS, T4_QUANTIZATION, inlined_source
from .wheel_check import requirements_file
from .wheels import DATASET as WHEELS
from .wheels import WHEEL_SETS

TAG = "kaggle-install"

TEMPLATE = string.Template('''\
# Kaggle runs offline. First the inputs left None above are found under /kaggle/input by what
# they hold, in today's layout (competitions/<slug>, datasets/<owner>/<slug>,
# models/<owner>/<model>/<framework>/<variation>/<version>) or the old flat one; nothing is
# installed when one is missing. The functions are lmsys_pref.kaggle.layout's, copied here
# because lmsys_pref is not installed yet.
import importlib as _importlib, json, math, os, subprocess as _subprocess, sys as _sys
from pathlib import Path

$layout
_found = discover($wants, globals())
globals().update(_found)
print("\\n".join(f"{_k} = {_v!r}" for _k, _v in _found.items()))

# Then lmsys_pref is installed from the wheels dataset $dataset (`make kaggle-wheels`,
# `make push-wheels`). It pins lmsys_pref and what the image lacks; the image's own packages
# (torch, numpy, pandas, ...) are kept, so nothing already imported changes.
_wheels = Path(wheels_dir)
if not (_wheels / "wheels.json").exists():
    raise RuntimeError(f"{_wheels}/wheels.json not found: add the dataset $dataset as an input "
                       "(upload it with `make push-wheels`)")
_built_for = json.loads((_wheels / "wheels.json").read_text())["python_versions"]
_running = "%d.%d" % _sys.version_info[:2]
if _running not in _built_for:
    raise RuntimeError(f"this kernel runs Python {_running} but the wheels in {_wheels} are for "
                       f"Python {', '.join(_built_for)}: rebuild them with `make kaggle-wheels "
                       f"PYTHON_VERSION={_running}` and upload them with `make push-wheels`")

# Image packages that break this kernel's stack at the image's version are removed, offline
# (lmsys_pref.kaggle.image.IMAGE_BREAKERS; nothing replaces them, our stack does not need them).
$stale_packages


_breakers = $breakers
for _name, _version, _least, _why in stale_packages(_breakers):
    _rm = _subprocess.run([_sys.executable, "-m", "pip", "uninstall", "-y", "-q", _name],
                          capture_output=True, text=True)
    if _rm.returncode:
        raise RuntimeError(f"pip could not remove the image's {_name}:\\n{_rm.stderr}")
    print(f"removed the image's {_name} {_version} (pip uninstall -y, offline): {_why}")

_pip = _subprocess.run([_sys.executable, "-m", "pip", "install", "-q", "--no-index",
                        "--find-links", str(_wheels), "-r", str(_wheels / "$requirements")],
                       capture_output=True, text=True)
if _pip.returncode:
    raise RuntimeError(f"pip could not install lmsys_pref from {_wheels}:\\n{_pip.stderr[-3000:]}")
_importlib.invalidate_caches()''')


def input_specs(spec: Any, target: Any, username: str, model_slug: str = "") -> dict[str, dict]:
    """What the install cell of kernel `spec` looks for (`layout.discover`), per parameter: the
    files that mark the folder, the slugs that name it, what to attach when it is missing.

    Args:
        spec: the kernel (a `kernels.Kernel`; not imported: kernels imports this module).
        target: the competition and base it is built for (a `kernels.Target`).
        username: owner of the wheels and model datasets.
        model_slug: the model dataset it scores ('' for a training kernel).
    """
    wants = {"data_dir": {"hints": [target.competition], "attach": (
                 f"the competition {target.competition} (Add Input > Competitions)")},
             "wheels_dir": {"hints": [WHEELS], "attach": (
                 f"the dataset {username}/{WHEELS} (make push-wheels)")}}
    if model_slug:
        wants["model_dir"] = {"hints": [model_slug], "attach": (
            f"the dataset {username}/{model_slug} (make push-model)")}
    if spec.weights:
        wants["model_id"] = {"hints": [spec.weights], "exclude": list(NOT_A_BASE), "attach": (
            f"the dataset {username}/{spec.weights} (the model's Hugging Face files)")}
    base = target.base_for(spec)
    if base:  # the base weights follow the run found as model_dir (layout.run_base)
        handle = target.bases()[base]
        wants["model_id"] = {"follow": "model_dir", "bases": target.bases(), "handle": handle,
                             "quantize": T4_QUANTIZATION if spec.gpu else {},
                             "quantize_above": T4_FULL_PARAMS if spec.gpu else 0,
                             "exclude": list(NOT_A_BASE), "hints": [], "attach": handle}
    files = {**FILES, "data_dir": data_files(target.competition)}
    return {k: {"files": list(files[k]), **v} for k, v in wants.items()}


def data_files(competition: str) -> tuple[str, ...]:
    """The files that mark a competition's data folder: its test file (csv, or the WSDM Cup's
    parquet) and the sample submission."""
    return (f"test.{for_slug(competition).data_format}", "sample_submission.csv")


def install_cell(spec: Any, target: Any, username: str, model_slug: str = "") -> str:
    """The source of kernel `spec`'s install cell (arguments as for `input_specs`)."""
    wants = pprint.pformat(input_specs(spec, target, username, model_slug), width=80,
                           sort_dicts=False)
    return TEMPLATE.substitute(
        layout=inlined_source(), wants=wants.replace("\n", "\n" + " " * 19),
        dataset=f"{username}/{WHEELS}", requirements=requirements_file(spec.wheel_set),
        stale_packages=inspect.getsource(stale_packages).strip(),
        breakers=pprint.pformat(breakers_for(WHEEL_SETS[spec.wheel_set]), width=86)
        .replace("\n", "\n" + " " * 12))
