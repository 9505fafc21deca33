"""OUT_DIR of a run: one run at a time, never one of the run's inputs, no stale outputs, and
never less than its last complete run.

- `holds_out_dir` (a decorator of `fit(cfg)`, `predict(cfg)`, `blend(run_dirs, out_dir)`, ...)
  refuses an OUT_DIR that is or contains an input (DATA_DIR, a blended run, the model folder)
  and holds OUT_DIR for the run's whole length: a second run into the same folder stops at
  once with an error naming the first run's process (`atomic.exclusive`).
- `prepare_out_dir` moves everything an earlier run left (`RUN_OUTPUTS`: predictions, metrics,
  model, report, figures, logs, config, executed notebooks) aside before any work, so a re-run
  or a failed run never leaves an older file beside a newer one. Where it goes depends on
  whether that run was complete:

  * complete: its outputs include one of `COMPLETE_MARKS` (`submission.csv`, `metrics.json`,
    or `pseudo_labels.json` for `pseudo-label`). Writers write these last, after the model and
    the scored rows (`runs.write_outputs`: metrics.json, then submission.csv), so a run that
    has one holds a usable model and its scores (a run without test.csv writes no submission).
    Its outputs replace OUT_DIR/previous/: the newest complete run before this one.
  * incomplete: a run refused on its inputs after writing its config.yaml, a failed notebook,
    a killed run. Its outputs go to OUT_DIR/failed/ (replacing older leftovers there), and
    previous/ keeps the last complete run: any number of refused, failed or killed re-runs
    never displace it. The next complete run replaces it.

  The move is all or none (`files.move_aside`): a rename that fails half-way is rolled back,
  and when that fails too the error names which files are where; a move cut by a kill is put
  back by the next run. Temporaries of a killed run are deleted (`atomic.clear_temporaries`).
  The notebook a papermill run is executing (`EXECUTING_ENV`, set by `commands.notebooks`) is
  that run's own output and stays.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..configs import ConfigError
from ..data.teachers import PSEUDO_META
from ..files.atomic import clear_temporaries, exclusive, write_text
from ..files.move_aside import finish_interrupted, move_aside

log = logging.getLogger("lmsys_pref")

# What a run may leave in OUT_DIR, figures, logs, configs and executed notebooks (one per
# source notebook: xgboost.ipynb, transformer.ipynb) included; names or glob patterns. Resume
# state such as checkpoints/ and train_fingerprint.json is not an output: it stays.
REPORT_FIGURES = ("calibration.png", "confusion.png", "loss_by_length.png", "loss_by_turns.png")
RUN_OUTPUTS = ("submission.csv", "test_probs.csv", "oof.csv", "val.csv", "metrics.json",
               "predict.json", "report.md", "report.json", "weights.json", "calibration.json",
               "model", "log_history.json", "loss.png", "config.yaml", "*.ipynb") + REPORT_FIGURES
COMPLETE_MARKS = ("submission.csv", "metrics.json", PSEUDO_META)  # written last by their runs
PREVIOUS = "previous"  # the last complete run before the current one
FAILED = "failed"  # what the last incomplete run left
EXECUTING_ENV = "LMSYS_PREF_EXECUTING"  # the notebook papermill is executing into OUT_DIR
_runs: list[contextlib.ExitStack] = []  # the `holds_out_dir` runs under way, innermost last


def check_out_dir(out_dir: str | Path, inputs: dict[str, Any]) -> None:
    """Refuse an OUT_DIR that is, or contains, one of the run's inputs.

    Args:
        out_dir: the folder the run will write (and whose old outputs it moves aside).
        inputs: what each input is ("run_dirs", "data_dir") -> a path or a list of paths.

    Raises:
        ConfigError: naming OUT_DIR and the input (a blend written into one of its runs
            would move that run's model away).
    """
    out = Path(out_dir).resolve()
    for what, paths in inputs.items():
        for path in [paths] if isinstance(paths, (str, Path)) else (paths or []):
            src = Path(path).resolve()
            if out == src or out in src.parents:
                raise ConfigError(f"out_dir {str(out_dir)!r} {'is' if out == src else 'contains'}"
                                  f" the {what} {str(path)!r}: writing there would move or "
                                  "replace that input's files; choose another OUT_DIR")


def _run_inputs(args: dict[str, Any]) -> dict[str, Any]:
    """The inputs of a run from its arguments: a config's data_dir/model_dir, or run folders."""
    inputs = args["cfg"].input_dirs() if "cfg" in args else {}
    inputs.update({k: args[k] for k in ("run_dirs", "run_dir", "data_dir") if args.get(k)})
    return inputs


def holds_out_dir(fn: Callable) -> Callable:
    """Decorate a run (`fit(cfg)`, `blend(run_dirs, out_dir, ...)`): before it starts, its
    OUT_DIR (`cfg.out_dir` or `out_dir`) must not be one of its inputs (`check_out_dir`); from
    its `prepare_out_dir` to its end it holds OUT_DIR (`holding`), so a second run into the
    same folder stops at once (and a run refused on its inputs never touched OUT_DIR)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        bound = sig.bind(*args, **kwargs).arguments
        out = bound["out_dir"] if "out_dir" in bound else bound["cfg"].out_dir
        check_out_dir(out, _run_inputs(bound))
        with contextlib.ExitStack() as scope:
            _runs.append(scope)
            try:
                return fn(*args, **kwargs)
            finally:
                _runs.pop()
    return run


def _writable(out: Path) -> Path:
    """Create OUT_DIR and check it takes a file; an `OSError` names it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / ".write_test", "")
        (out / ".write_test").unlink()
    except OSError as err:
        raise OSError(err.errno, f"OUT_DIR is not writable ({err.strerror})", str(out)) from None
    return out


