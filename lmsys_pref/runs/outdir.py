"""OUT_DIR of a run: one run at a time, never one of the run's inputs, no stale outputs.

- `holds_out_dir` (a decorator of `fit(cfg)`, `predict(cfg)`, `blend(run_dirs, out_dir)`, ...)
  refuses an OUT_DIR that is or contains an input (DATA_DIR, a blended run, the model folder)
  and holds OUT_DIR for the run's whole length: a second run into the same folder stops at
  once with an error naming the first run's process (`atomic.exclusive`).
- `prepare_out_dir` moves everything a previous run wrote (`RUN_OUTPUTS`: predictions,
  metrics, model, report, figures, logs, config) into OUT_DIR/previous/, so a re-run or a
  failed run never leaves an older file beside a newer one.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..files.atomic import exclusive, is_temporary, write_text
from ..configs import ConfigError

log = logging.getLogger("lmsys_pref")

# What a run may leave in OUT_DIR, figures, logs and configs included (resume state such as
# checkpoints/ and train_fingerprint.json is not an output: it stays for the next run).
REPORT_FIGURES = ("calibration.png", "confusion.png", "loss_by_length.png", "loss_by_turns.png")
RUN_OUTPUTS = ("submission.csv", "oof.csv", "val.csv", "metrics.json", "predict.json",
               "report.md", "report.json", "weights.json", "calibration.json", "model",
               "log_history.json", "loss.png", "config.yaml") + REPORT_FIGURES
PREVIOUS = "previous"
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


def prepare_out_dir(out_dir: str | Path, outputs: Sequence[str] = RUN_OUTPUTS) -> Path:
    """Make OUT_DIR ready for a run, before any work: create it, check it is writable, and move
    what a previous run left (`outputs` that exist) into OUT_DIR/previous/ (replacing an older
    one), so a stale submission.csv or figure never looks like this run's. Temporaries of a
    killed run are deleted.

    Raises:
        OSError: OUT_DIR cannot be created or written (the message names it).
        atomic.FolderBusy: inside a `holds_out_dir` run, another process holds OUT_DIR.
    """
    out = _writable(Path(out_dir))
    if _runs:  # inside a `holds_out_dir` run: hold OUT_DIR until that run ends
        _runs[-1].enter_context(exclusive(out))
    for leftover in filter(is_temporary, out.iterdir()):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    stale = [out / name for name in outputs if (out / name).exists()]
    if stale:
        previous = out / PREVIOUS
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for path in stale:
            os.replace(path, previous / path.name)
        log.warning("%s: moved the previous run's %s into %s", out, [p.name for p in stale],
                    previous)
    return out
