"""The GPU path's decisions, checked on CPU: one device per process, no KV cache when scoring,
dtype and attention kernel per device, no copies of quantized models."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import TrainingArguments

from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.infer import devices, engine
from lmsys_pref.infer.batching import collate
from lmsys_pref.model import loading, models, precision
from lmsys_pref.train import loop, outputs


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


class DeviceEcho(torch.nn.Module):
    """A replica 'on' `device` (really on the CPU) that records which thread scores it."""

    def __init__(self, device: str, events: list):
        super().__init__()
        self.device, self.events = torch.device(device), events

    def forward(self, input_ids, attention_mask):
        self.events.append((threading.current_thread().name, "batch", self.device))
        return torch.zeros(len(input_ids), 3)


def test_each_cuda_worker_makes_its_device_current_before_its_first_batch(two_gpu_host,
                                                                          monkeypatch):
    """A new thread's current CUDA device is cuda:0, where bitsandbytes would launch the
    kernels of a replica on cuda:1: each worker sets its own device first; CPU workers none."""
    events = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: events.append(
        (threading.current_thread().name, "set", torch.device(device))))
    on_cpu = engine.collate  # the batches stay on the CPU: no real GPU here
    monkeypatch.setattr(engine, "collate", lambda rows, pad, device, shapes: on_cpu(
        rows, pad, "cpu", shapes))
    rows = [[1] * n for n in range(3, 60)]
    replicas = [DeviceEcho(d, events) for d in ("cuda:0", "cuda:1")]
    probs = engine.predict_ids(replicas, rows, pad_id=0, token_budget=64,
                               devices="cuda:0,cuda:1", progress=False)
    assert probs.shape == (len(rows), 3)
    by_thread: dict = {}
    for thread, kind, device in events:
        by_thread.setdefault(thread, []).append((kind, device))
    assert sorted(str(seq[0][1]) for seq in by_thread.values()) == ["cuda:0", "cuda:1"]
    for seq in by_thread.values():  # set first, then only batches of that device's replica
        assert seq[0][0] == "set" and {d for _, d in seq} == {seq[0][1]}, seq
    assert sum(kind == "batch" for _, kind, _ in events) > 2
    events.clear()
    engine.predict_ids(DeviceEcho("cpu", events), rows, pad_id=0, devices="cpu,cpu",
                       progress=False)
    assert events and all(kind == "batch" for _, kind, _ in events)


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
    conf = models._base_config(gemma.model, models.load_tokenizer(gemma.model_id), None, None)
    assert precision.choose_attention("auto", conf, "cpu") == "eager"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert precision.choose_attention("", conf, "cuda:0") == "eager"  # T4: no fast soft-capping
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert precision.choose_attention("auto", conf, "cuda:0") in ("flex_attention",
                                                                   "flash_attention_2")
    assert precision.choose_attention("sdpa", conf, "cuda:0") == "sdpa"  # as given
    llama = LMConfig.from_preset("tiny-llama")
    conf = models._base_config(llama.model, models.load_tokenizer(llama.model_id), None, None)
    assert precision.choose_attention("auto", conf, "cuda:0") is None  # library default, SDPA


def gemma_logits(attn: str, dtype: str, cap: float | None = 0.5, sharpen: float = 1.0
                 ) -> torch.Tensor:
    """Logits of a tiny Gemma-2 whose attention soft-capping really bites (cap 0.5);
    `sharpen` scales the query and key weights (larger scores)."""
    cfg = LMConfig.from_preset("tiny-gemma2", dtype=dtype, attn_implementation=attn,
                               random_init={**LMConfig.from_preset("tiny-gemma2").random_init,
                                            "attn_logit_softcapping": cap})
    tok = models.load_tokenizer(cfg.model_id)
    model = models.load_base(cfg.model, tok, "cpu")
    assert model.config._attn_implementation == attn.replace("_nocap", "")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(sharpen)
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
    model, tok = models.build(cfg.model, "cpu")  # a PeftModel: its forward hides use_cache
    model.eval()
    model.get_base_model().config.use_cache = True  # as a checkpoint's config says
    ids, mask = collate([tok("hello world")["input_ids"]] * 2, tok.pad_token_id, "cpu")
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask)
    assert plain.past_key_values is not None  # without the flag a cache is built
    assert engine.run_model(model, ids, mask).past_key_values is None


def test_a_loaded_model_has_the_cache_off_and_named_labels():
    cfg = LMConfig.from_preset("tiny-llama")
    model = models.load_base(cfg.model, models.load_tokenizer(cfg.model_id), "cpu")
    assert model.config.use_cache is False
    assert model.config.id2label == {0: "winner_model_a", 1: "winner_model_b", 2: "winner_tie"}


def test_a_quantized_model_is_never_deep_copied_to_another_device():
    model = torch.nn.Linear(2, 2)
    model.is_quantized = True
    with pytest.raises(ValueError, match="load one replica per device"):
        devices.replicate(model, [torch.device("cpu"), torch.device("meta")])
    assert devices.replicate(model, [torch.device("cpu")] * 2) == [model, model]


def test_flash_attn_without_soft_capping_is_never_chosen(monkeypatch):
    """flash-attn < 2.6 has no `softcap`: `auto` must fall back to flex_attention."""
    gemma = LMConfig.from_preset("tiny-gemma2")
    conf = models._base_config(gemma.model, models.load_tokenizer(gemma.model_id), None, None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(precision.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else None)
    for version, want in (("2.5.9", "flex_attention"), ("2.6.3", "flash_attention_2"),
                          ("3.0.0b1", "flash_attention_2")):
        monkeypatch.setattr(precision.importlib.metadata, "version", lambda name: version)
        assert precision.choose_attention("auto", conf, "cuda:0") == want, version


def test_sdpa_nocap_drops_the_soft_cap_only_when_asked():
    gemma = LMConfig.from_preset("tiny-gemma2")
    conf = models._base_config(gemma.model, models.load_tokenizer(gemma.model_id), None, None)
    assert precision.choose_attention("auto", conf, "cpu") != precision.NOCAP  # never silent
    nocap = gemma_logits(precision.NOCAP, "fp32", sharpen=30)
    capped = gemma_logits("eager", "fp32", sharpen=30)
    assert (nocap - capped).abs().max() > 1e-2  # a cap of 0.5 bites: the scores move
    torch.testing.assert_close(nocap, gemma_logits("eager", "fp32", cap=None, sharpen=30),
                               atol=1e-5, rtol=1e-5)  # = exact attention without the cap
    cfg = LMConfig.from_preset("tiny-gemma2", attn_implementation=precision.NOCAP)
    model = models.load_base(cfg.model, models.load_tokenizer(cfg.model_id), "cpu")
    assert models.describe(model)["attn_implementation"] == "sdpa_nocap"
    assert model.config.attn_logit_softcapping is None  # a saved full model reloads uncapped


def test_pissa_on_a_quantized_base_is_refused_when_the_config_is_built():
    from lmsys_pref.configs import ConfigError

    for quant in ("4bit", "8bit"):
        with pytest.raises(ConfigError, match="'lora_init'.*'quantization'"):
            LMConfig.from_preset("tiny-llama", lora_init="pissa_niter_4", quantization=quant)
    LMConfig.from_preset("tiny-llama", lora_init="pissa", quantization="none")
    LMConfig.from_preset("tiny-llama", lora_init="default", quantization="4bit")


def test_the_adapter_is_loaded_on_the_device_of_its_replica(tmp_path, monkeypatch):
    """peft stages an adapter on its default device (cuda:0) unless told `torch_device`."""
    from peft import PeftModel

    cfg = LMConfig.from_preset("tiny-llama")
    model, tok = models.build(cfg.model)
    models.save(model, tok, cfg, tmp_path / "model")
    seen, load = [], PeftModel.load_adapter

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("torch_device"))
        return load(self, *args, **kwargs)

    monkeypatch.setattr(PeftModel, "load_adapter", spy)
    loading.load_for_inference(tmp_path / "model", "cpu")
    assert seen == ["cpu"]


def matmul_dtypes(model, tok) -> dict:
    """(input, weight, output) dtypes that a LoRA A and B layer and the head saw in one
    scoring forward pass."""
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = (args[0].dtype, next(module.parameters()).dtype, out.dtype)
        return hook

    for name, module in model.named_modules():
        for part in ("lora_A", "lora_B"):
            if name.endswith(f"{part}.default") and part not in seen:
                seen[part] = None
                module.register_forward_hook(record(part))
    model.base_model.model.score.modules_to_save["default"].register_forward_hook(record("head"))
    ids, mask = collate([tok("a cat sat on the mat")["input_ids"]] * 2, tok.pad_token_id, "cpu")
    engine.run_model(model, ids, mask)
    return seen


@pytest.fixture
def bf16_adapter(tmp_path):
    """A bf16 tiny Llama LoRA run's saved model/ (base saved too, so it can load in 8-bit)."""
    shape = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,  # bnb's CPU
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}  # >= 32
    cfg = LMConfig.from_preset("tiny-llama", random_init=shape, lora_r=0)
    tok = models.load_tokenizer(cfg.model_id)
    models.load_base(cfg.model, tok).save_pretrained(tmp_path / "base")
    cfg = LMConfig.from_preset("tiny-llama", model_id=str(tmp_path / "base"), random_init={},
                               tokenizer_id=cfg.model_id, dtype="bf16")
    model, tok = models.build(cfg.model)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    models.save(model, tok, cfg, tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize("quantization", ["none", "8bit"])
def test_the_adapter_scores_in_the_bodys_dtype_and_the_head_in_fp32(bf16_adapter,
                                                                     quantization):
    """peft loads adapters in fp32; scoring runs them in the body's bf16 (an 8-bit body's
    int8 weights give peft no dtype: the compute dtype is used), the head stays fp32."""
    if quantization != "none":
        pytest.importorskip("bitsandbytes")
    model, tok, _ = loading.load_for_inference(bf16_adapter, "cpu", quantization=quantization)
    seen = matmul_dtypes(model, tok)
    bf16, fp32 = torch.bfloat16, torch.float32
    assert seen["lora_A"] == seen["lora_B"] == (bf16, bf16, bf16)
    assert seen["head"] == (bf16, fp32, fp32)  # hidden states in; fp32 weights and logits
    model, tok, _ = loading.load_for_inference(bf16_adapter, "cpu", dtype="fp32")
    seen = matmul_dtypes(model, tok)  # fp32 stays fp32
    assert seen["lora_A"] == seen["lora_B"] == seen["head"] == (fp32, fp32, fp32)


def test_several_devices_release_the_trained_model_before_loading_replicas(tmp_path,
                                                                         monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
    model.is_quantized = True  # cannot move to the CPU: its memory must be dropped in place
    held = []

    class Replicas:
        def __init__(self, model_dir, devices):
            held.append(sum(t.numel() for t in [*model.parameters(), *model.buffers()]))

        def predict_proba(self, df):
            return np.full((len(df), 3), 1 / 3)

    monkeypatch.setattr(outputs.predictor, "LMPredictor", Replicas)
    cfg = LMConfig.from_preset("tiny-llama", devices="cpu,cpu")
    probs = outputs.score_test(cfg, model, None, pd.DataFrame({"id": [1, 2]}), tmp_path)
    assert probs.shape == (2, 3) and held == [0]


def test_scoring_after_mixed_precision_training_equals_the_reloaded_model(tmp_path, quirks_dir,
                                                                          monkeypatch):
    """accelerate's autocast wrapper must not outlive training: the validation scores of the
    trained model equal those of the saved and reloaded one (CPU bf16 autocast forced on)."""
    from lmsys_pref import data
    from lmsys_pref.infer import predictor

    make = loop.training_args

    def bf16_autocast(cfg, out_dir, device):
        args = make(cfg, out_dir, device)
        args.bf16, args.mixed_precision = True, "bf16"  # what a GPU run gets
        return args

    monkeypatch.setattr(loop, "training_args", bf16_autocast)
    cfg = LMConfig.from_preset("tiny-llama", out_dir=str(tmp_path), dtype="fp32", max_steps=2,
                               eval_steps=1, eval_rows=2)
    df = data.load_split(quirks_dir / "train.csv", lenient=True).iloc[:12]
    model, tok = models.build(cfg.model)
    res = loop.train_one(cfg, model, tok, df.iloc[:8], df.iloc[8:], tmp_path)
    assert "_original_forward" not in model.__dict__  # the wrapper is gone for good
    models.save(model, tok, cfg, tmp_path / "model")
    again, tok, cfg = loading.load_for_inference(tmp_path / "model", "cpu")
    reloaded, _ = predictor.predict_frame(again, tok, df.iloc[8:], cfg.prompt, cfg.scoring,
                                          progress=False)
    np.testing.assert_allclose(res.val_probs, reloaded, atol=1e-6)
