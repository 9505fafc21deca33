"""The doors: every Makefile target goes through `lmsys-pref`, `make help` lists them all, each
CLI command resolves, and a train run streams the notebook's log without kernel noise."""
from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from lmsys_pref import cli
from lmsys_pref.commands import launch, nbstrip, notebooks

MAKEFILE = (notebooks.REPO / "Makefile").read_text()
# Targets that run no product command, and why; any other target's recipe must use $(RUN).
NOT_A_COMMAND = {
    "help": "prints this Makefile's own ## lines",
    "install": "creates the venv the commands run in",
    "test": "pytest", "test-slow": "pytest", "test-all": "pytest", "lint": "ruff",
    "bench": "benchmarks/ is a repository tool, not part of the installed package",
    "gpu-check": "benchmarks/gpu_check.py with the Python a GPU box already has (no install)",
    "sample": "data/make_sample.py is a repository tool",
    "hooks": "git config of this clone",
    "clean": "rm -rf",
}


def recipes() -> dict[str, list[str]]:
    """target -> its recipe lines (the `$(INSTALLED)` file rule left out)."""
    out: dict[str, list[str]] = {}
    target = None
    for line in MAKEFILE.splitlines():
        rule = re.match(r"^([a-zA-Z][\w-]*):(?!=)", line)
        if rule:
            target = rule.group(1)
            out[target] = []
        elif line.startswith("\t") and target:
            out[target].append(line.strip())
        elif not line.strip() or not line.startswith("\t"):
            target = None if not line.startswith("\t") and line.strip() else target
    return out


def test_every_target_goes_through_the_cli():
    found = recipes()
    assert len(found) >= 25 and set(NOT_A_COMMAND) <= set(found)
    for target, lines in found.items():
        if target in NOT_A_COMMAND:
            continue
        assert lines, f"make {target}: no recipe"
        assert all(line.startswith("$(RUN) ") for line in lines), f"make {target}: {lines}"


def test_params_everywhere_and_help_lists_every_target():
    assert "BLEND_ARGS" not in MAKEFILE
    for target, lines in recipes().items():
        takes_options = target not in NOT_A_COMMAND and target not in {"demo", "strip-notebooks"}
        if takes_options and not target.startswith(("kernel", "kaggle", "push")):  # issue 10
            assert "$(PARAMS)" in " ".join(lines), f"make {target} ignores PARAMS"
    shown = subprocess.run(["make", "-s", "help"], cwd=notebooks.REPO, capture_output=True,
                           text=True, check=True).stdout
    listed = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert listed == set(recipes())


def test_every_cli_command_resolves():
    assert {"grid", "dist", "eda", "nbstrip"} <= set(cli.COMMANDS)
    for name, (target, text) in cli.COMMANDS.items():
        module, fn = target.split(":")
        assert callable(getattr(importlib.import_module(module), fn)), name
        assert text, name


def test_dist_runs_the_distributed_module_under_torchrun(capsys):
    assert launch.torchrun_argv(3, "train", ["gemma", "--out-dir", "o"]) == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3", "-m",
        "lmsys_pref.commands.distributed", "train", "gemma", "--out-dir", "o"]
    with pytest.raises(SystemExit):
        launch.cli_main(["--nproc", "0", "predict"])
    assert "--nproc must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        launch.cli_main(["score"])


def test_eda_rejects_an_unknown_parameter_before_running(tmp_path, capsys):
    argv = ["eda", "--data-dir", "data/sample", "--out-dir", str(tmp_path), "-p", "top_k", "5"]
    assert cli.main(argv) != 0
    assert "unknown parameter(s) ['top_k']" in capsys.readouterr().err
    assert not (tmp_path / "eda.ipynb").exists()


def test_nbstrip_is_a_stdin_filter(tmp_path):
    nb = nbstrip.nbformat.v4.new_notebook(cells=[nbstrip.nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].outputs = [nbstrip.nbformat.v4.new_output("execute_result", {"text/plain": "2"})]
    nb.cells[0].execution_count = 1
    out = subprocess.run([sys.executable, "-m", "lmsys_pref.commands.nbstrip"],
                         input=json.dumps(nb), capture_output=True, text=True, check=True).stdout
    cell = json.loads(out)["cells"][0]
    assert (cell["outputs"], cell["execution_count"], cell["source"]) == ([], None, ["1 + 1"])


def test_train_streams_the_notebook_log_without_transport_warning(tmp_path, sample_dir):
    res = subprocess.run(
        [sys.executable, "-m", "lmsys_pref", "train", "xgb", "--data-dir", str(sample_dir),
         "--out-dir", str(tmp_path), "-p", "n_estimators", "5", "-p", "n_folds", "2"],
        capture_output=True, text=True, cwd=notebooks.REPO, timeout=300)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "xgb folds: 100%" in log  # the kernel's progress bar, as it ran
    assert "INFO lmsys_pref: xgb: cv log loss" in log  # the run's own log line
    assert "without encryption" not in log and "IProgress not found" not in log


# Variables that hold one path (or a preset name/YAML path, a base model id/folder) each.
PATH_VARS = {"DATA_DIR": "data/bob's data", "OUT_DIR": "runs/my out", "MODEL_DIR": "runs/my run",
             "RUN_DIR": "runs/my (old) run", "ADAPTER": "adapters/my adapter",
             "BASE_MODEL": "bases/my base", "SUBMISSION": "runs/my run/submission.csv",
             "GRID": "grids/my grid.yaml", "PRESET": "presets/my preset.yaml"}


def dry_run(target: str, **variables: str) -> list[str]:
    """The words of `make -n target` (the install step left out), as the shell splits them."""
    args = [f"{k}={v}" for k, v in variables.items()]
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", target, *args],
                          cwd=notebooks.REPO, capture_output=True, text=True, check=True)
    return shlex.split(done.stdout)


def test_make_passes_paths_with_spaces_as_one_word():
    """Every target's path variables reach the command whole: spaces, a quote, parentheses."""
    py = "/opt/my venv/bin/python"
    checked = 0
    for target, lines in recipes().items():
        used = [v for v in PATH_VARS if f"$({v})" in " ".join(lines)]
        if target in NOT_A_COMMAND or not used:
            continue
        words = dry_run(target, PY=py, KAGGLE_USERNAME="bob", **PATH_VARS)
        assert words[:3] == [py, "-m", "lmsys_pref"], (target, words)
        for var in used:
            assert PATH_VARS[var] in words, (target, var, words)
        checked += 1
    assert checked >= 20
    plain = dry_run("predict", MODEL_DIR="runs/xgb", DATA_DIR="data/sample")
    assert plain[3:] == ["predict", "--model-dir", "runs/xgb", "--data-dir", "data/sample",
                         "--out-dir", "runs/predict"]  # a plain path is written as it is


def test_make_train_runs_with_spaces_in_its_paths(tmp_path, sample_dir):
    data_dir, out = tmp_path / "my data", tmp_path / "my run"
    shutil.copytree(sample_dir, data_dir)
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "train-xgb",
                           f"PY={sys.executable}", f"DATA_DIR={data_dir}", f"OUT_DIR={out}",
                           "PARAMS=-p n_estimators 5 -p n_folds 2"], cwd=notebooks.REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "submission.csv").is_file() and (out / "xgboost.ipynb").is_file()
    assert json.loads((out / "model" / "lmsys_pref.json").read_text())["config"]["data_dir"] \
        == str(data_dir)
