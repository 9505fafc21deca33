"""Kaggle from the command line: build the kernels and the wheels, upload, follow, fetch.

    python -m lmsys_pref kernels build        --out-dir kaggle_kernels/build --username ME
                                              [--competition llm-classification-finetuning]
                                              [--run-dir runs/gemma9b | --base-model ID]
    python -m lmsys_pref kernels wheels       --out-dir kaggle_kernels/build/wheels --username ME
    python -m lmsys_pref kernels push-wheels  --out-dir kaggle_kernels/build/wheels
    python -m lmsys_pref kernels push-model   --run-dir runs/gemma
    python -m lmsys_pref kernels push         --kernel gemma-infer --out-dir kaggle_kernels/build
    python -m lmsys_pref kernels status       [--kernel gemma-infer]
    python -m lmsys_pref kernels output       --kernel gemma-infer --out-dir kaggle_kernels/output

Every upload/status/output command runs the `kaggle` CLI (`pip install -e ".[kaggle]"`, found on
PATH or beside this Python, so `make` needs no activated venv) and stops first, with one line
saying what is missing, when the CLI, the credentials or the username are. A kernel attaching a
Kaggle Model needs CLI >= 1.8.4: 1.8.0-1.8.3 reject its five-part `model_sources` handle.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

from .. import runs
from ..runs import submission
from . import kernels, wheels
from .kernels import KERNELS, METADATA, PLACEHOLDER_USER
from .layout import BASE_HANDLES, BASE_NAMES, COMPETITIONS, DEFAULT_COMPETITION, base_of

MODEL_BASELINES = {"xgb": "xgb", "encoder": "roberta"}  # run kind -> kernel family; lm: by name
MODEL_NAMES = ("xgb", "roberta", "gemma", "llama")  # the kernel families
SCRIPTS = Path(sys.executable).parent  # the venv's bin/: `make` runs without it on PATH
CLI_FLOOR = "1.8.4"  # kaggle 1.8.0-1.8.3 reject model_sources not written `owner/model-slug`


def credentials_found() -> bool:
    """Kaggle API credentials in the environment or in the kaggle config folder."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME")
                                              and os.environ.get("KAGGLE_KEY")):
        return True
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config / "kaggle.json").exists() or (config / "access_token").exists()


def kaggle_cli() -> str | None:
    """Path of the kaggle CLI when it and the credentials are there; else prints why, None."""
    exe = shutil.which("kaggle") or shutil.which("kaggle", path=str(SCRIPTS))
    if exe is None:
        print('error: the kaggle CLI is not installed: `.venv/bin/pip install -e ".[kaggle]"`')
    elif not credentials_found():
        print("error: no Kaggle credentials: put your API token in ~/.kaggle/kaggle.json "
              "(kaggle.com > Settings > API > Create New Token) or set KAGGLE_USERNAME and "
              "KAGGLE_KEY")
    else:
        return exe
    return None


def _user(username: str | None) -> str | None:
    """The real Kaggle username, or None after printing why there is none."""
    try:
        username = kernels.check_username(username)
    except ValueError as err:
        print(f"error: {err}")
        return None
    if username == PLACEHOLDER_USER:
        print("error: no Kaggle username: pass KAGGLE_USERNAME=<you> (or put your API token in "
              "~/.kaggle/kaggle.json)")
        return None
    return username


def cli_too_old(exe: str) -> str:
    """A one-line error when the kaggle CLI `exe` is older than CLI_FLOOR ('' when it is not, or
    does not say its version)."""
    done = subprocess.run([exe, "--version"], capture_output=True, text=True)
    found = re.search(r"\d+(?:\.\d+)+", done.stdout + done.stderr)
    if found is None or Version(found[0]) >= Version(CLI_FLOOR):
        return ""
    return (f"error: the kaggle CLI at {exe} is {found[0]}, which rejects a Kaggle Model handle "
            f"in model_sources (fixed in {CLI_FLOOR}): "
            f'`.venv/bin/pip install -U "kaggle>={CLI_FLOOR}"`')


def push(folder: str | Path, username: str | None = None) -> int:
    """`kaggle kernels push -p <folder>`; returns its exit status (2 when it cannot start).

    `username` (optional) must own the built kernel; the placeholder user never pushes.
    """
    folder, exe = Path(folder), kaggle_cli()
    if exe is None:
        return 2
    if not (folder / METADATA).exists():
        print(f"error: {folder / METADATA} not found; build it first with `make kernels`")
        return 2
    meta = kernels.validate_metadata(json.loads((folder / METADATA).read_text()), folder)
    owner = meta["id"].split("/")[0]
    if owner == PLACEHOLDER_USER:
        print(f"error: {folder} was built for the placeholder user; rebuild with "
              "`make kernels KAGGLE_USERNAME=<you>`")
        return 2
    if username and username not in (owner, PLACEHOLDER_USER):
        print(f"error: {folder} was built for {owner}, not {username}; rebuild with "
              f"`make kernels KAGGLE_USERNAME={username}`")
        return 2
    old = cli_too_old(exe) if meta["model_sources"] else ""
    if old:
        print(old)
        return 2
    return subprocess.run([exe, "kernels", "push", "-p", str(folder)]).returncode


