"""Configuration of the XGBoost feature baseline."""
from __future__ import annotations

import dataclasses
from typing import Literal

from . import BaseConfig, Count, Fraction, NonNegative, PositiveCount, Rate, Seed
from .lm import check_levers, check_term_weights
from .parts import DataSpec
from .tasks import TASK_NAMES


@dataclasses.dataclass
class XGBConfig(BaseConfig):
    """Hand-made features + gradient-boosted trees, k-fold OOF and a final fit."""

    kind = "xgb"
    NOT_TRAINING = ("out_dir", "tta", "n_jobs")
    INPUT_FILES = ("extra_train", "teachers")  # fingerprinted by content (lmsys_pref.runs.resume)

    data_dir: str = "data/sample"
    """Folder with train.csv (labelled) and test.csv (csv or parquet)."""
    out_dir: str = "runs/xgb"
    """Run folder: submission.csv, metrics.json, oof.csv, model/."""
    task: TASK_NAMES = "auto"
    """The competition format (lmsys_pref.configs.tasks): 'lmsys-2024' and
    'llm-classification-finetuning' (3 classes, log loss), 'wsdm-2025' (2 classes, accuracy);
    'auto' detects it from data_dir. The run records the task it used."""
    n_folds: Count = 5
    """Stratified folds for out-of-fold predictions; 0 or 1 skips CV (final fit only)."""
    group_by: Literal["prompt", "none"] = "prompt"
    """Keep rows that share a prompt on one side of every split (the folds and the early-stopping
    rows; sklearn's StratifiedGroupKFold): 'prompt', or 'none' (stratified by label only)."""
    seed: Seed = 42
    """Seed of the fold split and of XGBoost."""
    swap_augment: bool = True
    """Train on every row plus its A/B-swapped copy (labels swapped)."""
    tta: Literal["none", "swap"] = "swap"
    """Test-time augmentation: 'none' or 'swap' (average with the mapped-back swapped scores)."""
    max_train_rows: Count = 0
    """Use only the first N training rows (0 = all); for quick runs and tests."""
    lenient: bool = False
    """Repair undecodable cells (logged by id) instead of failing."""
    soft_labels: bool = False
    """Accept probability labels (the three winner columns in [0, 1], summing to 1 within 1e-6)
    in train.csv and `extra_train`: each row trains as three copies weighted by its
    probabilities; metrics.json scores such rows as `soft_log_loss`. False = one-hot only."""
    extra_train: list[str] = dataclasses.field(default_factory=list)
    """Labelled files (competition layout) added to the training rows only: never to a fold's
    held-out or early-stopping rows, oof.csv or the metrics. Rows whose prompt and answers
    (either order) are also in train/test are dropped and listed by id in metrics.json, except
    the rows of a `pseudo-label` output of this run's own test.csv; a file left with no row
    stops the run. '{fold}' in a path names per-fold files (fold k reads the file of k; the
    final booster the folds' mean label by id). -p extra_train "a.csv b.csv"."""
    teachers: list[str] = dataclasses.field(default_factory=list)
    """Teacher probabilities mixed into the training targets (the same files and leak checks as
    the LM's `teachers`: a run's oof.csv, a run folder, a `pseudo-label` output, any CSV of `id`
    + the three winner columns; '{fold}' names per-fold files, fold k reads the file of k and
    the final booster the folds' mean). Each row trains on w_0 * label + sum_i w_i * teacher_i
    (`teacher_weights`) as weighted copies, one per class."""
    teacher_weights: list[float] = dataclasses.field(default_factory=list)
    """Weights (>= 0) of the target mixture [label, teacher_1, teacher_2, ...], 1 + 1 per
    teacher, scaled to sum 1; [] = equal, 1 / (1 + n) each."""
    n_estimators: PositiveCount = 600
    """Boosting rounds (upper bound when early stopping is on)."""
    learning_rate: Rate = 0.03
    """Shrinkage per round."""
    max_depth: PositiveCount = 5
    """Tree depth."""
    min_child_weight: NonNegative = 5.0
    """Minimum hessian per leaf; higher is more conservative."""
    subsample: Fraction = 0.8
    """Row subsampling per tree."""
    colsample_bytree: Fraction = 0.6
    """Feature subsampling per tree."""
    reg_lambda: NonNegative = 2.0
    """L2 regularisation of leaf weights."""
    early_stopping_rounds: Count = 50
    """Stop a fold after this many rounds without OOF improvement (0 = off); the final fit uses
    the mean best round of the folds."""
    n_jobs: Count = 0
    """XGBoost threads (0 = all cores)."""

    def check(self) -> None:
        check_levers(self)
        check_term_weights(self, "teacher_weights", 1 + len(self.teachers),
                           "(the label, then one per teacher)")

    @property
    def data(self) -> DataSpec:
        """The fields `data.labels.load_training` loads the run's rows with; the teachers'
        weights are the target mixture's (`mixture_weights`), at temperature 1."""
        return DataSpec.of(self, max_test_rows=0, distill_temperature=1.0,
                           distill_weights=tuple(self.mixture_weights()))

    def mixture_weights(self) -> list[float]:
        """The target mixture [label, teacher_1, ...]: `teacher_weights` scaled to sum 1, or
        1 / (1 + n) each; a row trains on sum_i w_i p_i (`xgb.levers`)."""
        w = [float(x) for x in self.teacher_weights] or [1.0] * (1 + len(self.teachers))
        return [x / sum(w) for x in w]
