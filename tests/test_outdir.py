"""Issue 28: a finished run is never lost. Refused, failed or killed re-runs into a run folder
never displace its last complete run (`runs.outdir`), a move that fails half-way is rolled back
(or the error says what is where), a move cut by a kill is put back, and an older executed
notebook is moved aside like the other outputs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lmsys_pref import cli, runs, xgb
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.configs.xgb import XGBConfig
from lmsys_pref.files import atomic, move_aside
from lmsys_pref.runs import resume
from lmsys_pref.train import fit

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "tests" / "fixtures" / "bad_inputs" / "_base"  # 12 train rows, 4 test rows
TINY = dict(n_folds=2, n_estimators=5, early_stopping_rounds=0, n_jobs=1)
RUN = ["metrics.json", "model", "oof.csv", "submission.csv"]  # what a complete xgb run holds


def names(folder: Path) -> list[str]:
    """The entries of `folder` (no lock file), sorted."""
    return sorted(p.name for p in folder.iterdir() if p.name != atomic.LOCK_NAME)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture()
def finished(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A finished tiny XGBoost run, and the bytes of its files."""
    out = tmp_path / "run"
    xgb.fit(XGBConfig(data_dir=str(BASE), out_dir=str(out), **TINY))
    assert names(out) == RUN
    return out, snapshot(out)


def test_a_finished_run_survives_any_number_of_refused_reruns(finished, tmp_path, capsys):
    """The issue's case: refused re-runs (a teacher file missing rows, refused after config.yaml
    is written; a bad extra_train file, refused by `lmsys-pref train`'s checks) used to move
    the run into previous/ and then replace previous/ with the first failure's config.yaml."""
    out, files = finished
    teacher = tmp_path / "teacher.csv"  # the run's own OOF, half of its rows: refused
    pd.read_csv(out / "oof.csv", dtype={"id": str}).iloc[::2].to_csv(teacher, index=False)
    bad_extra = tmp_path / "extra.csv"
    bad_extra.write_text("id,prompt\n1,x\n")
    lm = LMConfig.from_preset("tiny-llama", data_dir=str(BASE), out_dir=str(out),
                              teachers=[str(teacher)])
    argv = ["train", "xgb", "--data-dir", str(BASE), "--out-dir", str(out),
            "-p", "extra_train", str(bad_extra)]
    for _ in range(3):
        with pytest.raises(ValueError, match="no probabilities for"):
            fit.fit(lm)
        assert (out / "config.yaml").exists()  # what the refused run leaves
        assert cli.main(argv) == 1
        assert "missing column(s)" in capsys.readouterr().err
        assert snapshot(out / runs.PREVIOUS) == files  # the finished run, byte for byte
        assert set(names(out)) - {resume.FINGERPRINT} == {runs.FAILED, runs.PREVIOUS}
    assert names(out / runs.FAILED) == ["config.yaml"]
    assert runs.resolve_model_dir(out / runs.PREVIOUS) == out / runs.PREVIOUS / "model"
    xgb.fit(XGBConfig(data_dir=str(BASE), out_dir=str(out), **TINY))  # a new one completes
    assert set(RUN) <= set(names(out)) and snapshot(out / runs.PREVIOUS) == files
    newer = snapshot(out)
    runs.prepare_out_dir(out)  # and is kept in its turn
    assert snapshot(out / runs.PREVIOUS) == {k: v for k, v in newer.items() if k.split("/")[0]
                                             in RUN}


def test_prepare_out_dir_keeps_the_last_complete_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("submission.csv", "metrics.json", "config.yaml"):
        (out / name).write_text("run 1")
    runs.prepare_out_dir(out)  # complete: into previous/
    for attempt in range(3):  # incomplete leftovers never displace it
        (out / "config.yaml").write_text(f"failed {attempt}")
        (out / "xgboost.ipynb").write_text(f"failed {attempt}")
        runs.prepare_out_dir(out)
        assert names(out) == ["failed", "previous"]
        assert snapshot(out / "previous") == {"config.yaml": b"run 1", "metrics.json": b"run 1",
                                               "submission.csv": b"run 1"}
        assert snapshot(out / "failed") == {"config.yaml": f"failed {attempt}".encode(),
                                            "xgboost.ipynb": f"failed {attempt}".encode()}
    (out / "metrics.json").write_text("run 2")  # a run without test.csv: complete too
    runs.prepare_out_dir(out)
    assert snapshot(out / "previous") == {"metrics.json": b"run 2"}