def push_dataset(exe: str, folder: Path, message: str, dir_mode: str = "skip") -> int:
    """Create the dataset of `folder/dataset-metadata.json`, or a new version when it exists."""
    dataset = json.loads((folder / "dataset-metadata.json").read_text())["id"]
    found = subprocess.run([exe, "datasets", "status", dataset], capture_output=True)
    exists = found.returncode == 0
    cmd = ([exe, "datasets", "version", "-p", str(folder), "-m", message] if exists
           else [exe, "datasets", "create", "-p", str(folder)])
    print(f"{'new version of' if exists else 'creating'} dataset {dataset}")
    return subprocess.run(cmd + ["--dir-mode", dir_mode]).returncode


def push_wheels(folder: str | Path, username: str | None, message: str) -> int:
    """Upload the wheels folder as <you>/lmsys-pref-wheels, after checking its rules."""
    folder, username = Path(folder), _user(username)
    exe = kaggle_cli() if username else None
    if exe is None:
        return 2
    problems = wheels.check_wheel_set(folder)
    if problems:
        print(f"error: {folder} is not fit to upload ({problems[0]}); run `make kaggle-wheels`")
        return 2
    meta = wheels.dataset_metadata(username)
    if json.loads((folder / "dataset-metadata.json").read_text())["id"] != meta["id"]:
        runs.save_json(folder / "dataset-metadata.json", meta)
    print(wheels.summary(folder))
    return push_dataset(exe, folder, message)


def model_baseline(meta: dict) -> str:
    """Which kernel family (xgb, roberta, gemma, llama) a saved model's metadata belongs to."""
    if meta.get("kind") in MODEL_BASELINES:
        return MODEL_BASELINES[meta["kind"]]
    text = json.dumps(meta.get("config", {})).lower()
    found = [name for name in ("gemma", "llama") if name in text]
    if meta.get("kind") != "lm" or len(found) != 1:
        raise ValueError(f"cannot tell which kernel scores this {meta.get('kind')} model; pass "
                         "--baseline xgb|roberta|gemma|llama (make push-model MODEL_BASELINE=)")
    return found[0]


def model_name(meta: dict) -> str:
    """The name in a saved model's dataset slug: its base for a LoRA run on a base of the table
    (`gemma2-9b`, so `gemma-infer` meets the base it was trained on), else its family."""
    family = model_baseline(meta)
    model_id = str(meta.get("config", {}).get("model_id", ""))
    return kernels.base_name(model_id, family) if meta.get("kind") == "lm" else family


def build_target(args: argparse.Namespace) -> kernels.Target:
    """The competition and base of `kernels build`: --base-model, else the base of --run-dir's
    saved model (the base follows the run)."""
    base = args.base_model or ""
    if args.run_dir and not base:
        meta = runs.read_model_meta(args.run_dir)
        model_id = str(meta.get("config", {}).get("model_id", ""))
        base = base_of(model_id, BASE_HANDLES) if meta.get("kind") == "lm" else ""
        if meta.get("kind") == "lm" and not base and not args.base_handle:
            raise ValueError(f"{args.run_dir}: its base {model_id!r} is not in the table "
                             f"({', '.join(BASE_HANDLES)}); pass --base-model and --base-handle")
        base = base or (model_id if args.base_handle else "")
    return kernels.check_target(kernels.Target(args.competition, base, args.base_handle or ""))


def push_model(run_dir: str | Path, username: str | None, baseline: str | None,
               message: str) -> int:
    """Upload a run's model/ as <you>/lmsys-pref-<name>-model (the inference kernels' input):
    `name` is the run's base (gemma2-9b) or family (xgb, roberta; `baseline` overrides it).

    Writes dataset-metadata.json into the model folder; subfolders are uploaded zipped (Kaggle
    unpacks them).
    """
    username = _user(username)
    exe = kaggle_cli() if username else None
    if exe is None:
        return 2
    try:
        model_dir = runs.resolve_model_dir(run_dir)
        baseline = baseline or model_name(runs.read_model_meta(model_dir))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 2
    name = kernels.model_dataset(baseline)
    runs.save_json(model_dir / "dataset-metadata.json",
                   {"title": name, "id": f"{username}/{name}", "licenses": [{"name": "other"}],
                    "subtitle": f"lmsys_pref {baseline} model (model/ of a run folder)"})
    return push_dataset(exe, model_dir, message, dir_mode="zip")


def status(names: list[str], username: str | None) -> int:
    """`kaggle kernels status` of each kernel; the worst exit status."""
    username = _user(username)
    exe = kaggle_cli() if username else None
    if exe is None:
        return 2
    codes = [subprocess.run([exe, "kernels", "status", f"{username}/{kernels.slug(n)}"]).returncode
             for n in names]
    return max(codes)


