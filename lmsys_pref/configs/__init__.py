"""Typed run configurations: one dataclass per run kind, one YAML preset per model.

Notebook `parameters` cells, YAML presets and `-p key value` overrides all use the field names of
these dataclasses; `tests/test_configs.py` checks that they agree.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
T = TypeVar("T", bound="BaseConfig")


class ConfigError(ValueError):
    """Unknown field, unknown preset or a preset of another run kind."""


@dataclasses.dataclass
class BaseConfig:
    """Shared machinery; subclasses add fields, each with a docstring."""

    kind = "base"  # class attribute, not a field: the run kind a preset must declare

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        """Build from a mapping; unknown keys raise `ConfigError` naming them."""
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

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

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
    return yaml.safe_load(path.read_text()) or {}


def parse_value(text: str) -> Any:
    """A `-p key value` string as YAML would read it (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_params(pairs: list[list[str]] | None) -> dict[str, Any]:
    """`[["lr", "1e-4"], ...]` (argparse `-p key value`, repeatable) to a typed mapping."""
    return {k: parse_value(v) for k, v in (pairs or [])}
