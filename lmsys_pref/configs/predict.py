"""Configuration of `make predict` / `python -m lmsys_pref predict`: score a saved model."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

from . import BaseConfig, ConfigError, Fraction, NonNegative, PositiveCount
from .lm import DTYPE, DTYPE_ALIASES, TTA
from .tasks import TASK_NAMES

# The fields a saved model's own config also has; `None` here keeps the saved value.
MODEL_OVERRIDES = ("devices", "tta", "max_length", "token_budget", "model_id", "dtype",
                   "quantization")
# Adaptive TTA's share of rows scored twice: on the planted task MiniLM's least certain
# quarter holds every row swap TTA corrects (all of its gain at 24 % of its tokens); Gemma 3
# 270M, whose mistakes are more confident, gets half its gain there and needs 0.5 for 90 %
# (BENCHMARKS.md, "Adaptive swap TTA and cascades").
DEFAULT_TTA_FRACTION = 0.25
CASCADE_WEIGHT = 1.0  # a stage's weight when none is given and no shared OOF rows fit one


@dataclasses.dataclass(frozen=True)
class CascadeStage:
    """One later stage of a cascade (`PredictConfig.cascade`): `model_dir` scores the `fraction`
    least certain rows of the blend so far, joining it with `weight` (None: fitted on the
    out-of-fold rows the runs share, else `CASCADE_WEIGHT`)."""

    model_dir: str
    fraction: float
    weight: float | None = None


def parse_stage(text: str) -> CascadeStage:
    """'MODEL_DIR:FRACTION[:WEIGHT]' as a `CascadeStage`, e.g. 'runs/qwen14b:0.35' or
    'runs/qwen32b:0.15:1.5' (a folder name may hold ':'; the numbers are read from the end).

    Raises:
        ConfigError: naming the entry and what is wrong with it.
    """
    where = f"PredictConfig: parameter 'cascade': {text!r}"
    parts = text.split(":")
    if len(parts) < 2 or not parts[0]:
        raise ConfigError(f"{where}: expected MODEL_DIR:FRACTION[:WEIGHT], e.g. runs/b:0.35")
    if len(parts) >= 3 and _number(parts[-2]) is not None:
        folder, fraction, weight = ":".join(parts[:-2]), parts[-2], parts[-1]
    else:
        folder, fraction, weight = ":".join(parts[:-1]), parts[-1], None
    stage = CascadeStage(folder, _number(fraction), None if weight is None else _number(weight))
    if stage.fraction is None or not 0 < stage.fraction <= 1:
        raise ConfigError(f"{where}: fraction {fraction!r} is not a number in (0, 1]; expected "
                          "MODEL_DIR:FRACTION[:WEIGHT], e.g. runs/b:0.35:1.5")
    if weight is not None and (stage.weight is None or not 0 < stage.weight < math.inf):
        raise ConfigError(f"{where}: weight {weight!r} is not a finite number > 0")
    return stage


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


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
    """Hours the run may take (Kaggle's GPU kernels: 9). The throughput of the warm batches
    (each device's first batch is warm-up) projects the whole run (rows x TTA passes x folds),
    which is always logged (a run too short to measure says so); a projection above 95% of
    this limit stops the run at once, saying how far over it would go and what would fit (no
    TTA, a shorter max_length, merged folds, 4-bit). The adaptive swap pass and a cascade's
    later stages shrink to the time left instead. 0 = no limit."""
    tta_fraction: Fraction = DEFAULT_TTA_FRACTION
    """With `tta adaptive`: the largest share of the rows (in (0, 1]) scored a second time,
    swapped: those whose two most probable classes are closest after the first pass; fewer
    when the time budget runs short (predict.json says how many and why). XGBoost scores
    every row swapped (it is cheap)."""
    cascade: list[str] = dataclasses.field(default_factory=list)
    """Later models of a cascade, each 'MODEL_DIR:FRACTION[:WEIGHT]' (FRACTION in (0, 1],
    WEIGHT > 0): `model_dir` scores every row, then each stage's model the FRACTION least
    certain rows of the blend so far, averaged in with WEIGHT against the blend's 1; without a
    WEIGHT it is fitted on the out-of-fold rows both runs scored (oof.csv/val.csv), else 1.
    Each stage gets its share of the time left; one that cannot fit is cut to the rows that
    do. [] = no cascade; `-p cascade "runs/b:0.35 runs/c:0.15:1.5"`."""

    def check(self) -> None:
        self.cascade = [part for entry in self.cascade for part in str(entry).split()]
        for entry in self.cascade:
            parse_stage(entry)

    @property
    def stages(self) -> tuple[CascadeStage, ...]:
        """The cascade's later stages, parsed (`parse_stage`)."""
        return tuple(parse_stage(entry) for entry in self.cascade)

    def model_overrides(self) -> dict:
        """The saved-model settings this run changes (only those set)."""
        return {k: getattr(self, k) for k in MODEL_OVERRIDES if getattr(self, k) is not None}
