"""Execute a baseline's notebook with papermill: the one path behind `make train-*`, batch runs
and the notebook tests, so all three run the same code."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configs import ConfigError, params_help, parse_params

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = Path(os.environ.get("LMSYS_PREF_NOTEBOOKS", REPO / "notebooks"))


@dataclass(frozen=True)
class Baseline:
    """A trainable baseline: its notebook, its config class and its default preset."""

    notebook: str
    config: str  # "module:Class"
    preset: str | None = None

    def config_class(self):
        module, cls = self.config.split(":")
        return getattr(importlib.import_module(module), cls)


TRANSFORMER = "transformer.ipynb"
BASELINES = {
    "xgb": Baseline("xgboost.ipynb", "lmsys_pref.configs.xgb:XGBConfig", "xgb"),
    # one template for every transformer: the preset's kind picks LMConfig or EncoderConfig
    "gemma": Baseline(TRANSFORMER, "lmsys_pref.configs.lm:LMConfig", "gemma2-2b"),
    "llama": Baseline(TRANSFORMER, "lmsys_pref.configs.lm:LMConfig", "llama3-8b"),
    "roberta": Baseline(TRANSFORMER, "lmsys_pref.configs.encoder:EncoderConfig", "roberta-base"),
}


# tqdm.auto inside a kernel without ipywidgets warns that it falls back to text bars, which is
# what a papermill run wants (the bars stream to the terminal): that warning is noise here.
TERMINAL_ONLY_WARNINGS = "ignore:IProgress not found:Warning"
# Set in the kernels `execute` starts: their output goes to a file or a terminal, not a browser,
# so progress is text (train.loop swaps the Trainer's HTML progress for its text one).
HEADLESS_ENV = "LMSYS_PREF_HEADLESS"


class NotebookError(RuntimeError):
    """A notebook cell raised; the message carries the original error line."""


def notebook_parameters(baseline: str, data_dir: str | None, out_dir: str,
                        preset: str | None, params: dict[str, Any] | None) -> dict[str, Any]:
    """The papermill parameters of a run, checked against the baseline's config fields."""
    if baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {baseline!r}; known: {sorted(BASELINES)}")
    spec = BASELINES[baseline]
    fields = set(spec.config_class().field_names())
    params = dict(params or {})
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(f"baseline {baseline!r}: unknown parameter(s) {unknown}; "
                          f"known: {sorted(fields)}")
    values = {**params, "out_dir": str(out_dir)}
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    chosen = preset or spec.preset
    cfg = spec.config_class().from_preset(chosen, **values)  # typed: ConfigError, before any work
    out = {k: getattr(cfg, k) for k in values}  # converted values ("1e-4" -> 1e-4)
    if chosen is not None:
        out["preset"] = chosen
    return out


def run_notebook(baseline: str, out_dir: str | Path, data_dir: str | Path | None = None,
                 preset: str | None = None, params: dict[str, Any] | None = None,
                 progress: bool = True) -> Path:
    """Execute `notebooks/<baseline>.ipynb` into `out_dir`; returns the executed notebook's path.

    Relative `out_dir` and `data_dir` mean the caller's working directory, for the notebook and
    the outputs alike (the kernel gets absolute paths and runs in that directory too). OUT_DIR
    is held for the whole run (`runs.holding`: a second run into it stops at once) and may not
    be DATA_DIR; what an earlier run left there, its executed notebook included, is moved aside
    before the kernel starts (`runs.prepare_out_dir`). With `progress`, the kernel's stdout and
    stderr (Trainer progress bars, losses, eval lines, the run's log) stream to this terminal
    while the notebook runs.

    Raises:
        ConfigError: unknown baseline or parameter, or OUT_DIR is DATA_DIR (before anything
            runs).
        NotebookError: a cell failed; the message names the notebook and the error.
    """
    from .. import runs

    out_dir = Path(out_dir).absolute()
    data_dir = data_dir and Path(data_dir).absolute()
    params = notebook_parameters(baseline, data_dir and str(data_dir), str(out_dir), preset,
                                 params)
    runs.check_out_dir(out_dir, {"data_dir": data_dir})
    src = NOTEBOOK_DIR / BASELINES[baseline].notebook
    with runs.holding(out_dir):
        runs.prepare_out_dir(out_dir)  # an older run's notebook of the same name moves with it
        return execute(src, out_dir / src.name, params, stream=progress)