def output(name: str, out_dir: str | Path, username: str | None) -> int:
    """Download kernel `name`'s output into out_dir/<name>/ and check its submission.csv."""
    username = _user(username)
    exe = kaggle_cli() if username else None
    if exe is None:
        return 2
    dest = Path(out_dir) / name
    dest.mkdir(parents=True, exist_ok=True)
    code = subprocess.run([exe, "kernels", "output", f"{username}/{kernels.slug(name)}",
                           "-p", str(dest)]).returncode
    if code:
        return code
    path = dest / "submission.csv"
    if not path.exists():
        print(f"error: the kernel's output has no submission.csv (see {dest}); has it finished? "
              f"`make kernel-status KERNEL={name}`")
        return 1
    sub = submission.read(path)
    submission.validate(sub, sub["id"], str(path))
    print(f"{path}: {len(sub)} rows, submit it from the kernel's page (Output > Submit)")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lmsys_pref kernels", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="kernel folders with kernel-metadata.json")
    b.add_argument("--kernel", action="append", choices=sorted(KERNELS),
                   help="only this kernel (repeatable; default all)")
    b.add_argument("--public", action="store_true", help="is_private false")
    b.add_argument("--competition", default=DEFAULT_COMPETITION, choices=COMPETITIONS,
                   help=f"competition slug (default {DEFAULT_COMPETITION})")
    b.add_argument("--run-dir", help="the run the LoRA kernel scores: its base is attached")
    b.add_argument("--base-model", help="model_id of the LoRA kernel's base (default: the "
                   "run's, else gemma-2-2b-it / Meta-Llama-3-8B-Instruct)")
    b.add_argument("--base-handle", help="Kaggle Models handle of that base, replacing the "
                   "table's (owner/model/framework/variation/version)")
    w = sub.add_parser("wheels", help="the offline wheels dataset folder")
    w.add_argument("--no-deps", action="store_true", help="only the lmsys_pref wheel, offline")
    w.add_argument("--python-version", action="append", default=None,
                   help=f"CPython of the wheels, repeatable or comma list (default "
                        f"{','.join(wheels.PYTHON_VERSIONS)}, the Kaggle image's)")
    w.add_argument("--glibc", default=wheels.GLIBC, help="oldest glibc of the target system")
    p = sub.add_parser("push", help="kaggle kernels push -p <out-dir>/<kernel>")
    pw = sub.add_parser("push-wheels", help="upload the wheels folder (new version if it exists)")
    pm = sub.add_parser("push-model", help="upload a run's model/ as <you>/lmsys-pref-<n>-model")
    pm.add_argument("--run-dir", required=True, help="OUT_DIR of a train run, or its model/")
    pm.add_argument("--baseline", choices=[*MODEL_NAMES, *BASE_NAMES.values()],
                    help="the name in the dataset slug (default: the saved run's base or family)")
    st = sub.add_parser("status", help="kaggle kernels status of the pushed kernels")
    st.add_argument("--kernel", action="append", choices=sorted(KERNELS), help="default all")
    o = sub.add_parser("output", help="download a kernel's output (submission.csv)")
    for parser in (p, o):
        parser.add_argument("--kernel", required=True, choices=sorted(KERNELS))
    for parser in (pw, pm):
        parser.add_argument("--message", default="update", help="version notes")
    for parser in (b, w, p, pw, o):
        parser.add_argument("--out-dir", required=True)
    for parser in (b, w, p, pw, pm, st, o):
        parser.add_argument("--username", default=None, help="Kaggle user (or $KAGGLE_USERNAME)")
    return ap


def cli_main(argv: list[str]) -> int:
    """`python -m lmsys_pref kernels <command> ...`."""
    args = _parser().parse_args(argv)
    if args.cmd == "build":
        for folder in kernels.build_kernels(args.out_dir, args.username, args.kernel,
                                            not args.public, build_target(args)):
            print(f"built {folder}")
    elif args.cmd == "wheels":
        versions = wheels.parse_python_versions(args.python_version or wheels.PYTHON_VERSIONS)
        out = wheels.build_wheels(args.out_dir, kernels.check_username(args.username),
                                  python_versions=versions, glibc=args.glibc,
                                  no_deps=args.no_deps)
        print(f"{wheels.summary(out)}\nupload: make push-wheels")
    elif args.cmd == "push":
        return push(Path(args.out_dir) / args.kernel, args.username)
    elif args.cmd == "push-wheels":
        return push_wheels(args.out_dir, args.username, args.message)
    elif args.cmd == "push-model":
        return push_model(args.run_dir, args.username, args.baseline, args.message)
    elif args.cmd == "status":
        return status(args.kernel or list(KERNELS), args.username)
    else:
        return output(args.kernel, args.out_dir, args.username)
    return 0
