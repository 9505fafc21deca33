"""Configuration of the bias probes (`python -m lmsys_pref bias`, `make bias`)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from . import BaseConfig, Count, PositiveCount, Seed


@dataclasses.dataclass
class BiasConfig(BaseConfig):
    """Which saved model to probe, on which labelled rows, and how hard."""

    kind = "bias"
    INPUT_DIRS = ("data_dir", "model_dir")

    model_dir: str = "runs/xgb"
    """OUT_DIR of a train run (or its model/ folder); any baseline kind."""
    data_dir: str = "data/sample"
    """Folder whose train.csv holds labelled rows; the probes perturb these rows (see `rows`)."""
    rows: Literal["held_out", "all"] = "held_out"
    """'held_out': only the rows of train.csv the run scored without training on them (the ids
    of its val.csv, or of oof.csv for k-fold runs); every row when the run folder has neither
    file or train.csv holds none of their ids (a fresh labelled folder). 'all': every row.
    bias.json (`rows.rows_used`: held_out for val.csv, out_of_fold for oof.csv, or all) and
    bias.md say which rows were used and what the model saw of them."""
    out_dir: str = "runs/bias"
    """Where bias.json, bias.md and the PNG figures go."""
    max_rows: Count = 500
    """Probe at most this many rows (a seeded sample; 0 = all): every probe scores them again."""
    seed: Seed = 42
    """Seed of the row sample and of every perturbation, so any model sees the same inputs."""
    tta_modes: list[Literal["none", "swap", "swap_device"]] = dataclasses.field(
        default_factory=lambda: ["none", "swap"])
    """Test-time augmentation settings the position probe compares ('none', 'swap')."""
    verbosity_repeats: PositiveCount = 3
    """How many times the repeated-sentence and filler probes lengthen an answer."""
    judge_bias_dir: str = "../shared/data/judge_bias"
    """LLMBar / EvalBiasBench folder (see PROVENANCE.md); skipped when absent or ''."""
    max_judge_rows: Count = 0
    """Score at most this many pairs per judge-bias subset (0 = all)."""
    lenient: bool = False
    """Repair undecodable cells of train.csv (logged by id) instead of failing."""
