"""Kaggle kernel folders, their parameters and metadata, and the kaggle CLI commands run without
the CLI or credentials (wheels: test_kaggle_wheels.py; the offline stand-in:
test_kaggle_offline.py)."""
from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess
from pathlib import Path

import nbformat
import papermill as pm
import pytest
from packaging.requirements import Requirement

from lmsys_pref import runs
from lmsys_pref.cli import main as cli
from lmsys_pref.configs.encoder import EncoderConfig
from lmsys_pref.configs.predict import PredictConfig
from lmsys_pref.kaggle import commands as kaggle
from lmsys_pref.kaggle import kernels

ROOT = Path(__file__).resolve().parent.parent
USER = "alice-k"
LIVE = "llm-classification-finetuning"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Every kernel, built by the CLI `make kernels` runs."""
    out = tmp_path_factory.mktemp("kernels")
    assert cli(["kernels", "build", "--out-dir", str(out), "--username", USER]) == 0
    return out


def _cells(folder: Path, name: str) -> list:
    code = kernels.kernel_metadata(name, USER)["code_file"]
    return nbformat.read(str(folder / name / code), as_version=4).cells


MODEL_DATASETS = {"xgb-infer": "lmsys-pref-xgb-model", "roberta-infer": "lmsys-pref-roberta-model",
                  "gemma-infer": "lmsys-pref-gemma2-2b-model",
                  "llama-infer": "lmsys-pref-llama3-8b-model"}


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_kernel_folder(built, name):
    spec = kernels.KERNELS[name]
    folder = built / name
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    for key, typ in kernels.REQUIRED.items():
        assert isinstance(meta[key], typ), key
    assert meta["id"] == f"{USER}/lmsys-pref-{name}"
    assert meta["title"].lower().replace(" ", "-") == meta["id"].split("/")[1]
    assert (meta["language"], meta["kernel_type"]) == ("python", "notebook")
    assert meta["is_private"] is True and meta["enable_internet"] is False
    assert meta["enable_gpu"] is spec.gpu is (name.split("-")[0] != "xgb")
    assert meta["competition_sources"] == [LIVE]  # the default: the 2024 one is closed
    assert f"{USER}/lmsys-pref-wheels" in meta["dataset_sources"]
    if name in MODEL_DATASETS:
        assert f"{USER}/{MODEL_DATASETS[name]}" in meta["dataset_sources"]
    assert all(len(m.split("/")) == 5 for m in meta["model_sources"])
    kernels.validate_metadata(meta, folder)

    cells = _cells(built, name)
    nbformat.validate(nbformat.v4.new_notebook(cells=cells))
    tags = [c.metadata.get("tags", []) for c in cells]
    assert not any("injected-parameters" in t for t in tags)  # the defaults are the Kaggle values
    at = tags.index(["parameters"])
    assert tags[at + 1] == [kernels.INSTALL_TAG]
    before = "\n".join(c.source for c in cells[:at + 1])
    assert "import lmsys_pref" not in before and "from lmsys_pref" not in before
    params, install = cells[at].source, cells[at + 1].source
    assert "/kaggle/input" not in params.replace("under /kaggle/input", "")  # found, not fixed
    assert "data_dir = None  # None: found under /kaggle/input by its test.csv" in params
    assert 'out_dir = "/kaggle/working"' in params and 'tta = "swap"' in params
    assert "wheels_dir = None" in params
    assert ('devices = "cuda:0,cuda:1"' in params) is spec.gpu
    assert ('dtype = "fp16"' in params) is spec.gpu  # T4: fp16, no bf16
    assert ("time_limit_h = 9" in params) is (spec.gpu and name.endswith("-infer"))
    assert "--no-index" in install and "sys.version_info" in install
    assert install.index("discover(") < install.index('"pip", "install"')  # found, then installed
    assert "import lmsys_pref" not in install and "from lmsys_pref" not in install
    wanted = {"gemma-infer": "requirements-lm.txt", "llama-infer": "requirements-lm.txt",
              "roberta-train": "requirements-encoder.txt",
              "roberta-infer": "requirements-encoder.txt"}.get(name, "requirements.txt")
    assert f'"{wanted}"' in install
    assert all(not c.get("outputs") for c in cells if c.cell_type == "code")


def test_kernels_for_the_wsdm_cup_take_its_files_and_its_twelve_hours(tmp_path):
    wsdm = "wsdm-cup-multilingual-chatbot-arena"
    kernels.build_kernels(tmp_path, USER, ["gemma-infer", "xgb-train"], target=kernels.Target(wsdm))
    meta = json.loads((tmp_path / "gemma-infer" / kernels.METADATA).read_text())
    assert meta["competition_sources"] == [wsdm]
    params = _parameters(tmp_path, "gemma-infer")
    assert "time_limit_h = 12" in params  # the WSDM Cup's limit (the budget stops at 95 %)
    assert "data_dir = None  # None: found under /kaggle/input by its test.parquet" in params
    assert "time_limit_h" not in _parameters(tmp_path, "xgb-train")  # no scoring budget there


def _parameters(folder: Path, name: str) -> str:
    return next(c.source for c in _cells(folder, name)
                if "parameters" in c.metadata.get("tags", []))


def _namespace(cells) -> dict:
    ns: dict = {}
    for cell in cells:
        if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
            exec(cell.source, ns)
    return ns


def test_papermill_p_changes_only_what_it_names(built, tmp_path):
    src = built / "gemma-infer" / "lmsys-pref-gemma-infer.ipynb"
    assert pm.inspect_notebook(str(src))["model_dir"]["default"] == "None"
    out = tmp_path / "run.ipynb"
    pm.execute_notebook(str(src), str(out), parameters={"devices": "cpu", "data_dir": "/d"},
                        prepare_only=True, kernel_name="python3", progress_bar=False)
    ns = _namespace(nbformat.read(str(out), as_version=4).cells)
    assert (ns["devices"], ns["data_dir"]) == ("cpu", "/d")
    assert ns["model_dir"] is ns["model_id"] is ns["wheels_dir"] is ns["quantization"] is None
    assert (ns["tta"], ns["dtype"], ns["out_dir"]) == ("swap", "fp16", "/kaggle/working")


def test_gpu_kernels_force_fp16_through_a_config_field():
    gpu = {n: k for n, k in kernels.KERNELS.items() if k.gpu}
    assert set(gpu) == {"roberta-train", "roberta-infer", "gemma-infer", "llama-infer"}
    assert all(k.params["dtype"] == "fp16" for k in gpu.values())
    assert "dtype" in PredictConfig.field_names() and "dtype" in EncoderConfig.field_names()
    assert PredictConfig(dtype="fp16").dtype == "fp16"


def test_wheel_sets_per_kernel():
    sets = {n: k.wheel_set for n, k in kernels.KERNELS.items()}
    assert sets == {"xgb-train": "base", "xgb-infer": "base", "roberta-train": "encoder",
                    "roberta-infer": "encoder", "gemma-infer": "lm", "llama-infer": "lm"}


def test_username_from_env_or_error(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    assert kernels.check_username(None) == "bob"
    assert kernels.check_username("carol_1") == "carol_1"
    monkeypatch.delenv("KAGGLE_USERNAME")
    with pytest.raises(ValueError, match="KAGGLE_USERNAME"):
        kernels.check_username(None)
    with pytest.raises(ValueError, match="not valid"):
        kernels.check_username("a/b")


def test_parameter_missing_from_notebook_is_an_error(monkeypatch):
    spec = kernels.KERNELS["xgb-infer"]
    monkeypatch.setitem(kernels.KERNELS, "xgb-infer",
                        kernels.Kernel(spec.notebook, spec.summary, {"no_such_field": 1}))
    with pytest.raises(ValueError, match="no_such_field"):
        kernels.kernel_parameters("xgb-infer", {"data_dir", "out_dir"})
    with pytest.raises(ValueError, match="no assignment of"):
        kernels.kaggle_parameters_cell("data_dir = None\n", {"out_dir": "x"}, "xgb-infer")


# ---- the kaggle CLI commands, with a fake `kaggle` on PATH --------------------------------

@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setattr(kaggle, "SCRIPTS", tmp_path / "no-venv-bin")  # only PATH, unless a test
    return tmp_path


FAKE_KAGGLE = """#!/bin/sh
if [ "$1" = --version ]; then echo "Kaggle CLI ${{FAKE_VERSION:-1.8.4}}"; exit 0; fi
echo "$@" >> {log}
if [ "$2" = status ]; then exit ${{FAKE_STATUS_RC:-0}}; fi
if [ "$2" = output ] && [ -n "$FAKE_SUBMISSION" ]; then cp "$FAKE_SUBMISSION" "$5/"; fi
exit ${{FAKE_RC:-0}}
"""


@pytest.fixture
def fake_kaggle(no_credentials, monkeypatch) -> Path:
    """A `kaggle` that logs its arguments, with credentials set; returns the log file."""
    bin_dir, log = no_credentials / "bin", no_credentials / "kaggle-args.txt"
    bin_dir.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(FAKE_KAGGLE.format(log=log))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "k")
    return log


COMMANDS = [["push", "--kernel", "xgb-infer", "--out-dir", "{built}"],
            ["push-wheels", "--out-dir", "{built}/wheels", "--username", USER],
            ["push-model", "--run-dir", "{built}/run", "--username", USER],
            ["status", "--username", USER],
            ["output", "--kernel", "xgb-infer", "--out-dir", "{built}/out", "--username", USER]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_commands_stop_without_cli_or_credentials(built, no_credentials, monkeypatch, capsys,
                                                  argv):
    argv = ["kernels"] + [a.format(built=built) for a in argv]
    monkeypatch.setenv("PATH", str(no_credentials / "empty"))
    assert cli(argv) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "kaggle CLI is not installed" in out and ".[kaggle]" in out

    bin_dir = no_credentials / "bin"
    bin_dir.mkdir()
    (bin_dir / "kaggle").write_text("#!/bin/sh\nexit 3\n")
    (bin_dir / "kaggle").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli(argv) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no Kaggle credentials" in out


def test_push_kernel_runs_the_cli(built, fake_kaggle, monkeypatch):
    monkeypatch.setenv("FAKE_RC", "3")
    argv = ["kernels", "push", "--kernel", "xgb-infer", "--out-dir", str(built)]
    assert cli(argv) == 3  # the CLI's own exit status comes back
    assert fake_kaggle.read_text().split() == ["kernels", "push", "-p", str(built / "xgb-infer")]


def test_push_needs_a_cli_that_takes_kaggle_model_handles(tmp_path, fake_kaggle, monkeypatch,
                                                           capsys):
    """kaggle 1.8.0-1.8.3 reject the five-part model_sources handle a LoRA kernel attaches:
    push stops first, naming the floor; a kernel without a Kaggle Model does not ask."""
    gemma = kernels.build_kernel("gemma-infer", tmp_path, USER)
    monkeypatch.setenv("FAKE_VERSION", "1.8.3")
    assert kaggle.push(gemma) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "is 1.8.3" in out and 'install -U "kaggle>=1.8.4"' in out
    assert not fake_kaggle.exists()  # kernels push never ran
    assert kaggle.push(kernels.build_kernel("xgb-infer", tmp_path, USER)) == 0
    monkeypatch.setenv("FAKE_VERSION", "1.8.4")
    assert kaggle.push(gemma) == 0
    assert fake_kaggle.read_text().splitlines()[-1] == f"kernels push -p {gemma}"


def test_the_kaggle_extra_asks_for_1_8_4():
    """setup.cfg's `kaggle` extra: the floor that takes five-part model_sources handles."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    (line,) = [x for x in cfg["options.extras_require"]["kaggle"].split("\n") if x.strip()]
    req = Requirement(line)
    assert req.name == "kaggle" and kaggle.CLI_FLOOR == "1.8.4"
    assert req.specifier.contains("1.8.4") and not req.specifier.contains("1.8.3")


