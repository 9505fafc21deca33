"""Kaggle's T4 as the library sets it up, for the T4 rows and estimates of the GPU checks.

A T4 (compute capability 7.5) has fp16 tensor cores and no bf16 ones, and neither flash-attn 2
nor a fast flex_attention: `dtype: auto` gives fp16 there and `attn_implementation: auto` gives
eager attention to a model that soft-caps its attention scores (Gemma-2), SDPA to others
(`lmsys_pref.model.precision`). A T4 row measured on a bigger GPU runs that setup, so it
compiles nothing and scores with the kernels and memory a T4 would; its times are still the
bigger GPU's, so a T4 time made from them is a projection and says so.
"""
from __future__ import annotations

from unittest import mock

import torch

from lmsys_pref.model import precision

CAPABILITY = (7, 5)  # Tesla T4 (Turing)
DTYPE = "fp16"  # what `dtype: auto` gives on compute capability 7.5; the kernels set it too
PEAK_TFLOPS = 65.0  # fp16 tensor cores, dense (NVIDIA T4 data sheet; benchmarks.mfu's table)


def attention(config) -> str:
    """The `attn_implementation` that `auto` loads `config`'s model with on a T4: the library's
    own choice (`precision.choose_attention`) on a device that reports compute capability 7.5.

    Args:
        config: the model's transformers config (whether it soft-caps attention decides).

    Returns:
        'eager' for a soft-capping model (Gemma-2), else 'sdpa' (transformers' default).
    """
    with mock.patch.object(precision.torch.cuda, "get_device_capability",
                           lambda device=None: CAPABILITY):
        chosen = precision.choose_attention("auto", config, torch.device("cuda", 0))
    return chosen or "sdpa"


def setup(config) -> dict:
    """The config fields a T4 runs `config`'s model with: fp16 weights, `attention`.

    Args:
        config: a transformers config, or the fields of one with its `model_type` (the shapes
            of `benchmarks.gpu_models`).
    """
    if isinstance(config, dict):
        from transformers import AutoConfig

        config = AutoConfig.for_model(**config)
    return {"dtype": DTYPE, "attn_implementation": attention(config)}


def is_t4(device_name: str) -> bool:
    """Whether `device_name` (torch.cuda.get_device_name) is a T4: figures are then measured."""
    return "T4" in device_name.upper().replace("-", " ").split()
