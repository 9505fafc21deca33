"""The house rules of imports: no cycles, folders that import only downwards, a torch-free core.

Every import of a `lmsys_pref` module counts, at module level or inside a function, and so do
the "module:function" strings of the lazy registries (cli.COMMANDS, predict.LOADERS): a cycle
hidden behind a function-level import is still a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "lmsys_pref"
# The folder list, bottom to top (ARCHITECTURE.md): a module imports its own layer or lower ones.
LAYERS = ("root", "files", "configs", "data", "runs", "xgb", "model", "infer", "train", "eval",
          "commands", "kaggle", "cli")
# The only modules at the top of the package: the package itself, the forwarding of old paths,
# and the entry points. Everything else lives in the folder of its layer.
ENTRY_POINTS = {"lmsys_pref": "root", "lmsys_pref._renamed": "root", "lmsys_pref.cli": "cli",
                "lmsys_pref.__main__": "cli"}
# The torch-free layers (ARCHITECTURE.md): an XGBoost run, blends, reports and `predict` on an
# XGBoost model never load torch.
CORE = tuple(f"lmsys_pref.{layer}" for layer in ("files", "configs", "data", "runs", "xgb"))
TORCH_FREE = CORE + ("lmsys_pref.eval.blend", "lmsys_pref.eval.report", "lmsys_pref.eval.planted")
TORCH_PACKAGES = ("lmsys_pref.model", "lmsys_pref.infer", "lmsys_pref.train")
TORCH_WORLD = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """(lmsys_pref modules, third-party top-level names) imported anywhere in module `name`."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node, name, path.name == "__init__.py")
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod
                       for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("lmsys_pref.") and ":" in node.value:
            targets = [node.value.split(":")[0]]  # a lazy registry entry
        for t in targets:
            if t.startswith("lmsys_pref"):
                while t not in MODULES and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in MODULES and t != name:
                    ours.add(t)  # a package's face (its __init__) counts like any module
            else:
                theirs.add(t.split(".")[0])
    return ours, theirs


