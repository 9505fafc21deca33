"""The GPU path's decisions, checked on CPU: one device per process, no KV cache when scoring,
dtype and attention kernel per device, no copies of quantized models."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.infer import devices, engine
from lmsys_pref.infer.batching import collate
from lmsys_pref.model import models, precision
from lmsys_pref.train import loop


@pytest.fixture
def two_gpu_host(monkeypatch):
    """A host that reports two CUDA devices (capability 7.5, as Kaggle's T4s)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    for var in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_trainer_uses_the_one_device_it_was_given(two_gpu_host, tmp_path):
    cfg = LMConfig.from_preset("tiny-llama", dtype="fp32", batch_size=3, grad_accum=2)
    plain = TrainingArguments(output_dir=str(tmp_path / "plain"), per_device_train_batch_size=3,
                              report_to="none")
    assert plain.n_gpu == 2 and plain.train_batch_size == 6  # what the fake host would cause
    args = loop.training_args(cfg, tmp_path, "cuda:1")
    assert args.n_gpu == 1  # so the Trainer does not wrap the model in DataParallel
    assert args.device == torch.device("cuda:1")
    assert args.train_batch_size == 3 and args.gradient_accumulation_steps == 2


def test_cpu_training_arguments_stay_on_the_cpu(tmp_path):
    args = loop.training_args(LMConfig.from_preset("tiny-llama"), tmp_path, "cpu")
    assert args.device == torch.device("cpu") and args.n_gpu == 0
    assert not args.bf16 and not args.fp16  # no autocast on CPU: the head casts its input


def test_dtype_auto_is_bf16_only_with_bf16_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # counts emulation
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert precision.resolve_dtype("auto", "cuda:0") == torch.float16  # T4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert precision.resolve_dtype("auto", "cuda:0") == torch.bfloat16  # A100, H100
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_dtype("bfloat16") == torch.bfloat16
    assert precision.resolve_dtype("float16") == torch.float16


def test_attention_choice_per_device(monkeypatch):
    gemma = LMConfig.from_preset("tiny-gemma2")
    conf = models._base_config(gemma, models.load_tokenizer(gemma.model_id), None, None)
    assert precision.choose_attention("auto", conf, "cpu") == "eager"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert precision.choose_attention("", conf, "cuda:0") == "eager"  # T4: no fast soft-capping
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert precision.choose_attention("auto", conf, "cuda:0") in ("flex_attention",
                                                                   "flash_attention_2")
    assert precision.choose_attention("sdpa", conf, "cuda:0") == "sdpa"  # as given
    llama = LMConfig.from_preset("tiny-llama")
    conf = models._base_config(llama, models.load_tokenizer(llama.model_id), None, None)
    assert precision.choose_attention("auto", conf, "cuda:0") is None  # library default, SDPA


def gemma_logits(attn: str, dtype: str) -> torch.Tensor:
    """Logits of a tiny Gemma-2 whose attention soft-capping really bites (cap 0.5)."""
    cfg = LMConfig.from_preset("tiny-gemma2", dtype=dtype, attn_implementation=attn,
                               random_init={**LMConfig.from_preset("tiny-gemma2").random_init,
                                            "attn_logit_softcapping": 0.5})
    tok = models.load_tokenizer(cfg.model_id)
    model = models.load_base(cfg, tok, "cpu")
    assert model.config._attn_implementation == attn
    torch.nn.init.normal_(model.score.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    rows = [tok("a cat sat on the mat " * k)["input_ids"] for k in (2, 5, 11)]
    ids, mask = collate(rows, tok.pad_token_id, "cpu")
    return engine.run_model(model, ids, mask).logits.float()


OLD_TORCH = tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 11)


# torch 2.8's inductor fails to compile flex_attention's CPU kernel (a C++ error); `auto` never
# picks flex_attention on a CPU, and GPUs use its Triton kernel
@pytest.mark.skipif(OLD_TORCH, reason="flex_attention on CPU needs torch >= 2.11")
def test_the_fast_soft_capping_kernel_matches_eager():
    fp32 = gemma_logits("eager", "fp32"), gemma_logits("flex_attention", "fp32")
    torch.testing.assert_close(fp32[1], fp32[0], atol=1e-4, rtol=1e-4)  # exact kernel
    bf16 = gemma_logits("eager", "bf16"), gemma_logits("flex_attention", "bf16")
    torch.testing.assert_close(bf16[1], bf16[0], atol=0.1, rtol=0.05)  # bf16 rounding only
    assert (fp32[0] - bf16[0]).abs().max() > 0  # the two precisions really differ


def test_scoring_builds_no_kv_cache():
    cfg = LMConfig.from_preset("tiny-gemma2")
    model, tok = models.build(cfg, "cpu")  # a PeftModel: its forward hides use_cache
    model.eval()
    model.get_base_model().config.use_cache = True  # as a checkpoint's config says
    ids, mask = collate([tok("hello world")["input_ids"]] * 2, tok.pad_token_id, "cpu")
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask)
    assert plain.past_key_values is not None  # without the flag a cache is built
    assert engine.run_model(model, ids, mask).past_key_values is None


def test_a_loaded_model_has_the_cache_off_and_named_labels():
    cfg = LMConfig.from_preset("tiny-llama")
    model = models.load_base(cfg, models.load_tokenizer(cfg.model_id), "cpu")
    assert model.config.use_cache is False
    assert model.config.id2label == {0: "winner_model_a", 1: "winner_model_b", 2: "winner_tie"}


def test_a_quantized_model_is_never_deep_copied_to_another_device():
    model = torch.nn.Linear(2, 2)
    model.is_quantized = True
    with pytest.raises(ValueError, match="load one replica per device"):
        devices.replicate(model, [torch.device("cpu"), torch.device("meta")])
    assert devices.replicate(model, [torch.device("cpu")] * 2) == [model, model]
