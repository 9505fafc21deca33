"""Old module paths (before the model/, train/, kaggle/, eval/ folders) kept importable for one
release: importing one warns with its new path and returns the new module itself.

Kept as an import hook rather than stub files so that `ls lmsys_pref` shows only the layers.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

RENAMED = {
    "lmsys_pref.lm": "lmsys_pref.train",
    "lmsys_pref.lm.prompt": "lmsys_pref.model.prompt",
    "lmsys_pref.lm.heads": "lmsys_pref.model.heads",
    "lmsys_pref.lm.precision": "lmsys_pref.model.precision",
    "lmsys_pref.lm.models": "lmsys_pref.model.models",
    "lmsys_pref.lm.model_card": "lmsys_pref.model.model_card",
    "lmsys_pref.lm.train": "lmsys_pref.train.loop",
    "lmsys_pref.lm.fit": "lmsys_pref.train.fit",
    "lmsys_pref.kernels": "lmsys_pref.kaggle.kernels",
    "lmsys_pref.wheels": "lmsys_pref.kaggle.wheels",
    "lmsys_pref.wheel_check": "lmsys_pref.kaggle.wheel_check",
    "lmsys_pref.kaggle_image": "lmsys_pref.kaggle.image",
    "lmsys_pref.report": "lmsys_pref.eval.report",
    "lmsys_pref.blend": "lmsys_pref.eval.blend",
    "lmsys_pref.blend_inputs": "lmsys_pref.eval.blend_inputs",
    "lmsys_pref.bias": "lmsys_pref.eval.bias",
    "lmsys_pref.bias_report": "lmsys_pref.eval.bias_report",
    "lmsys_pref.judge_sets": "lmsys_pref.eval.judge_sets",
    "lmsys_pref.eda": "lmsys_pref.eval.eda",
    "lmsys_pref.notebook_view": "lmsys_pref.eval.notebook_view",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and makes it a thin module that forwards every attribute to the new one
    (the new module keeps its own name and spec, so pickles and reloads see one module)."""

    def find_spec(self, name, path=None, target=None):
        if name not in RENAMED:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=name == "lmsys_pref.lm")

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        new_name = RENAMED[module.__name__]
        warnings.warn(f"{module.__name__} is renamed {new_name}; the old path goes in the next "
                      "release", DeprecationWarning, stacklevel=2)
        new = importlib.import_module(new_name)
        module.__getattr__ = lambda attr: getattr(new, attr)
        module.__dir__ = lambda: dir(new)
        module.__doc__ = new.__doc__


def install() -> None:
    """Add the alias finder once (after the normal finders, so real modules always win)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
