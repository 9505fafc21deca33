"""Every run kind's config class by the `kind:` its presets declare, and a config built from a
preset's kind: what lets one notebook template serve the LoRA decoders and the encoders."""
from __future__ import annotations

from typing import Any

from . import BaseConfig, ConfigError, load_preset
from .bias import BiasConfig
from .encoder import EncoderConfig
from .lm import LMConfig
from .predict import PredictConfig
from .xgb import XGBConfig

CONFIGS: dict[str, type[BaseConfig]] = {
    cls.kind: cls for cls in (LMConfig, EncoderConfig, XGBConfig, PredictConfig, BiasConfig)}


def config_class(preset: str) -> type[BaseConfig]:
    """The config class of a preset (by name or YAML path), from its `kind:`.

    Raises:
        ConfigError: an unknown preset, or a kind no class has.
    """
    kind = load_preset(preset).get("kind")
    if kind not in CONFIGS:
        raise ConfigError(f"preset {preset!r}: kind {kind!r} is none of {sorted(CONFIGS)}")
    return CONFIGS[kind]


def from_namespace(preset: str, namespace: dict[str, Any]) -> BaseConfig:
    """A notebook's config: the preset's kind's class, the preset's values, and every field of
    that class that `namespace` (e.g. `globals()`) holds as something other than None."""
    return config_class(preset).from_namespace(preset, namespace)
