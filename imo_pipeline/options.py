"""Typed options: values checked against a dataclass's field types, with one-line errors.

Two sources share the same rules: text from the command line (``--encoder-opt
fps=10``, cast with ``cast_text``) and values already parsed from a file (TOML,
a store's JSON config, checked with ``check_value``). Supported field types:
``bool``, ``int``, ``float`` (finite only), ``str``, ``Path``, ``Literal[...]``
(choices), ``list[X]``, ``tuple[X, Y]`` / ``tuple[X, ...]`` (from a list),
``dict[str, X]`` (a table), ``X | Y`` (the first that fits) and ``X | None``.
A float field takes an integer; a bool is never taken as a number.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True), ``X | Y | None`` -> (X | Y, True); anything else -> (tp, False)."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return tp, False


def describe(tp: Any) -> str:
    """What a value of ``tp`` looks like, for error messages."""
    base, optional = _optional(tp)
    origin = typing.get_origin(base)
    if origin is Literal:
        text = "one of " + ", ".join(str(c) for c in typing.get_args(base))
    elif origin is list:
        text = f"a list of {describe(typing.get_args(base)[0])}"
    elif origin is tuple:
        args = typing.get_args(base)
        text = (f"a list of {describe(args[0])}" if len(args) == 2 and args[1] is Ellipsis
                else f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})")
    elif origin is dict:
        text = f"a table of {describe(typing.get_args(base)[1])}"
    elif _is_union(base):
        text = " or ".join(describe(a) for a in typing.get_args(base))
    elif base is Any:
        text = "any value"
    else:
        text = {bool: "true or false", int: "an integer", float: "a finite number", str: "text",
                Path: "a path"}.get(base, getattr(base, "__name__", str(base)))
    return f"{text} (or none)" if optional else text


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` (from a parsed file) if it fits ``tp``, normalised (int -> float for a float field);
    ConfigError naming ``where`` otherwise."""
    base, optional = _optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: got no value; give {describe(tp)}")
    origin = typing.get_origin(base)
    ok, out = False, value
    if _is_union(base):
        for alt in typing.get_args(base):
            try:
                return check_value(value, alt, where)
            except ConfigError:
                pass
    elif origin is Literal:
        ok = any(value == c and type(value) is type(c) for c in typing.get_args(base))
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [check_value(v, typing.get_args(base)[0], where) for v in value]
    elif origin is tuple:
        args = typing.get_args(base)
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(check_value(v, args[0], where) for v in value)
            if len(value) == len(args):
                return tuple(check_value(v, a, where) for v, a in zip(value, args))
    elif origin is dict:
        kt, vt = typing.get_args(base)
        if isinstance(value, dict):
            return {check_value(k, kt, where): check_value(v, vt, f"{where}.{k}") for k, v in value.items()}
    elif base is Any:
        ok = True
    elif base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        out = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base is Path:
        ok = isinstance(value, (str, Path)) and str(value) != ""
        out = Path(value) if ok else value
    else:
        ok = isinstance(value, base) if isinstance(base, type) else True
    if not ok:
        raise ConfigError(f"{where}: {value!r} is not {describe(tp)}")
    return out


def cast_text(text: str, tp: Any, where: str) -> Any:
    """``text`` (from the command line) cast to ``tp``; ConfigError naming ``where`` if it does not fit."""
    base, optional = _optional(tp)
    t = text.strip()
    if optional and t.lower() in _NONE:
        return None
    origin = typing.get_origin(base)
    if origin is Literal:
        for choice in typing.get_args(base):
            if str(choice) == t:
                return choice
        raise ConfigError(f"{where}: {text!r} is not {describe(tp)}")
    if origin is list:
        return [cast_text(x, typing.get_args(base)[0], where) for x in t.split(",") if x.strip()]
    try:
        if base is bool:
            if t.lower() in _TRUE + _FALSE:
                return t.lower() in _TRUE
            raise ValueError
        if base is int:
            return int(t)
        if base is float:
            x = float(t)
            if not math.isfinite(x):
                raise ValueError
            return x
        if base is Path:
            if not t:
                raise ValueError
            return Path(t)
        if base is str:
            return text
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not {describe(tp)}") from None
    return check_value(text, tp, where)


def check_fields(cls: type, values: dict[str, Any], what: str, valid_keys: list[str] | None = None) -> dict[str, Any]:
    """``values`` checked against dataclass ``cls``: unknown keys refused listing the valid ones (``valid_keys``,
    default every field), each value checked with ``check_value``. ``what`` names the owner in messages."""
    types_ = field_types(cls)
    valid = valid_keys if valid_keys is not None else list(types_)
    unknown = sorted(k for k in values if k not in valid)
    if unknown:
        raise ConfigError(f"{what} has no option {', '.join(map(repr, unknown))}; valid: {', '.join(valid) or 'none'}")
    return {k: check_value(v, types_[k], f"{what} option {k}") for k, v in values.items()}


def parse_pairs(items: list[str] | tuple[str, ...], option: str) -> dict[str, str]:
    """``["fps=10", "face=false"]`` -> ``{"fps": "10", "face": "false"}``; ConfigError naming ``option``."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} fps=10")
        if key in out:
            raise ConfigError(f"{option} {key} is given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out