GRAPH = {name: imports_of(name)[0] for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


class Unplaced(ValueError):
    """A module the layer rule cannot place: flat at the top, or in an unknown folder."""


def layer_of(name: str) -> str:
    """The layer of a module: the folder it lives in, or for the entry points their own.

    Raises:
        Unplaced: a module at the top of the package that is no entry point, or one in a folder
            that is no layer (there is no default layer).
    """
    if name in ENTRY_POINTS:
        return ENTRY_POINTS[name]
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LAYERS[1:-1]:  # a layer's folder, its face included
        return parts[1]
    where = "flat at the top of lmsys_pref" if len(parts) == 2 else f"in folder {parts[1]!r}"
    raise Unplaced(f"{name} is {where}: put it in the folder of its layer "
                   f"({', '.join(LAYERS[1:-1])}) and add it to ARCHITECTURE.md")


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import (a -> b) whose target sits in a higher layer than the importer."""
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a)))


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_and_registry_imports():
    assert "lmsys_pref.infer.predictor" in GRAPH["lmsys_pref.infer.loaders"]  # LOADERS string
    assert "lmsys_pref.train.fit" in GRAPH["lmsys_pref.commands.distributed"]  # inside a function


def test_no_import_cycle_in_the_package():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_every_module_has_a_layer_and_the_folders_are_the_layers():
    assert layer_of("lmsys_pref.model.heads") == "model"
    assert layer_of("lmsys_pref.eval.bias") == "eval" and layer_of("lmsys_pref.data") == "data"
    assert {layer_of(m) for m in MODULES} == set(LAYERS)  # every module placed, every layer used
    tops = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops == set(LAYERS) - {"root", "cli"}


def test_the_top_of_the_package_holds_only_the_entry_points():
    flat = {p.stem for p in PKG.glob("*.py")}
    assert flat == {"__init__", "__main__", "_renamed", "cli"}, flat
    assert {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"} == \
        set(LAYERS) - {"root", "cli"}  # the presets' YAML files live in configs/presets


@pytest.mark.parametrize("planted", ["lmsys_pref.teachers", "lmsys_pref.newthing",
                                     "lmsys_pref.utils.helpers"])
def test_the_layer_rule_refuses_a_module_it_cannot_place(planted):
    with pytest.raises(Unplaced, match="put it in the folder of its layer"):
        layer_of(planted)


def test_imports_point_down_the_layers():
    """files <- configs <- data <- runs <- xgb <- model <- infer <- train <- eval <- commands <-
    kaggle <- cli, never back, at package level."""
    up = upward(GRAPH)
    assert not up, "imports pointing up a layer: " + ", ".join(f"{a} -> {b}" for a, b in up)


def test_the_layer_rule_catches_a_planted_upward_import():
    graph = dict(GRAPH) | {"lmsys_pref.model.heads": {"lmsys_pref.train.fit"}}
    assert ("lmsys_pref.model.heads", "lmsys_pref.train.fit") in upward(graph)


@pytest.mark.parametrize("core", TORCH_FREE)
def test_the_core_never_reaches_torch(core):
    names = [m for m in MODULES if m == core or m.startswith(core + ".")]
    assert names, f"{core} is not a module of the package"
    for name in names:
        reached = {name} | closure(name)
        assert not {m for m in reached if m.startswith(TORCH_PACKAGES)}
        for mod in reached:
            third_party = imports_of(mod)[1]
            assert not third_party & set(TORCH_WORLD), f"{name} reaches {mod}, which imports torch"


def test_an_xgboost_run_and_predict_leave_torch_unimported():
    code = ("import sys, lmsys_pref.xgb, lmsys_pref.commands.predict, lmsys_pref.eval.blend, "
            "lmsys_pref.cli;"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("old", ["lmsys_pref.teachers", "lmsys_pref.predict", "lmsys_pref.atomic",
                                 "lmsys_pref.features"])
def test_an_old_module_path_warns_and_forwards_to_the_new_module(old):
    from lmsys_pref._renamed import RENAMED

    code = (f"import importlib, warnings; warnings.simplefilter('error');\n"
            f"try:\n    importlib.import_module({old!r})\n"
            f"except DeprecationWarning as w:\n    print(w)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert " is renamed lmsys_pref." in out.stdout  # the first old name on the path warns
    new = __import__(RENAMED[old], fromlist=["_"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = __import__(old, fromlist=["_"])
    public = [n for n in dir(new) if not n.startswith("_")]
    assert public and all(getattr(mod, n) is getattr(new, n) for n in public)


def test_every_renamed_module_exists_at_its_new_path():
    from lmsys_pref._renamed import RENAMED

    assert set(RENAMED.values()) <= set(MODULES), set(RENAMED.values()) - set(MODULES)
    assert not set(RENAMED) & set(MODULES)  # an old name never shadows a real module


def test_an_old_path_still_runs_as_a_module(tmp_path):
    """A git filter set up before the move (`python -m lmsys_pref.nbstrip`) keeps working."""
    nb = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    out = subprocess.run([sys.executable, "-W", "ignore", "-m", "lmsys_pref.nbstrip"], input=nb,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '"cells": []' in out.stdout


def _getattr_with_default(name: str) -> list[int]:
    """Lines of `name` reading one of our configs by name with a fallback (getattr(cfg, x, d));
    a transformers `config` (optional attributes by design) is not ours."""
    tree = ast.parse(MODULES[name].read_text())
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "getattr" and len(node.args) == 3
            and isinstance(node.args[0], ast.Name) and node.args[0].id in ("cfg", "spec")]


def test_no_layer_reads_a_config_field_with_a_fallback():
    """Each layer gets its typed part of the config (configs.parts), never a guessed field."""
    found = {name: lines for name in MODULES if (lines := _getattr_with_default(name))}
    assert not found, f"getattr(cfg, name, default) in {found}"
