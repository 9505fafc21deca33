"""Model FLOPs utilisation for the GPU figures: the device's own peak and FLOPs that count
attention.

MFU = useful model FLOPs per second / the device's dense peak. The peak comes from a table by
device name (`PEAK_TFLOPS`, dense tensor-core figures from the vendors' data sheets, bf16 where
the device has it, fp16 on T4/V100; PCIe and NVL cards apart from SXM ones), or from
`--peak-tflops` / LMSYS_PEAK_TFLOPS for a device the table does not know; `matmul_tflops`
measures what a large bf16 matmul really reaches, printed beside it (a ceiling that the table
figure rarely meets).

FLOPs per row of L tokens (N = non-embedding parameters):
- scoring: 2·N·L + attention, where attention = 4·heads·head_dim·Σ_q min(q+1, window) per layer
  (QKᵀ and PV, causal: each query sees only the keys before it);
- LoRA training on a frozen base: 4·N·L (forward 2N, backward through the activations 2N; no
  weight gradients) + 3 x attention (the backward computes two matmuls per forward one).
Recomputation under activation checkpointing is not counted (that would be hardware, not
model, FLOPs).
"""
from __future__ import annotations

import os
import re
import time

import numpy as np

# Dense (no sparsity) tensor-core TFLOP/s by device name, bf16 where the device has it, fp16 on
# T4/V100. From NVIDIA's data sheets, which print the sparse figure: dense is half of it.
# A name matches as whole words of torch.cuda.get_device_name, case and '-'/'_' ignored
# ("NVIDIA A100-PCIE-40GB" is "nvidia a100 pcie 40gb"); the longest name that matches wins, so a
# variant ("H200 NVL") is never read as its family's SXM part ("H200").
PEAK_TFLOPS = {
    "H100": 989.0,       # H100 SXM5 ("NVIDIA H100 80GB HBM3"): 1,979 sparse
    "H100 PCIe": 756.0,  # H100 PCIe 80 GB: 1,513 sparse
    "H100 NVL": 835.0,   # H100 NVL 94 GB (PCIe card, 400 W): 1,671 sparse
    "H200": 989.0,       # H200 SXM 141 GB: 1,979 sparse
    "H200 NVL": 835.0,   # H200 NVL 141 GB (PCIe card, 600 W): 1,671 sparse
    "GH200": 989.0,      # Grace Hopper's H100/H200: the SXM figure
    "H800": 989.0,       # the export H100 SXM: same tensor cores
    "H800 PCIe": 756.0,  # the export H100 PCIe
    "B200": 2250.0,      # HGX B200, per GPU: 4,500 sparse
    "A100": 312.0,       # A100 SXM4 and PCIe, 40 and 80 GB alike: 624 sparse
    "A800": 312.0,       # the export A100
    "L40S": 362.0,       # 733 sparse
    "L40": 181.0,        # 362 sparse
    "L4": 121.0,         # 242 sparse
    "A10": 125.0,        # 250 sparse (not the A10G, whose figure NVIDIA does not publish)
    "RTX 4090": 165.0,   # fp32 accumulate (GeForce halves it against fp16 accumulate)
    "RTX 3090": 71.0,    # fp32 accumulate
    "V100": 125.0,       # V100 SXM2, fp16 (no bf16)
    "V100 PCIe": 112.0,  # V100 PCIe, fp16
    "T4": 65.0,          # fp16 (no bf16 tensor cores)
    "MI300X": 1307.0,    # AMD Instinct MI300X, dense bf16 (AMD's data sheet)
}


def _words(name: str) -> str:
    """`name` lower-cased with '-' and '_' as spaces, padded: ' nvidia a100 pcie 40gb '."""
    return " " + re.sub(r"[-_\s]+", " ", name.lower()).strip() + " "


def table_peak(name: str) -> tuple[str, float] | None:
    """(table name, dense TFLOP/s) of the longest `PEAK_TFLOPS` name in `name`, else None."""
    words = _words(name)
    for known in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if _words(known) in words:
            return known, PEAK_TFLOPS[known]
    return None


def device_peak(name: str, override: float | None = None) -> tuple[float | None, str]:
    """(dense peak TFLOP/s, where it came from) of the device called `name`.

    `override` (or the LMSYS_PEAK_TFLOPS environment variable) wins over the table; None when
    neither knows the device (MFU is then not reported rather than guessed).
    """
    override = override or float(os.environ.get("LMSYS_PEAK_TFLOPS", 0) or 0) or None
    if override:
        return float(override), "given (--peak-tflops / LMSYS_PEAK_TFLOPS)"
    found = table_peak(name)
    if found:
        return found[1], f"table: {name} as {found[0]}"
    return None, f"unknown device {name!r}: pass --peak-tflops"


def matmul_tflops(device: str = "cuda:0", dtype=None, n: int = 8192, iters: int = 20) -> float:
    """TFLOP/s of an n x n x n matmul in `dtype` (bf16 by default) measured on `device`."""
    import torch

    dtype = dtype or torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def attention_shape(config) -> dict:
    """Layers, heads, head size and sliding windows (None = global) of a transformers config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers
    types = getattr(config, "layer_types", None) or ["full_attention"] * layers
    window = getattr(config, "sliding_window", None)
    windows = [window if t == "sliding_attention" else None for t in types]
    return {"heads": heads, "head_dim": head_dim, "windows": windows}


def attention_flops(lengths, shape: dict) -> float:
    """Forward FLOPs of causal attention scores and mixing over rows of `lengths` tokens."""
    total = 0.0
    for window in shape["windows"]:
        for n in np.asarray(lengths, dtype=np.float64):
            w = n if window is None else min(n, window)
            seen = w * (w + 1) / 2 + (n - w) * w  # sum over queries of the keys each sees
            total += 4 * shape["heads"] * shape["head_dim"] * seen
    return total


def model_flops(n_params: int, lengths, shape: dict, training: bool = False) -> float:
    """Useful FLOPs of scoring (or LoRA-training on) rows of `lengths` tokens (module doc)."""
    tokens = float(np.sum(lengths))
    if training:
        return 4 * n_params * tokens + 3 * attention_flops(lengths, shape)
    return 2 * n_params * tokens + attention_flops(lengths, shape)


def mfu(flops: float, seconds: float, peak_tflops: float | None) -> float | None:
    """flops / seconds / peak; None without a peak."""
    if not peak_tflops or not seconds:
        return None
    return flops / seconds / (peak_tflops * 1e12)


def utilisation(model, lengths, seconds: float, peak: float | None, training: bool) -> dict:
    """TFLOP/s and MFU of `lengths` rows scored (or LoRA-trained) by `model` in `seconds`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flops = model_flops(non_embedding_params(model), lengths, attention_shape(base.config),
                        training)
    return {"tflops_per_s": round(flops / seconds / 1e12, 3), "mfu": mfu(flops, seconds, peak)}


def non_embedding_params(model) -> int:
    """Parameters outside the embeddings and LoRA (4-bit weights counted at their real shape)."""
    def size(p) -> int:
        state = getattr(p, "quant_state", None)  # bnb Params4bit packs two weights per byte
        return int(np.prod(state.shape)) if state is not None else p.numel()
    return sum(size(p) for n, p in model.named_parameters()
               if "embed" not in n and "lora_" not in n)


def percent(value: float | None) -> str:
    """'45.2%', or 'n/a' where there is no figure (no known peak)."""
    return "n/a" if value is None else f"{value:.1%}"
