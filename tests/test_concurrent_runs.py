"""Two trainings started at the same moment on one machine (different OUT_DIRs) both succeed,
write nothing into the working directory or the repository, and relative paths mean the
caller's working directory for the notebook and the outputs alike (issue 20)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "tests" / "fixtures" / "bad_inputs" / "_base"
TINY = ["-p", "n_estimators", "5", "-p", "n_folds", "2", "-p", "early_stopping_rounds", "0"]


def sockets(folder: Path) -> set[str]:
    """Kernel socket files (`kernel-ipc-N`, jupyter_client's default IPC name) in `folder`."""
    return {str(p) for p in folder.glob("**/kernel-ipc*") if ".venv" not in p.parts}


def test_two_trainings_at_once_both_succeed_and_leave_nothing_behind(tmp_path):
    work = tmp_path / "work"  # the callers' working directory
    work.mkdir()
    shutil.copytree(BASE, work / "data")
    before_repo, before_work = sockets(ROOT), sorted(p.name for p in work.iterdir())
    commands = [  # one with absolute paths, one with paths relative to the caller
        ["train", "xgb", "--data-dir", str(BASE), "--out-dir", str(tmp_path / "abs"), *TINY],
        ["train", "xgb", "--data-dir", "data", "--out-dir", "rel/out", *TINY]]
    procs = [subprocess.Popen([sys.executable, "-m", "lmsys_pref", *argv], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for argv in commands]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log
        assert "Invalid Signature" not in log and "didn't respond" not in log, log
    for out in (tmp_path / "abs", work / "rel" / "out"):  # notebook and outputs together
        assert {"xgboost.ipynb", "submission.csv", "metrics.json", "oof.csv", "model"} <= {
            p.name for p in out.iterdir()}, sorted(out.iterdir())
        assert pd.read_csv(out / "submission.csv", dtype=str)["id"].tolist() == [
            "201", "202", "203", "204"]
    assert sorted(p.name for p in work.iterdir()) == sorted(before_work + ["rel"])
    assert sockets(work) == set() and sockets(ROOT) == before_repo  # the kernels' sockets lived
    # in private temporary folders: none in the working directory or the repository