def test_the_cli_beside_this_python_is_found(no_credentials, monkeypatch):
    """`make` runs .venv/bin/python without the venv on PATH: its kaggle is found there."""
    bin_dir = no_credentials / "venv-bin"
    bin_dir.mkdir()
    (bin_dir / "kaggle").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "kaggle").chmod(0o755)
    monkeypatch.setenv("PATH", str(no_credentials / "empty"))
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle.kaggle_cli() is None
    monkeypatch.setattr(kaggle, "SCRIPTS", bin_dir)
    assert kaggle.kaggle_cli() == str(bin_dir / "kaggle")


def test_push_refuses_unbuilt_or_placeholder(tmp_path, fake_kaggle, capsys):
    assert kaggle.push(tmp_path / "nothing") == 2
    assert "make kernels" in capsys.readouterr().out
    folder = kernels.build_kernel("xgb-infer", tmp_path, kernels.PLACEHOLDER_USER)
    assert kaggle.push(folder) == 2
    assert "KAGGLE_USERNAME=<you>" in capsys.readouterr().out
    folder = kernels.build_kernel("xgb-infer", tmp_path / "alice", USER)
    assert kaggle.push(folder, "mallory") == 2
    assert f"built for {USER}, not mallory" in capsys.readouterr().out
    assert not fake_kaggle.exists()