def test_an_older_executed_notebook_is_moved_aside(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("transformer.ipynb", "metrics.json", "loss.png"):  # an older transformer run
        (out / name).write_text("old")
    xgb.fit(XGBConfig(data_dir=str(BASE), out_dir=str(out), **TINY))
    assert names(out / runs.PREVIOUS) == ["loss.png", "metrics.json", "transformer.ipynb"]
    assert names(out) == sorted([*RUN, "previous"])
    (out / "xgboost.ipynb").write_text("the notebook running now")  # papermill's output
    monkeypatch.setenv(runs.EXECUTING_ENV, str(out / "xgboost.ipynb"))
    runs.prepare_out_dir(out)  # the run's own prepare, inside the kernel
    assert names(out) == ["previous", "xgboost.ipynb"] and names(out / "previous") == RUN


def test_train_moves_an_older_notebook_aside_and_keeps_its_own(tmp_path, sample_dir):
    """The real command: `lmsys-pref train xgb` into the folder of an older transformer run."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("transformer.ipynb", "metrics.json"):
        (out / name).write_text("old")
    res = subprocess.run([sys.executable, "-m", "lmsys_pref", "train", "xgb", "--data-dir",
                          str(sample_dir), "--out-dir", str(out), "-p", "n_estimators", "5",
                          "-p", "n_folds", "2"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert names(out / runs.PREVIOUS) == ["metrics.json", "transformer.ipynb"]
    assert "xgboost.ipynb" in names(out) and "transformer.ipynb" not in names(out)
    assert set(RUN) <= set(names(out))


def killed_run(out: Path, code: str) -> None:
    """Run `code` in a process that holds `out` as a run does, and SIGKILL it there."""
    script = ("import os, signal\nfrom lmsys_pref import runs\nfrom pathlib import Path\n"
              f"out = Path({str(out)!r})\nwith runs.holding(out):\n"
              + "".join(f"    {line}\n" for line in code.splitlines()))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr


def test_a_killed_runs_leftovers_never_displace_the_last_complete_run(finished):
    out, files = finished
    killed_run(out, "runs.prepare_out_dir(out)\n(out / 'config.yaml').write_text('k')\n"
               "(out / '.oof.csv.0badc0de.tmp').write_text('cut')\n"
               "os.kill(os.getpid(), signal.SIGKILL)")
    assert names(out) == [".oof.csv.0badc0de.tmp", "config.yaml", "previous"]
    for _ in range(2):  # killed again: the lock of the dead process is no obstacle
        with runs.holding(out):
            runs.prepare_out_dir(out)
        assert names(out) == ["failed", "previous"] and snapshot(out / "previous") == files
        killed_run(out, "(out / 'config.yaml').write_text('k')\n"
                   "os.kill(os.getpid(), signal.SIGKILL)")


def test_a_move_cut_by_a_kill_is_put_back_by_the_next_run(finished):
    out, files = finished
    killed_run(out, "real = os.replace\n"
               "def cut(src, dst):\n"
               "    if Path(dst).parent.name == '.aside.moving' and len(os.listdir(Path(dst)"
               ".parent)) == 2:\n"
               "        os.kill(os.getpid(), signal.SIGKILL)\n"
               "    real(src, dst)\n"
               "os.replace = cut\n"
               "runs.prepare_out_dir(out)")
    assert names(out / move_aside.STAGING) == RUN[:2]  # two moved, then killed
    runs.prepare_out_dir(out)
    assert names(out) == ["previous"] and snapshot(out / "previous") == files


def fail_on(monkeypatch, *moves: tuple[str, str]) -> None:
    """Make `os.replace` of an entry into a folder ((entry name, folder name) in `moves`) fail
    like a file another program holds open."""
    real = os.replace

    def replace(src, dst):
        if (Path(src).name, Path(dst).parent.name) in moves:
            raise PermissionError(13, "Permission denied", str(src))
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("entry, into", [
    ("model", move_aside.STAGING),  # the 2nd entry (metrics.json has moved)
    (runs.PREVIOUS, "run"),  # the older previous/ cannot be moved out of the way
    (move_aside.STAGING, "run"),  # the staged run cannot become previous/ (the older is back)
])
def test_a_move_that_fails_half_way_is_rolled_back(entry, into, finished, monkeypatch):
    out, files = finished
    (out / runs.PREVIOUS).mkdir()
    (out / runs.PREVIOUS / "submission.csv").write_text("an older run")
    fail_on(monkeypatch, (entry, into))
    with pytest.raises(OSError) as err:
        runs.prepare_out_dir(out)
    assert not isinstance(err.value, move_aside.MoveError)
    assert cli.error_line(err.value) == (
        f"{out / entry}: moving entries into previous/ failed here (Permission denied); "
        "nothing was moved, every entry is where it was")
    monkeypatch.undo()
    assert names(out) == sorted([*RUN, "previous"]) and snapshot(out) == {
        **files, "previous/submission.csv": b"an older run"}


def test_a_rollback_that_fails_too_names_which_files_are_where(finished, monkeypatch):
    out, files = finished
    # metrics.json and model move, oof.csv fails; moving model back fails too
    fail_on(monkeypatch, ("oof.csv", move_aside.STAGING), ("model", out.name))
    with pytest.raises(move_aside.MoveError) as err:
        runs.prepare_out_dir(out)
    staging = out / move_aside.STAGING
    assert cli.error_line(err.value) == (
        f"{out}: moving entries into previous/ failed (Permission denied) and could not be "
        f"undone: ['model'] are in {staging}, ['metrics.json'] are back in {out}; the next move "
        "into previous/ (the next run here) puts them back first")
    monkeypatch.undo()
    assert names(staging) == ["model"]  # the message is true
    assert sorted(set(names(out)) - {move_aside.STAGING}) == ["metrics.json", "oof.csv",
                                                              "submission.csv"]
    runs.prepare_out_dir(out)  # the next run puts the model back and moves the whole run
    assert names(out) == ["previous"] and snapshot(out / "previous") == files


def test_a_replaced_model_folder_cut_by_a_kill_comes_back(tmp_path):
    """`atomic_dir` renames the folder it replaces to `.model.<hex>.old.tmp` first: a kill
    before the new one takes its name leaves the only whole copy there, not a temporary."""
    out = tmp_path / "run"
    (out / ".model.0123abcd.old.tmp").mkdir(parents=True)
    (out / ".model.0123abcd.old.tmp" / "booster.json").write_text("whole")
    (out / ".model.4567abcd.tmp").mkdir()  # the new one, cut while it was written
    (out / "submission.csv").write_text("done")
    runs.prepare_out_dir(out)
    assert names(out) == ["previous"]
    assert snapshot(out / "previous") == {"model/booster.json": b"whole",
                                          "submission.csv": b"done"}