def execute(src: str | Path, dst: str | Path, params: dict[str, Any],
            stream: bool = False) -> Path:
    """Run the notebook `src` with papermill into `dst`, the kernel in our working directory.

    The kernel talks to us over IPC sockets in a private temporary folder (TCP on Windows):
    two runs started at once on one machine never share a socket, and nothing is written into
    the working directory or the repository.

    Args:
        src: the notebook; dst: the executed copy (its folder is created).
        params: papermill parameters (injected after the `parameters` cell).
        stream: copy the kernel's stdout/stderr to ours as it comes, instead of nothing.

    Raises:
        NotebookError: a cell failed; the message names the notebook and the error.
    """
    import papermill as pm

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _kernel_env(TERMINAL_ONLY_WARNINGS, dst), _private_transport() as transport:
            pm.execute_notebook(str(src), str(dst), parameters=params, progress_bar=False,
                                kernel_name="python3", cwd=os.getcwd(), config=transport,
                                stdout_file=sys.stdout if stream else None,
                                stderr_file=sys.stderr if stream else None)
    except pm.PapermillExecutionError as err:
        raise NotebookError(f"{Path(src).name} failed in cell {err.exec_count}: {err.ename}: "
                            f"{err.evalue} (executed notebook: {dst})") from None
    return dst


@contextlib.contextmanager
def _private_transport():
    """The kernel manager's config: IPC sockets named inside a fresh private folder (removed
    after), so concurrent kernels never pick the same `kernel-ipc-N` name in a shared
    directory; IPC rather than TCP, so ipykernel has no unencrypted-TCP warning to print."""
    from traitlets.config import Config

    if os.name == "nt":  # no IPC sockets on Windows: TCP on ports the OS picks
        yield Config({"KernelManager": {"transport": "tcp"}})
        return
    base = tempfile.gettempdir()
    base = base if len(base) < 60 else "/tmp"  # a socket path must stay under ~100 bytes
    folder = tempfile.mkdtemp(prefix="lmsys-kernel-", dir=base)
    try:
        yield Config({"KernelManager": {"transport": "ipc", "ip": str(Path(folder) / "k")}})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _kernel_env(filters: str, executing: Path):
    """Add `PYTHONWARNINGS` filters, `HEADLESS_ENV` and the executed notebook's path
    (`runs.EXECUTING_ENV`: the run's `prepare_out_dir` leaves it in place) for the kernels
    started inside the block (they copy our environment when they start); ours is restored
    after."""
    from ..runs import EXECUTING_ENV

    old = {k: os.environ.get(k) for k in ("PYTHONWARNINGS", HEADLESS_ENV, EXECUTING_ENV)}
    os.environ["PYTHONWARNINGS"] = ",".join(f for f in (old["PYTHONWARNINGS"], filters) if f)
    os.environ[HEADLESS_ENV] = "1"
    os.environ[EXECUTING_ENV] = str(executing.resolve())
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def train_parser(baseline: str | None = None, preset: str | None = None
                 ) -> argparse.ArgumentParser:
    """The `train` command's parser; with a baseline, its help lists every `-p` field (type,
    default from the preset, docstring) from the config class."""
    epilog = "`lmsys-pref train <baseline> --help` lists the baseline's parameters."
    if baseline in BASELINES:
        spec = BASELINES[baseline]
        chosen = preset or spec.preset
        cls = spec.config_class()
        epilog = params_help(cls, cls.from_preset(chosen).to_dict(), chosen)
    ap = argparse.ArgumentParser(prog="lmsys-pref train", epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Train a baseline by executing its notebook.")
    ap.add_argument("baseline", choices=sorted(BASELINES))
    ap.add_argument("--data-dir", default=None, help="folder with train.csv and test.csv")
    ap.add_argument("--out-dir", required=True, help="the run folder")
    ap.add_argument("--preset", default=None, help="a preset name or YAML file (default: the "
                    "baseline's: " + ", ".join(f"{k} {v.preset}" for k, v in BASELINES.items())
                    + ")")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="set a config field, repeatable (see below)")
    return ap


