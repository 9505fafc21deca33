"""Inference engine on a GPU (H100 class): Gemma-2-2B and Gemma-2-9B shapes.

Random weights from the real configs, bf16, the real length mix (1,500 rows encoded at max
length 2048 with the Gemma layout) tiled to 25k rows, swap TTA on (50k rows scored). Reports
tokens/s and MFU = (2·N per token + causal attention) / the device's own peak (`benchmarks.mfu`:
a table by device name, or `--peak-tflops` / LMSYS_PEAK_TFLOPS; the measured bf16 matmul peak
is printed beside it), the speed-up over a naive loop (input order, batches of 4 padded to the
longest, eager attention) run in the same script, and the Kaggle wall time on 2×T4.

The 2×T4 time comes from the T4's own setup, not from the fast one (`t4_estimate`): fp16
weights, the attention `auto` gives on compute 7.5 (eager for Gemma-2: no flash-attn 2, no
fast flex_attention on a T4), the token budget of the preset a T4 scores with, batches as the
engine plans them for that kernel. Measured on a T4, that is the figure; on another GPU it is
a projection, labelled so: the T4 setup's MFU on this GPU, assumed on the T4's fp16 peak.
A recompile-limit hit (flex_attention past 8 shapes, run unfused) fails the bench.

Attention: Gemma-2 soft-caps attention logits (50·tanh(s/50)); SDPA cannot express that, so
transformers v5 refuses `sdpa` for Gemma-2. The fast path uses the library's choice
(`lmsys_pref.model.precision.choose_attention`: flash-attention-2 where installed, else the exact
`flex_attention`; override with LMSYS_BENCH_ATTN, e.g. `sdpa_nocap` = the library's SDPA with
the soft-cap dropped, an approximation whose probability change against eager the bench
reports). The naive baseline uses eager.

    .venv/bin/python -m benchmarks.run --only infer_gpu          # 25k rows x TTA for 2B
    .venv/bin/python -m benchmarks.run --only infer_gpu --quick  # 3k scored rows each
Without CUDA it returns {"skipped": ...}.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks import compiles, mfu, t4

T4_TFLOPS = t4.PEAK_TFLOPS  # T4 fp16 tensor-core peak
T4_PRESETS = {"2b": "gemma2-2b", "9b": "gemma2-9b-winner"}  # what a T4 scores each shape with
T4_GIB = 16.0
KAGGLE_LIMIT_H = 9.0
GEMMA2 = {  # the public google/gemma-2-{2b,9b} configs (shape fields only)
    "2b": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256,
               query_pre_attn_scalar=256),
    "9b": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
               num_attention_heads=16, num_key_value_heads=8, head_dim=256,
               query_pre_attn_scalar=256),
}
COMMON = dict(vocab_size=256000, max_position_embeddings=8192, sliding_window=4096,
              attn_logit_softcapping=50.0, final_logit_softcapping=30.0, num_labels=3,
              pad_token_id=0, hidden_activation="gelu_pytorch_tanh")


def choose_attention(device: str = "cuda:0") -> str:
    """The library's own choice (`attn_implementation: auto`): flash-attention-2 where installed,
    else transformers' exact soft-capping `flex_attention`; LMSYS_BENCH_ATTN overrides it
    (`sdpa_nocap`: SDPA with the soft-cap dropped, an approximation, for comparison)."""
    want = os.environ.get("LMSYS_BENCH_ATTN", "auto")
    if want != "auto":
        return want
    from transformers import Gemma2Config

    from lmsys_pref.model.precision import choose_attention as library_choice

    return library_choice("auto", Gemma2Config(**COMMON), device) or "eager"


def build(shape: dict, attn: str, device: str, dtype=None):
    """A random Gemma-2 classifier of `shape` with attention `attn` (see module doc)."""
    import torch
    from transformers import AutoModelForSequenceClassification, Gemma2Config

    dtype = dtype or torch.bfloat16
    impl = "eager" if attn in ("eager", "sdpa_nocap") else attn
    cfg = Gemma2Config(**{**COMMON, **shape}, attn_implementation=impl)  # shape may set vocab
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype).eval()
    if attn == "sdpa_nocap":  # transformers refuses sdpa for Gemma-2: the library's switch
        from lmsys_pref.model import precision

        precision.apply_attention(model, precision.NOCAP)
    return model


def set_attention(model, impl: str, softcap: float | None) -> None:
    """Switch a built model's attention kernel and soft-cap (read at every forward)."""
    for module in model.modules():
        if hasattr(module, "attn_logit_softcapping"):
            module.attn_logit_softcapping = softcap
        if getattr(module, "config", None) is not None:
            module.config._attn_implementation = impl


