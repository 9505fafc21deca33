"""Per-device choices made before a model is loaded: the weights dtype and the attention kernel;
the dtype a loaded adapter scores in; and the autocast wrapper training leaves on a model,
taken off before it scores.

`dtype: auto` means bf16 only where the GPU has bf16 tensor cores (compute capability >= 8.0:
A100, H100, L4, RTX 30xx+). `torch.cuda.is_bf16_supported()` also says yes on a T4 or V100,
where bf16 is emulated and several times slower than fp16, so it is not used here.

`attn_implementation: auto` matters for Gemma-2, whose attention soft-caps its scores: SDPA
cannot do that, eager attention materialises every (rows x heads x length^2) score matrix. On a
GPU that supports one we pick an exact soft-capping kernel (flash-attention-2 where an installed
flash-attn soft-caps, i.e. >= 2.6; else transformers' `flex_attention`); on a T4 or a CPU, eager.
`sdpa_nocap` is the explicit trade: SDPA with the soft-cap dropped (what the 3rd and 4th places
ran on T4), an approximation that is never chosen by `auto`.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import re

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
NOCAP = "sdpa_nocap"  # SDPA, attention soft-capping dropped
FLASH_SOFTCAP = (2, 6)  # flash-attn gained the `softcap` argument in 2.6.0


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


def flash_attn_version() -> tuple[int, int] | None:
    """(major, minor) of the installed flash-attn, None when it is absent."""
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        text = importlib.metadata.version("flash_attn")
    except importlib.metadata.PackageNotFoundError:  # a source build without metadata
        text = getattr(importlib.import_module("flash_attn"), "__version__", "0.0")
    major, minor = (list(map(int, re.findall(r"\d+", text)[:2])) + [0, 0])[:2]
    return major, minor


def choose_attention(requested: str, config, device: str | torch.device) -> str | None:
    """The `attn_implementation` to load with; None = the library's default (SDPA).

    Args:
        requested: the config's `attn_implementation`; '' or 'auto' = choose per device;
            'sdpa_nocap' loads eager where the model soft-caps (transformers refuses SDPA
            there) and `apply_attention` switches it to SDPA without the cap; anything else
            is used as given ('eager', 'sdpa', 'flex_attention', ...).
        config: the model's transformers config (read before loading the weights).
        device: where the model will run.
    """
    if requested == NOCAP:
        return "eager" if soft_caps_attention(config) else "sdpa"
    if requested not in ("", "auto"):
        return requested
    if not soft_caps_attention(config):
        return None
    if bf16_native(device):
        flash = flash_attn_version()
        return "flash_attention_2" if flash and flash >= FLASH_SOFTCAP else "flex_attention"
    return "eager"


def apply_attention(model, requested: str) -> None:
    """After loading: `sdpa_nocap` drops the attention soft-cap and switches to SDPA.

    The config's cap is cleared too, so a saved full model reloads without it (a silent
    return of the cap would change the scores).
    """
    if requested != NOCAP:
        return
    for module in model.modules():
        if getattr(module, "attn_logit_softcapping", None) is not None:
            module.attn_logit_softcapping = None
    if hasattr(model.config, "attn_logit_softcapping"):
        model.config.attn_logit_softcapping = None
    model.config._attn_implementation = "sdpa"  # read at every forward
    model.soft_cap_dropped = True


def attention_name(model) -> str | None:
    """The attention kernel a loaded (base) model runs, 'sdpa_nocap' where the cap was dropped."""
    if getattr(model, "soft_cap_dropped", False):
        return NOCAP
    return getattr(model.config, "_attn_implementation", None)


def lora_in_dtype(model, dtype: torch.dtype) -> None:
    """Put a loaded LoRA adapter's weights in `dtype`, the body's compute dtype, for scoring.

    peft upcasts adapters to fp32 when it loads them (for stable training); at scoring every
    adapter matmul on a bf16/fp16 body would then run in fp32 (an estimated +20-35 % time for
    r64 on every linear layer). Loading with `autocast_adapter_dtype=False` gives each adapter
    its base layer's dtype, but an 8-bit layer's int8 weight gives none and its LoRA would stay
    fp32: this casts what is left. The head (`modules_to_save`) is not touched: it stays fp32.
    """
    for name, param in model.named_parameters():
        if "lora_" in name and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def unwrap_autocast(model):
    """Take accelerate's mixed-precision wrapper off `model.forward` for good (after training).

    In mixed precision the Trainer's accelerator replaces `model.forward` by an autocast
    wrapper and `free_memory()` leaves it there: the model would keep scoring its fp32 head
    in bf16/fp16 while a reloaded model (`predict`) does not.
    """
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=False)


@contextlib.contextmanager
def autocast_off(model):
    """Score `model` without accelerate's autocast wrapper; put back afterwards (mid-training)."""
    wrapped, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped
