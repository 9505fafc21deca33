"""Random models at the real shapes for `make gpu-check` (benchmarks.gpu_check): the shapes, a
stand-in tokenizer, token ids with the competition's length mix, the seeds' LoRA config."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from lmsys_pref.configs.lm import LMConfig
from lmsys_pref.infer import engine

# Token lengths of the 1,500 real rows (Gemma tokenizer, gemma layout, max 2048): 5% quantiles.
LENGTH_QUANTILES = [26, 102, 138, 183, 229, 275, 328, 379, 433, 491, 546, 599, 668, 729, 778,
                    860, 968, 1098, 1368, 1848, 2048]
GEMMA2_2B = dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216,
                 num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                 max_position_embeddings=8192, sliding_window=4096, vocab_size=256000)
GEMMA2_9B = dict(GEMMA2_2B, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                 num_attention_heads=16, num_key_value_heads=8)
LLAMA3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 max_position_embeddings=8192, vocab_size=128256)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, vocab_size=512, max_position_embeddings=512)


class StandInTokenizer:
    """What a random model needs of a tokenizer: a vocabulary size and a pad id."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self.pad_token_id = vocab_size, 0

    def __len__(self) -> int:
        return self.vocab_size

    def save_pretrained(self, path) -> None:
        """Nothing to save: the ids are random."""


def real_length_mix(n: int, max_length: int, seed: int = 0) -> list[list[int]]:
    """`n` rows of random token ids whose lengths follow the competition's length mix."""
    rng = np.random.default_rng(seed)
    scale = max_length / LENGTH_QUANTILES[-1]
    qs = np.interp(rng.uniform(0, 1, n), np.linspace(0, 1, len(LENGTH_QUANTILES)),
                   LENGTH_QUANTILES)
    return [rng.integers(1, 500, max(int(q * scale), 8)).tolist() for q in qs]


def lm_config(shape: dict, dtype: str, device: str, max_length: int, **extra) -> LMConfig:
    """The Gemma-2 seeds' LoRA setting (r16 on q/k, 3-layer head) on a random `shape`."""
    values = dict(random_init={k: v for k, v in shape.items() if k != "vocab_size"},
                  dtype=dtype, devices=device, lora_r=16, lora_alpha=32, lora_dropout=0.0,
                  lora_targets=["q_proj", "k_proj"], head_layers=3, max_length=max_length,
                  batch_size=2, grad_accum=1, grad_checkpointing=True, logging_steps=10,
                  save_steps=10_000, learning_rate=1e-4, warmup_ratio=0.0,
                  group_by_length=False, token_budget=8 * max_length)
    return LMConfig.from_dict({**values, **extra})


def collate_rows(rows: list[dict], seen: list | None = None) -> dict:
    """A training batch; the row lengths are appended to `seen` (the FLOPs of the steps)."""
    ids, mask = engine.collate([r["input_ids"] for r in rows], 0, "cpu")
    if seen is not None:
        seen += [len(r["input_ids"]) for r in rows]
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor([r["labels"] for r in rows])}


@contextlib.contextmanager
def on_device(device: str):
    """Random weights drawn on `device` (a GPU builds a 2B model in seconds); the build's
    transient fp32 copy is then left out of the peak-memory figures."""
    if device == "cpu":
        yield
        return
    with torch.device(device):
        yield
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: str) -> float | None:
    """Peak memory allocated on a CUDA `device` since its last reset, in GiB (None off CUDA)."""
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