@contextlib.contextmanager
def holding(out_dir: str | Path) -> Iterator[Path]:
    """Hold OUT_DIR (created, writable) for one run (`atomic.exclusive`): a second process
    asking for it gets `atomic.FolderBusy` at once, naming the first one's pid and command."""
    out = _writable(Path(out_dir))
    with exclusive(out):
        yield out


def run_leftovers(out: Path, outputs: Sequence[str] = RUN_OUTPUTS) -> list[str]:
    """The names in `out` matching `outputs` (names or glob patterns), sorted; the notebook
    being executed into `out` (`EXECUTING_ENV`) is the current run's and left out."""
    executing = os.environ.get(EXECUTING_ENV)
    mine = Path(executing).resolve() if executing else None
    found = {p for pattern in outputs for p in out.glob(pattern)}
    return sorted(p.name for p in found if p.resolve() != mine)


def is_complete(names: Sequence[str]) -> bool:
    """Whether a run's outputs mark it complete (one of `COMPLETE_MARKS`, see the module doc)."""
    return any(name in COMPLETE_MARKS for name in names)


def prepare_out_dir(out_dir: str | Path, outputs: Sequence[str] = RUN_OUTPUTS) -> Path:
    """Make OUT_DIR ready for a run, before any work: create it, check it is writable, and move
    what an earlier run left (`outputs` that exist) aside: a complete run into
    OUT_DIR/previous/, an incomplete one into OUT_DIR/failed/ (see the module doc), so a stale
    submission.csv or figure never looks like this run's and the last complete run is kept.
    Temporaries of a killed run are deleted.

    Raises:
        OSError: OUT_DIR cannot be created or written, or an output cannot be moved (nothing
            moved then; `move_aside.MoveError` when undoing failed: it says what is where).
        atomic.FolderBusy: inside a `holds_out_dir` run, another process holds OUT_DIR.
    """
    out = _writable(Path(out_dir))
    if _runs:  # inside a `holds_out_dir` run: hold OUT_DIR until that run ends
        _runs[-1].enter_context(exclusive(out))
    finish_interrupted(out)  # a move cut by a kill: its files back first, then moved again
    clear_temporaries(out)
    stale = run_leftovers(out, outputs)
    if stale:
        complete = is_complete(stale)
        dest = move_aside(out, stale, PREVIOUS if complete else FAILED)
        if complete:
            log.warning("%s: moved the previous run's %s into %s", out, stale, dest)
        else:
            log.warning("%s: an earlier run did not complete (no %s); moved what it left, %s, "
                        "into %s%s", out, " or ".join(COMPLETE_MARKS), stale, dest,
                        f" ({PREVIOUS}/ keeps the last complete run)"
                        if (out / PREVIOUS).is_dir() else "")
    return out