def fake_rows(lengths: np.ndarray, vocab: int, seed: int = 0) -> list[list[int]]:
    """Random token ids with the real lengths (speed does not depend on which tokens)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, int(n)).tolist() for n in lengths]


def measure(model, rows: list, device: str, budget: int, naive_rows: int) -> dict:
    """Our engine on `rows` vs the naive loop (eager) on the first `naive_rows` of them."""
    import torch

    from benchmarks.bench_infer import naive_predict
    from lmsys_pref.infer import engine

    engine.predict_ids(model, rows[:64], pad_id=0, token_budget=budget, devices=device,
                      progress=False)  # warm-up (kernels, allocator)
    torch.cuda.synchronize() if device.startswith("cuda") else None
    probs, stats = engine.predict_ids(model, rows, pad_id=0, token_budget=budget, devices=device,
                                     progress=True, return_stats=True)
    naive = rows[:naive_rows]
    fast_attn = model.config._attn_implementation
    fast_cap = next(m.attn_logit_softcapping for m in model.modules()
                    if hasattr(m, "attn_logit_softcapping"))
    set_attention(model, "eager", COMMON["attn_logit_softcapping"])  # the exact reference
    t0 = time.perf_counter()
    p_naive = naive_predict(model, naive, 0, 4, device)
    naive_s = time.perf_counter() - t0
    set_attention(model, fast_attn, fast_cap)
    naive_tps = sum(map(len, naive)) / naive_s
    return {"rows": len(rows), "tokens": stats.tokens, "seconds": stats.seconds,
            "tokens_per_s": stats.tokens_per_s, "padding_efficiency": stats.padding_efficiency,
            "oom_retries": stats.oom_retries, "naive_rows": len(naive),
            "naive_tokens_per_s": naive_tps, "speedup_vs_naive": stats.tokens_per_s / naive_tps,
            "max_abs_diff_vs_eager": float(np.abs(probs[:len(naive)] - p_naive).max()),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
            if device.startswith("cuda") else None}


def t4_budget(name: str) -> int:
    """The token budget a T4 scores shape `name` with: its preset's (the saved config's)."""
    from lmsys_pref.configs.lm import LMConfig

    return LMConfig.from_preset(T4_PRESETS[name]).token_budget


def t4_estimate(shape: dict, lengths: np.ndarray, n_rows: int, budget: int, device: str,
                device_name: str, peak: float | None) -> dict:
    """2×T4 hours of 25k rows × swap TTA from the T4's setup scored here (module doc).

    Args:
        shape: Gemma-2 config fields (`GEMMA2[...]`, or tiny ones in the tests).
        lengths: the real length mix; `n_rows` rows of it are scored after a short warm-up.
        budget: the token budget a T4 scores with (`t4_budget`).
        device: where to score; `device_name` says whether it is a T4 (then measured).
        peak: this device's dense peak TFLOP/s (None: no projection).
    """
    import torch
    from transformers import Gemma2Config

    from lmsys_pref.infer import engine
    from lmsys_pref.model import models
    from lmsys_pref.model.precision import resolve_dtype

    setup = t4.setup(Gemma2Config(**{**COMMON, **shape}))
    model = build(shape, setup["attn_implementation"], device, resolve_dtype(setup["dtype"]))
    rows = fake_rows(np.resize(np.concatenate([lengths, lengths]), n_rows),
                     {**COMMON, **shape}["vocab_size"], seed=1)
    engine.predict_ids(model, rows[:16], pad_id=0, token_budget=budget, devices=device,
                       progress=False)  # warm-up (cuBLAS, allocator)
    _, stats = engine.predict_ids(model, rows, pad_id=0, token_budget=budget, devices=device,
                                  progress=False, return_stats=True)
    flops = mfu.model_flops(mfu.non_embedding_params(model), [len(r) for r in rows],
                            mfu.attention_shape(model.config))
    cuda = torch.device(device).type == "cuda"
    return {**models.describe(model), "token_budget": budget, "rows": len(rows),
            "tokens_per_s": stats.tokens_per_s, "padding_efficiency": stats.padding_efficiency,
            "mfu_here": mfu.mfu(flops, stats.seconds, peak), "measured_on": device_name,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
            **t4x2_hours(stats, flops, lengths, peak, device_name)}


def t4x2_hours(stats, flops: float, lengths: np.ndarray, peak: float | None,
               device_name: str) -> dict:
    """Hours of 25k rows × swap TTA on 2×T4 from a run of the T4 setup (`stats`, its `flops`):
    measured on a T4 (one replica per T4), else projected at the same MFU on the T4's peak."""
    full_tokens = float(np.resize(np.concatenate([lengths, lengths]), 50_000).sum())
    if t4.is_t4(device_name):
        return {"projected": False, "t4x2_h": full_tokens / stats.tokens_per_s / 2 / 3600}
    here = mfu.mfu(flops, stats.seconds, peak)
    full_flops = flops * full_tokens / stats.tokens  # the same length mix
    return {"projected": True, "t4x2_h": full_flops / (2 * T4_TFLOPS * 1e12 * here) / 3600
            if here else None}


