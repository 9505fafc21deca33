"""What each layer receives of a run's config: small frozen groups of fields, not the whole flat
config (the `-p key value` names, presets and notebook parameters stay flat for users).

- `ModelSpec` (`cfg.model`): `model.models` builds and loads the model, writes its card;
- `PromptSpec` (`cfg.prompt`): `model.prompt.encode` turns rows into token ids;
- `ScoringSpec` (`cfg.scoring`): `infer` scores them (devices, TTA, batch budget, how logits
  become probabilities);
- `DistillSpec` (`cfg.distill`): `train.distill` builds the targets and the loss (soft labels,
  teacher terms, the A/B swap of training rows);
- `DataSpec` (`cfg.data`): `data.labels.load_training` and `data.teachers` load the rows a run
  trains on.

Each part's fields carry the config's own names and values, already checked by the config (its
ranges live there); a part is built by `of(cfg)` from the same-named fields.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .tasks import n_classes

P = TypeVar("P", bound="Part")


@dataclasses.dataclass(frozen=True)
class Part:
    """A frozen group of a config's fields (same names, same values)."""

    @classmethod
    def of(cls: type[P], cfg: Any, **given: Any) -> P:
        """The part of `cfg`: every field read from the config, except those `given`."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in given]
        values = {name: getattr(cfg, name) for name in names}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()},
                   **given)


@dataclasses.dataclass(frozen=True)
class ModelSpec(Part):
    """What a scoring model is: base weights, precision, head, adapter (`model.models`)."""

    kind: str
    task: str
    model_id: str
    gguf_file: str
    tokenizer_id: str
    random_init: dict
    quantization: str
    dtype: str
    attn_implementation: str
    head: str
    head_layers: int
    objective: str
    seed: int
    grad_checkpointing: bool
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: tuple
    lora_init: str
    lora_layers_from: int

    @property
    def n_labels(self) -> int:
        """Outputs of the scoring head: the task's classes. A task still 'auto' (a model built
        straight from a config, or saved before tasks were recorded) is the 2024 task's
        three; a run resolves its task from its data folder before building (`train.fit`)."""
        return n_classes(self.task)


@dataclasses.dataclass(frozen=True)
class PromptSpec(Part):
    """How a row becomes token ids (`model.prompt.encode`); `head` and `task` say which
    judging question closes a row of an A/B-token judge."""

    layout: str
    max_length: int
    spread_max_length: bool
    truncation_side: str
    eos: bool
    suffix: str
    turn_joiner: str
    head: str
    task: str

    @property
    def n_labels(self) -> int:
        """The task's classes (a judging question names as many answers)."""
        return n_classes(self.task)


@dataclasses.dataclass(frozen=True)
class ScoringSpec(Part):
    """How encoded rows are scored (`infer`): where, with which TTA, in which batches, and how
    the head's outputs become probabilities."""

    devices: str
    tta: str
    token_budget: int
    objective: str


@dataclasses.dataclass(frozen=True)
class DistillSpec(Part):
    """The training targets beyond one-hot labels (`train.distill`)."""

    objective: str
    soft_labels: bool
    teachers: tuple
    distill_temperature: float
    distill_weights: tuple
    swap_augment: bool | str

    @property
    def custom_loss(self) -> bool:
        """Whether the run trains with the distillation loss instead of the model's own."""
        return bool(self.soft_labels or self.teachers)


@dataclasses.dataclass(frozen=True)
class DataSpec(Part):
    """The rows a run trains on: the data folder, soft labels, extra rows, teacher files
    (`data.labels.load_training`)."""

    data_dir: str
    out_dir: str
    task: str
    lenient: bool
    max_train_rows: int
    max_test_rows: int
    soft_labels: bool
    extra_train: tuple
    teachers: tuple
    n_folds: int
    distill_temperature: float
    distill_weights: tuple
