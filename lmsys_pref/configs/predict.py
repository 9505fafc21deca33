"""Configuration of `make predict` / `python -m lmsys_pref predict`: score a saved model."""
from __future__ import annotations

import dataclasses
from typing import Literal

from . import BaseConfig, NonNegative, PositiveCount
from .lm import DTYPE, DTYPE_ALIASES, TTA
from .tasks import TASK_NAMES

# The fields a saved model's own config also has; `None` here keeps the saved value.
MODEL_OVERRIDES = ("devices", "tta", "max_length", "token_budget", "model_id", "dtype",
                   "quantization")


@dataclasses.dataclass
class PredictConfig(BaseConfig):
    """Score `data_dir/test.csv` with the model saved in `model_dir` (any baseline)."""

    kind = "predict"
    INPUT_DIRS = ("data_dir", "model_dir")
    ALIASES = {"dtype": DTYPE_ALIASES, "quantization": {"": "none"}}

    model_dir: str = "runs/xgb"
    """OUT_DIR of a train run, or its model/ folder (holds lmsys_pref.json)."""
    data_dir: str = "data/sample"
    """Folder with test.csv (or test.parquet); train.csv there can feed `post_rules`."""
    out_dir: str = "runs/predict"
    """Where submission.csv and predict.json go."""
    task: TASK_NAMES = "auto"
    """The competition format the submission is written in (lmsys_pref.configs.tasks): 'auto'
    = the one data_dir shows (its sample submission or train file), else the model's own. A
    three-class model scoring a two-class task ('wsdm-2025') drops the tie and renormalises."""
    devices: str | None = None
    """'auto' (all visible GPUs, else CPU), or a list such as 'cuda:0,cuda:1' or 'cpu,cpu'
    (one model replica and one thread per entry); None keeps the saved model's setting."""
    tta: TTA | None = None
    """'none', 'swap' (each row and its A/B swap, averaged after mapping back) or 'swap_device'
    (the swapped pass on its own device(s), as the 1st-place solution); None keeps the saved
    setting."""
    max_length: PositiveCount | None = None
    """Token length limit of one row (prompt + both answers); None keeps the saved setting."""
    token_budget: PositiveCount | None = None
    """Padded tokens per batch (rows x longest row); halved automatically on CUDA out-of-memory.
    None keeps the saved setting."""
    dtype: DTYPE | None = None
    """Weights dtype at scoring time: 'auto', 'fp32', 'bf16', 'fp16' (torch spellings such as
    'float16' accepted); a T4 (no bf16) forces 'fp16'. None keeps the saved setting."""
    quantization: Literal["none", "4bit", "8bit"] | None = None
    """Base weights at scoring time: 'none', '4bit' (NF4) or '8bit' through bitsandbytes (a 9B
    base in fp16 needs about 18 GB, more than a 16 GB T4; in 8-bit about 10 GB). LoRA models
    only; None keeps the saved setting."""
    model_id: str | None = None
    """Where the base weights of a LoRA model live now, e.g.
    '/kaggle/input/gemma-2/transformers/gemma-2-2b-it/2' on Kaggle; None keeps the saved one."""
    post_rules: bool = False
    """Replace the predictions of empty-answer and identical-answer rows by the probabilities
    learned from training data (model_dir/postrules.json, else data_dir/train.csv)."""
    cache_dir: str | None = None
    """Folder for partial predictions; a rerun after a crash resumes from them. None = off."""
    progress: bool = True
    """Show a tqdm progress bar (rows, tokens/s, ETA)."""
    time_limit_h: NonNegative = 0.0
    """Hours the run may take (Kaggle's GPU kernels: 9). The throughput of the first batches
    projects the whole run (rows x TTA passes x folds), which is always logged; a projection
    above 95% of this limit stops the run at once, saying how far over it would go and what
    would fit (no TTA, a shorter max_length, merged folds, 4-bit). 0 = no limit."""

    def model_overrides(self) -> dict:
        """The saved-model settings this run changes (only those set)."""
        return {k: getattr(self, k) for k in MODEL_OVERRIDES if getattr(self, k) is not None}