def test_push_wheels_creates_then_versions(tmp_path, fake_kaggle, monkeypatch, capsys):
    folder = tmp_path / "wheels"
    assert cli(["kernels", "push-wheels", "--out-dir", str(folder), "--username", USER]) == 2
    assert "not fit to upload" in capsys.readouterr().out
    assert cli(["kernels", "wheels", "--no-deps", "--out-dir", str(folder),
                "--username", USER]) == 0
    monkeypatch.setenv("FAKE_STATUS_RC", "1")  # no such dataset yet
    assert cli(["kernels", "push-wheels", "--out-dir", str(folder), "--username", USER]) == 0
    monkeypatch.setenv("FAKE_STATUS_RC", "0")
    assert cli(["kernels", "push-wheels", "--out-dir", str(folder), "--username", USER,
                "--message", "3.12 wheels"]) == 0
    calls = fake_kaggle.read_text().splitlines()
    assert calls == [f"datasets status {USER}/lmsys-pref-wheels",
                     f"datasets create -p {folder} --dir-mode skip",
                     f"datasets status {USER}/lmsys-pref-wheels",
                     f"datasets version -p {folder} -m 3.12 wheels --dir-mode skip"]


def lm_run(folder: Path, model_id: str, **config) -> Path:
    """A run folder whose model/ says it is a LoRA run on `model_id`."""
    runs.write_model_meta(folder / "model", "lm", {"model_id": model_id, "lora_r": 16, **config})
    return folder


