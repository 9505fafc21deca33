"""Configuration of the bias probes (`python -m lmsys_pref bias`, `make bias`)."""
from __future__ import annotations

import dataclasses

from . import BaseConfig


@dataclasses.dataclass
class BiasConfig(BaseConfig):
    """Which saved model to probe, on which labelled rows, and how hard."""

    kind = "bias"

    model_dir: str = "runs/xgb"
    """OUT_DIR of a train run (or its model/ folder); any baseline kind."""
    data_dir: str = "data/sample"
    """Folder whose train.csv holds labelled rows; the probes perturb these rows."""
    out_dir: str = "runs/bias"
    """Where bias.json, bias.md and the PNG figures go."""
    max_rows: int = 500
    """Probe at most this many rows (a seeded sample; 0 = all): every probe scores them again."""
    seed: int = 42
    """Seed of the row sample and of every perturbation, so any model sees the same inputs."""
    tta_modes: list = dataclasses.field(default_factory=lambda: ["none", "swap"])
    """Test-time augmentation settings the position probe compares ('none', 'swap')."""
    verbosity_repeats: int = 3
    """How many times the repeated-sentence and filler probes lengthen an answer."""
    judge_bias_dir: str = "../shared/data/judge_bias"
    """LLMBar / EvalBiasBench folder (see PROVENANCE.md); skipped when absent or ''."""
    max_judge_rows: int = 0
    """Score at most this many pairs per judge-bias subset (0 = all)."""
    lenient: bool = False
    """Repair undecodable cells of train.csv (logged by id) instead of failing."""