def run_shape(name: str, lengths: np.ndarray, n_scored: int, attn: str, budget: int,
              peak: float | None, n_t4: int) -> dict:
    import torch

    compiles.reset()  # flex_attention compiled for this shape only
    hits = compiles.limit_hits()
    torch.cuda.reset_peak_memory_stats()
    model = build(GEMMA2[name], attn, "cuda:0")
    n_params = mfu.non_embedding_params(model)
    rows = fake_rows(np.resize(np.concatenate([lengths, lengths]), n_scored), COMMON["vocab_size"])
    res = measure(model, rows, "cuda:0", budget, naive_rows=200 if name == "2b" else 100)
    compiles.require_no_limit_hit(hits, f"scoring the {name} shape with {attn}")
    flops = mfu.model_flops(n_params, [len(r) for r in rows], mfu.attention_shape(model.config))
    res.update(shape=name, attention=attn, token_budget=budget, non_embedding_params=n_params,
               tflops_per_s=flops / res["seconds"] / 1e12,
               mfu=mfu.mfu(flops, res["seconds"], peak))
    full_tokens = float(np.resize(np.concatenate([lengths, lengths]), 50_000).sum())
    res["gpu_25k_tta_s"] = full_tokens / res["tokens_per_s"]  # 25k rows x swap TTA here
    del model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    # `peak` is the dense bf16 peak; fp16's is the same on A100/H100/H200 (and L4, A10)
    res["t4"] = t4_estimate(GEMMA2[name], lengths, n_t4, t4_budget(name), "cuda:0",
                            torch.cuda.get_device_name(0), peak)
    torch.cuda.empty_cache()
    return res


