"""Per-device choices made before a model is loaded: the weights dtype and the attention kernel.

`dtype: auto` means bf16 only where the GPU has bf16 tensor cores (compute capability >= 8.0:
A100, H100, L4, RTX 30xx+). `torch.cuda.is_bf16_supported()` also says yes on a T4 or V100,
where bf16 is emulated and several times slower than fp16, so it is not used here.

`attn_implementation: auto` matters for Gemma-2, whose attention soft-caps its scores: SDPA
cannot do that, eager attention materialises every (rows x heads x length^2) score matrix. On a
GPU that supports one we pick an exact soft-capping kernel (flash-attention-2 where installed,
else transformers' `flex_attention`); on a T4 or a CPU, eager.
"""
from __future__ import annotations

import importlib.util

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def bf16_native(device: str | torch.device) -> bool:
    """True on a CUDA device with bf16 tensor cores (compute capability >= 8.0)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The weights dtype of `name` on `device`.

    Args:
        name: 'auto', 'fp32', 'bf16', 'fp16' or a torch spelling ('float32', 'bfloat16',
            'float16').
        device: where the model will run; 'auto' = bf16 on compute capability >= 8.0,
            fp16 on older GPUs (T4, V100), fp32 on CPU.
    """
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype: unknown {name!r}; expected auto or one of {sorted(DTYPES)}")
        return DTYPES[name]
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if bf16_native(device) else torch.float16
    return torch.float32


def soft_caps_attention(config) -> bool:
    """Whether the model's attention soft-caps its scores (Gemma-2)."""
    return bool(getattr(config, "attn_logit_softcapping", None))


def choose_attention(requested: str, config, device: str | torch.device) -> str | None:
    """The `attn_implementation` to load with; None = the library's default (SDPA).

    Args:
        requested: the config's `attn_implementation`; '' or 'auto' = choose per device,
            anything else is used as given ('eager', 'sdpa', 'flex_attention', ...).
        config: the model's transformers config (read before loading the weights).
        device: where the model will run.
    """
    if requested not in ("", "auto"):
        return requested
    if not soft_caps_attention(config):
        return None
    if bf16_native(device):
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "flex_attention"
    return "eager"
