"""Typed run configurations: one dataclass per run kind, one YAML preset per model.

Notebook `parameters` cells, YAML presets and `-p key value` overrides all use the field names of
these dataclasses, and every value goes through one parser (`coerce`) when a config is built:
`-p learning_rate 1e-4` becomes the float 1e-4, `-p n_folds five` is a `ConfigError` naming the
parameter, the value and the expected type, before any data or model is loaded. A numeric
field's valid range lives in its annotation (`Count`, `Fraction`, `Rate`, ... = `Annotated[...,
Bounds(...)]`, see `fields`): `-p n_estimators -5` or `-p learning_rate inf` stops there too.
The field table (`field_table`, `params_help`) feeds `--help` from the same annotations and
field docstrings.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .fields import (
    Bounds,
    ConfigError,
    Count,
    Fraction,
    NonNegative,
    OpenFraction,
    PositiveCount,
    Rate,
    Seed,
    Share,
    coerce,
    describe,
    field_table,
    params_help,
    type_hints,
)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
T = TypeVar("T", bound="BaseConfig")

__all__ = ["BaseConfig", "Bounds", "ConfigError", "Count", "Fraction", "NonNegative",
           "OpenFraction", "PositiveCount", "Rate", "Seed", "Share", "coerce", "describe",
           "field_table", "load_preset", "params_help", "parse_params", "preset_names"]


@dataclasses.dataclass
class BaseConfig:
    """Shared machinery; subclasses add fields, each with a docstring."""

    kind = "base"  # class attribute, not a field: the run kind a preset must declare
    # Accepted spellings -> canonical value, per field (e.g. torch's 'bfloat16' -> 'bf16').
    ALIASES = {}
    # Fields that do not change the trained weights (where and how the run scores, logs,
    # saves); every other field is part of the resume fingerprint (`lmsys_pref.runs.resume`).
    NOT_TRAINING = ()
    # Fields naming input files or folders besides data_dir (a path, a list, or paths separated
    # by spaces): the fingerprints digest their content, never their path (`runs.resume`).
    INPUT_FILES = ()
    # Fields naming the folders a run reads (its data, a saved model): OUT_DIR may be none of
    # them (`runs.outdir.check_out_dir`).
    INPUT_DIRS = ("data_dir",)

    def __post_init__(self) -> None:
        """Convert and check every field against its annotation (`ConfigError` on a bad one)."""
        name = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            value = type(self).ALIASES.get(f.name, {}).get(value, value) \
                if isinstance(value, str) else value
            setattr(self, f.name, coerce(f"{name}: parameter {f.name!r}", value,
                                         type_hints(type(self))[f.name]))
        self.check()

    def check(self) -> None:
        """Checks beyond the field types; subclasses raise `ConfigError` naming the field."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        """Build from a mapping; unknown keys or badly typed values raise `ConfigError`."""
        values = dict(values)
        kind = values.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"{cls.__name__} expects kind {cls.kind!r}, got {kind!r}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; "
                              f"known: {cls.field_names()}")
        return cls(**values)

    @classmethod
    def from_preset(cls: type[T], name: str | None = None, **overrides: Any) -> T:
        """A preset (by name or YAML path) with `overrides` applied; `None` values are ignored."""
        values = load_preset(name) if name else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_namespace(cls: type[T], preset: str | None, namespace: dict[str, Any]) -> T:
        """Build from a notebook's parameters: every field name found in `namespace` (e.g.
        `globals()`) that is not `None` overrides the preset."""
        return cls.from_preset(preset, **{k: namespace.get(k) for k in cls.field_names()})

    def replace(self: T, **overrides: Any) -> T:
        """A copy with the non-`None` overrides applied."""
        merged = {**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        return type(self).from_dict(merged)

    def input_dirs(self) -> dict[str, str]:
        """The folders the run reads, by field (`INPUT_DIRS`), those that are set."""
        return {name: getattr(self, name) for name in type(self).INPUT_DIRS
                if getattr(self, name)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def save(self, path: str | Path) -> Path:
        from ..files.atomic import write_text  # atomic: a config.yaml is whole or absent

        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a preset, by shipped name or by path to a YAML file."""
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; shipped presets: {preset_names()}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value")
    return values


def parse_params(pairs: list[list[str]] | None) -> dict[str, Any]:
    """`[["lr", "1e-4"], ...]` (argparse `-p key value`, repeatable) to a mapping.

    The values stay text: `coerce` converts each one by its field's type when the config is
    built, so `1e-4` is a float for a float field and `00123` stays `'00123'` for a str field.
    """
    return {k: v for k, v in (pairs or [])}