def test_push_model_names_the_dataset_after_the_base(tmp_path, fake_kaggle, capsys):
    model = lm_run(tmp_path / "run",
                   "/kaggle/input/gemma-2/transformers/gemma-2-2b-it/2") / "model"
    assert cli(["kernels", "push-model", "--run-dir", str(model.parent), "--username", USER]) == 0
    meta = json.loads((model / "dataset-metadata.json").read_text())
    assert meta["id"] == f"{USER}/lmsys-pref-gemma2-2b-model"
    assert fake_kaggle.read_text().splitlines()[-1] == f"datasets version -p {model} -m update " \
                                                       "--dir-mode zip"
    lm_run(tmp_path / "run", "google/gemma-2-9b-it", quantization="none")
    assert cli(["kernels", "push-model", "--run-dir", str(model), "--username", USER]) == 0
    assert json.loads((model / "dataset-metadata.json").read_text())["id"].endswith(
        "/lmsys-pref-gemma2-9b-model")  # not "gemma": gemma-infer must attach the 9B
    runs.save_json(model / runs.MODEL_META, {"kind": "lm", "config": {"model_id": "x/smollm2"}})
    assert cli(["kernels", "push-model", "--run-dir", str(model), "--username", USER]) == 2
    assert "--baseline" in capsys.readouterr().out
    assert cli(["kernels", "push-model", "--run-dir", str(model), "--username", USER,
                "--baseline", "llama"]) == 0
    assert json.loads((model / "dataset-metadata.json").read_text())["id"].endswith("llama-model")
    assert kaggle.model_name({"kind": "xgb"}) == "xgb"
    assert kaggle.model_name({"kind": "encoder", "config": {"model_id": "roberta-base"}}) == (
        "roberta")
    assert kaggle.model_name({"kind": "lm", "config": {"model_id": "pypi:gemma3_270m"}}) == "gemma"