def preflight(baseline: str, params: dict[str, Any]) -> None:
    """Checks before the notebook starts: OUT_DIR writable and not DATA_DIR, the data files
    valid, `n_folds` possible on them (named errors in seconds, not after the kernel and the
    model have loaded)."""
    from .. import data, runs
    from ..data import labels

    cfg = BASELINES[baseline].config_class().from_preset(
        params.get("preset"), **{k: v for k, v in params.items() if k != "preset"})
    runs.check_out_dir(cfg.out_dir, {"data_dir": cfg.data_dir})
    runs.prepare_out_dir(cfg.out_dir)
    train = labels.load_training(cfg.data).train  # + soft labels, extra_train, teacher files
    data.check_n_folds(train, cfg.n_folds, str(data.find_file(cfg.data_dir, "train")),
                       cfg.group_by)


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref train <baseline> --out-dir D [--data-dir D] [--preset P] [-p k v]`."""
    if {"-h", "--help"} & set(argv):
        preset = argv[argv.index("--preset") + 1] if "--preset" in argv[:-1] else None
        train_parser(next((a for a in argv if a in BASELINES), None), preset).print_help()
        return 0
    from ..runs import check_out_dir, holding

    args = train_parser().parse_args(argv)
    t0 = time.time()
    params = notebook_parameters(args.baseline, args.data_dir, args.out_dir,
                                 args.preset or None, parse_params(args.param))
    check_out_dir(args.out_dir, {"data_dir": args.data_dir})  # before anything is written
    try:
        with holding(args.out_dir):  # from the checks to the last cell: one run per OUT_DIR
            preflight(args.baseline, params)
            nb = run_notebook(args.baseline, args.out_dir, args.data_dir, args.preset or None,
                              parse_params(args.param))
    except NotebookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"done in {time.time() - t0:.0f}s: {nb}")
    return 0


def eda_main(argv: list[str]) -> int:
    """`lmsys-pref eda --data-dir D --out-dir O [-p top_n 30]`: notebooks/eda.ipynb with
    papermill -> O/eda.ipynb plus its figures (PNG) and tables (CSV)."""
    import papermill as pm
    import yaml

    src = NOTEBOOK_DIR / "eda.ipynb"
    known = pm.inspect_notebook(str(src))
    ap = argparse.ArgumentParser(prog="lmsys-pref eda", description=eda_main.__doc__)
    ap.add_argument("--data-dir", required=True, help="folder with train.csv (or .parquet)")
    ap.add_argument("--out-dir", required=True, help="gets eda.ipynb, the figures and tables")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="a parameter of the notebook: " + ", ".join(
                        f"{k} ({v['inferred_type_name']}, {v['default']})"
                        for k, v in known.items() if k not in ("data_dir", "out_dir")))
    args = ap.parse_args(argv)
    # the notebook has no config class: a value is YAML (`5` -> 5, `true` -> True)
    params = {k: yaml.safe_load(v) for k, v in parse_params(args.param).items()}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"eda.ipynb: unknown parameter(s) {unknown}; known: {sorted(known)}")
    out_dir = Path(args.out_dir).resolve()  # what the user meant, whatever the kernel's cwd
    params.update(data_dir=str(Path(args.data_dir).resolve()), out_dir=str(out_dir))
    print(f"wrote {execute(src, out_dir / src.name, params, stream=True)}")
    return 0
