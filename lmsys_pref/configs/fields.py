"""The field table of the config dataclasses: one parser for typed values, one source for help.

`coerce` converts a value (YAML-typed, or the raw text of `-p key value`) to a field's annotated
type: int, float, bool, str, list / list[X], dict, `X | None` and `typing.Literal[...]` choices.
`field_table` reads each field's type, default and docstring (the string literal under the
field in `configs/*.py`) once per class; `params_help` renders it for `--help`.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from typing import Annotated, Any, Literal

import yaml

NULLS = ("null", "None", "~")
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class ConfigError(ValueError):
    """Unknown field, unknown preset, a preset of another run kind or a badly typed value."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The valid range of a numeric field, kept in its annotation (`Annotated[int, Bounds(0)]`)
    and checked when the config is built, before any data is read. A bounded float must also
    be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        """The range as the user reads it: '>= 0', '> 0', 'in (0, 1]'."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"{'<' if self.high_open else '<='} {self.high}"

    def check(self, where: str, value) -> None:
        """Raise `ConfigError` naming `where` when `value` is outside the range."""
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open
                                        else value <= self.high)
        if not (math.isfinite(value) and low_ok and high_ok):
            kind = "an integer" if isinstance(value, int) else "a finite number"
            raise ConfigError(f"{where}: {value!r} is out of range; expected {kind} "
                              f"{self.text()}")


# The ranges the config classes use (one place; `describe` shows them in --help).
Count = Annotated[int, Bounds(0)]  # rows, rounds, steps where 0 means "all", "off" or "none"
PositiveCount = Annotated[int, Bounds(1)]  # sizes that must be at least one
Seed = Annotated[int, Bounds(0, 2**32 - 1)]  # numpy and sklearn take 32-bit unsigned seeds
Fraction = Annotated[float, Bounds(0, 1, low_open=True)]  # a share of rows or features
Share = Annotated[float, Bounds(0, 1, high_open=True)]  # a probability or share that may be 0
OpenFraction = Annotated[float, Bounds(0, 1, low_open=True, high_open=True)]  # a holdout share
Rate = Annotated[float, Bounds(0, low_open=True)]  # rates, scales, epochs: finite and > 0
NonNegative = Annotated[float, Bounds(0)]  # penalties and weights: finite and >= 0


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (string annotations evaluated once), with the
    `Bounds` of `Annotated` fields kept."""
    return typing.get_type_hints(cls, include_extras=True)


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def describe(tp) -> str:
    """A type as the user reads it: 'int', 'int >= 0', 'one of: none, swap', 'str or null'."""
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return " ".join([describe(base)] + [e.text() for e in extras if isinstance(e, Bounds)])
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of: " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) is list:
        return f"list of {describe(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _scalar(where: str, value, tp):
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE
    elif tp is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and number == int(number):
            return int(number)
    elif tp is float and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, (str, int, float)) else None
        except ValueError:
            number = None
        if number is not None and not math.isnan(number):
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{where}: {value!r} is not {'an' if tp is int else 'a'} {describe(tp)}")


def _container(where: str, value, tp):
    origin = typing.get_origin(tp) or tp
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if origin is list and isinstance(parsed, str):  # -p lora_targets q_proj,v_proj
            parsed = [p.strip() for p in parsed.split(",") if p.strip()]
        value = parsed
    if origin is list and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        return [coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)] if args \
            else list(value)
    if origin is dict and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{where}: {value!r} is not a {describe(tp)}")


def coerce(where: str, value, tp):
    """`value` converted to the annotated type `tp`, or `ConfigError` naming `where`.

    Args:
        where: what the value is, for the message (e.g. "LMConfig: parameter 'lora_r'").
        value: YAML-typed or raw text (`-p` values stay text until here).
        tp: the field's resolved annotation.
    """
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        value = coerce(where, value, base)
        for extra in extras:
            if isinstance(extra, Bounds):
                extra.check(where, value)
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value in NULLS):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(where, value, arg)
            except ConfigError as err:
                errors.append(err)
        out_of_range = [e for e in errors if "out of range" in str(e)]
        raise out_of_range[0] if out_of_range else \
            ConfigError(f"{where}: {value!r} is not {describe(tp)}")
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if tp in (bool, int, float, str):
        return _scalar(where, value, tp)
    if (typing.get_origin(tp) or tp) in (list, dict):
        return _container(where, value, tp)
    return value


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One row of the field table."""

    name: str
    type: str
    default: Any
    doc: str


def _docstrings(klass: type) -> dict[str, str]:
    """Field name -> the string literal right under it, in `klass`'s own source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError):  # no source (frozen app): help without docstrings
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


@functools.cache
def field_table(cls: type) -> tuple[FieldDoc, ...]:
    """Every field of a config class: name, type, default and docstring (subclasses' own
    docstrings override the inherited ones)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_docstrings(klass))
    hints = type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append(FieldDoc(f.name, describe(hints[f.name]), default, docs.get(f.name, "")))
    return tuple(rows)


def params_help(cls: type, preset_values: dict | None = None, preset: str | None = None) -> str:
    """The `-p` section of `--help`: each field's type, default and docstring.

    Args:
        cls: the config class.
        preset_values: the preset's raw values; they replace the class defaults shown.
        preset: the preset's name, for the heading.
    """
    preset_values = preset_values or {}
    head = ("parameters (-p KEY VALUE, repeatable" +
            (f"; defaults from preset {preset} where it sets them" if preset else "") + "):")
    lines = [head]
    for row in field_table(cls):
        default = preset_values.get(row.name, row.default)
        lines.append(f"  {row.name}  ({row.type}; default {default!r})")
        for par in row.doc.split("\n\n") or [""]:
            lines += textwrap.wrap(" ".join(par.split()), 96, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
    return "\n".join(lines)