def test_status_and_output(tmp_path, fake_kaggle, monkeypatch, capsys):
    assert cli(["kernels", "status", "--kernel", "gemma-infer", "--username", USER]) == 0
    assert fake_kaggle.read_text().split() == ["kernels", "status",
                                               f"{USER}/lmsys-pref-gemma-infer"]
    argv = ["kernels", "output", "--kernel", "gemma-infer", "--out-dir", str(tmp_path / "out"),
            "--username", USER]
    assert cli(argv) == 1
    assert "no submission.csv" in capsys.readouterr().out
    csv = tmp_path / "submission.csv"
    csv.write_text("id,winner_model_a,winner_model_b,winner_tie\n7,0.5,0.3,0.2\n9,0.2,0.2,0.6\n")
    monkeypatch.setenv("FAKE_SUBMISSION", str(csv))
    assert cli(argv) == 0
    assert "2 rows" in capsys.readouterr().out
    assert (tmp_path / "out" / "gemma-infer" / "submission.csv").exists()


def test_make_targets_go_through_the_cli(no_credentials):
    """One help line each; each runs `lmsys_pref kernels <verb>` and stops without the CLI."""
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True,
                               text=True).stdout
    targets = ["kernels", "kaggle-wheels", "push-wheels", "push-model", "push-kernel",
               "kernel-status", "kernel-output"]
    lines = {line.split()[0]: line for line in help_text.splitlines() if line.strip()}
    assert all(t in lines for t in targets), help_text
    verbs = {"push-wheels": "push-wheels", "push-model": "push-model", "push-kernel": "push",
             "kernel-status": "status", "kernel-output": "output", "kernels": "build"}
    for target, verb in verbs.items():
        dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", target, "KERNEL=xgb-infer",
                              "RUN_DIR=runs/x", "KAGGLE_USERNAME=bob"], cwd=ROOT,
                             capture_output=True, text=True).stdout
        assert f"-m lmsys_pref kernels {verb} " in dry and "--username bob" in dry, dry
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "kernels", f"COMPETITION={LIVE}",
                          "RUN_DIR=runs/x", "BASE_HANDLE=a/b/c/d/1"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert f"--competition {LIVE} --run-dir runs/x --base-handle a/b/c/d/1" in " ".join(
        dry.split()), dry
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "kernels"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert f"--competition {LIVE}" in dry, dry  # the live competition unless COMPETITION=
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "kernel-status",
                           "KAGGLE_USERNAME=bob"], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    assert done.returncode != 0 and "kaggle CLI is not installed" in done.stdout


def test_the_readme_walk_runs_as_written():
    """README "On Kaggle": every `make` line is a target that `make -n` accepts with exactly
    those variables, each KERNEL is a built kernel, and the data lands where DATA_DIR points."""
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    walk = text[text.index("## On Kaggle"):text.index("## Figures so far")]
    lines = [shlex.split(line.split(" #")[0]) for block in re.findall(r"```bash\n(.*?)```", walk,
                                                                     re.S)
             for line in block.splitlines() if line.strip()]
    makes = [argv[1:] for argv in lines if argv[0] == "make"]
    assert {a[0] for a in makes} >= {"kaggle-wheels", "push-wheels", "train-xgb", "train-gemma",
                                     "merge-folds", "push-model", "kernels", "push-kernel",
                                     "kernel-status", "kernel-output"}
    for argv in makes:
        dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", *argv], cwd=ROOT,
                             capture_output=True, text=True)
        assert dry.returncode == 0, (argv, dry.stderr)
        assert argv[0] == "install" or "-m lmsys_pref" in dry.stdout, (argv, dry.stdout)
        given = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
        assert given.get("KERNEL", "xgb-infer") in kernels.KERNELS
        assert given.get("COMPETITION", LIVE) == LIVE
    download = next(a for a in lines if a[:3] == [".venv/bin/kaggle", "competitions", "download"])
    folder = download[download.index("-p") + 1]
    unzip = next(a for a in lines if a[0] == "unzip")
    assert download[download.index("-c") + 1] == LIVE and unzip[-1] == folder
    assert unzip[-3] == f"{folder}/{LIVE}.zip"
    assert {a.split("=", 1)[1] for m in makes for a in m if a.startswith("DATA_DIR=")} == {folder}