def run(shared: Path | None, quick: bool) -> dict:
    try:
        import torch
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA device (GPU bench)"}
    except ImportError:
        return {"skipped": "torch not installed"}
    if shared is None:
        return {"skipped": "real data (../shared/data/lmsys-chatbot-arena) not found"}
    from benchmarks.bench_infer import real_ids

    ids, _ = real_ids(shared)
    lengths = np.array([len(r) for r in ids])
    attn = choose_attention()
    budget = int(os.environ.get("LMSYS_BENCH_BUDGET", 65536))
    device = torch.cuda.get_device_name(0)
    peak, source = mfu.device_peak(device)
    matmul = mfu.matmul_tflops("cuda:0")
    sizes = {"2b": 3000 if quick else 50_000, "9b": 3000 if quick else 12_000}
    t4_sizes = {"2b": 300 if quick else 2000, "9b": 300 if quick else 1000}
    results = [run_shape(n, lengths, sizes[n], attn, budget, peak, t4_sizes[n])
               for n in ("2b", "9b")]
    return {"title": "Inference engine on GPU: Gemma-2 shapes, MFU and 2xT4 projection",
            "command": ".venv/bin/python -m benchmarks.run --only infer_gpu",
            "markdown": markdown(results, lengths, budget, attn, device, peak, source, matmul),
            "results": results, "device": {"name": device, "peak_tflops": peak,
                                           "peak_source": source, "matmul_bf16_tflops": matmul}}


def markdown(results, lengths, budget, attn, device, peak, source, matmul) -> str:
    peak_text = f"{peak:g} TFLOP/s ({source})" if peak else source
    md = [f"Random-weight Gemma-2 shapes, bf16, {device}, real length mix "
          f"(mean {lengths.mean():.0f} tokens at max 2048) tiled, swap TTA, token budget {budget}, "
          f"attention `{attn}`. MFU = (2·N per token + causal attention) FLOPs/s / the peak, "
          f"{peak_text}; a bf16 matmul measured {matmul:.0f} TFLOP/s. Goals: MFU >= 55% (2B), "
          ">= 60% (9B); >= 2.5x the naive loop.\n",
          "| shape | rows scored | tokens/s | TFLOP/s | MFU | padding eff. | naive tokens/s | "
          "speed-up | max abs dp vs eager | peak GiB | 25k x TTA here |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        md.append(f"| {r['shape']} | {r['rows']:,} | {r['tokens_per_s']:,.0f} "
                  f"| {r['tflops_per_s']:.0f} | {mfu.percent(r['mfu'])} "
                  f"| {r['padding_efficiency']:.3f} | {r['naive_tokens_per_s']:,.0f} | "
                  f"{r['speedup_vs_naive']:.2f}x | {r['max_abs_diff_vs_eager']:.1e} | "
                  f"{r['peak_memory_gib']:.1f} | {r['gpu_25k_tta_s'] / 60:.1f} min |")
    return "\n".join(md + t4_markdown([r["t4"] for r in results], [r["shape"] for r in results]))


def t4_markdown(rows: list[dict], shapes: list[str]) -> list[str]:
    """The 2×T4 table: the T4 setup's figures here, and the hours, labelled as projections
    unless measured on a T4."""
    md = ["", "2×T4, 25k rows × swap TTA, from the T4's setup (fp16 weights, the attention "
          "`auto` gives on compute 7.5, the T4 preset's token budget, batches as the engine "
          "plans them):", "",
          "| shape | weights | attention | token budget | rows | tokens/s | MFU here | "
          "peak GiB | 2×T4 |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for shape, r in zip(shapes, rows):
        how = f"projected from {r['measured_on']}" if r["projected"] else "measured on a T4"
        hours = "n/a" if r["t4x2_h"] is None else f"{r['t4x2_h']:.1f} h ({how})"
        gib = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
        md.append(f"| {shape} | {r['weights_dtype']} | {r['attn_implementation']} | "
                  f"{r['token_budget']:,} | {r['rows']:,} | {r['tokens_per_s']:,.0f} | "
                  f"{mfu.percent(r['mfu_here'])} | {gib} | {hours} |")
    md.append(f"\nProjected: the T4 setup's MFU on this GPU assumed on the T4's {T4_TFLOPS:g} "
              "TFLOP/s fp16 peak (optimistic: a T4 at its 70 W limit sustains less, and a peak "
              f"above {T4_GIB:g} GiB means the T4's engine halves its budget or, for the 9B, "
              f"loads 8-bit weights). Kaggle limit: {KAGGLE_LIMIT_H:.0f} h.")
    return md
