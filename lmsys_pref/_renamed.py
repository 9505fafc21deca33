"""Old module paths (before the files/, data/, runs/, xgb/ and commands/ folders) kept importable
for one release: importing one warns with its new path and returns a thin module that forwards
every attribute to the new one; `python -m <old path>` runs the new module.

Kept as an import hook rather than stub files so that `ls lmsys_pref` shows only the layers.
The 0.2.0 renames (`lmsys_pref.lm.*`, `lmsys_pref.kernels`, `lmsys_pref.blend`, ...) had their
release and are gone.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

RENAMED = {
    "lmsys_pref.atomic": "lmsys_pref.files.atomic",
    "lmsys_pref.tables": "lmsys_pref.files.tables",
    "lmsys_pref.turns": "lmsys_pref.data.turns",
    "lmsys_pref.splits": "lmsys_pref.data.splits",
    "lmsys_pref.labels": "lmsys_pref.data.labels",
    "lmsys_pref.teachers": "lmsys_pref.data.teachers",
    "lmsys_pref.metrics": "lmsys_pref.data.metrics",
    "lmsys_pref.outdir": "lmsys_pref.runs.outdir",
    "lmsys_pref.resume": "lmsys_pref.runs.resume",
    "lmsys_pref.submission": "lmsys_pref.runs.submission",
    "lmsys_pref.postrules": "lmsys_pref.runs.postrules",
    "lmsys_pref.features": "lmsys_pref.xgb.features",
    "lmsys_pref.planted": "lmsys_pref.eval.planted",
    "lmsys_pref.predict": "lmsys_pref.commands.predict",
    "lmsys_pref.notebooks": "lmsys_pref.commands.notebooks",
    "lmsys_pref.grid": "lmsys_pref.commands.grid",
    "lmsys_pref.launch": "lmsys_pref.commands.launch",
    "lmsys_pref.distributed": "lmsys_pref.commands.distributed",
    "lmsys_pref.pseudo_label": "lmsys_pref.commands.pseudo_label",
    "lmsys_pref.nbstrip": "lmsys_pref.commands.nbstrip",
}
"""Old path -> new path. `lmsys_pref.data`, `.runs` and `.xgb` are packages now whose faces
export the old modules' public names, so they need no entry."""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds an old name and makes it a thin module that forwards every attribute to the new one
    (the new module keeps its own name and spec, so pickles and reloads see one module)."""

    def find_spec(self, name, path=None, target=None):
        if name not in RENAMED:
            return None
        return importlib.util.spec_from_loader(name, self)

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

    def get_source(self, fullname):
        """What `python -m <old path>` runs (an old git filter, `-m lmsys_pref.nbstrip`): the
        new module as __main__."""
        return f"import runpy\nrunpy.run_module({RENAMED[fullname]!r}, run_name='__main__')\n"


def install() -> None:
    """Add the alias finder once (after the normal finders, so real modules always win)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
