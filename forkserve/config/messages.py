"""pydantic's error records -> (key path, plain words): what was expected, what was found, what to write.

pydantic says "Input should be a valid integer" at `('apps', 'api', 'max_surge', 'int')`; a person editing a
site file needs `apps.api.workers: expected an integer, found the string "4"; write 4 without quotes`. Union
members (`int`, `str`, `literal[False]`) in a location are not keys; they are dropped and their errors merged.

A value expanded from the environment (`${VAR}`, `config.expand`) may be a secret: at such a key the message
shows the text as written in the file, never the value, and offers no hint built from the value.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic_core import ErrorDetails

from forkserve.config.models import AppConfig, ServerConfig, SiteConfig
from forkserve.config.source import KeyPath
from forkserve.config.suggest import did_you_mean

# What a key accepts when its type is a union (several pydantic errors for one key).
_UNION_EXPECTED = {
    "access_log": 'expected a path, "-" for stdout, or false',
    "max_surge": 'expected a count or a percentage like "25%"',
    "max_unavailable": 'expected a count or a percentage like "25%"',
}
_PATTERN_EXPECTED = {
    "module": 'expected "dotted.module:attribute" (identifiers separated by dots; no calls, expressions or '
    "private attributes)",
    "unix_socket_mode": 'expected an octal permission string like "0660"',
}
_TYPE_EXPECTED = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "finite_number": "expected a finite number",
}


def describe(value: Any, fmt: str) -> str:
    """A found value in the words of the file's format: `the string "4"`, `the integer 4`, `a table`."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else "infinity" if math.isinf(value) else f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'the string "{shown}"'
    if isinstance(value, dict):
        return "a table" if fmt == "toml" else "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"the date/time {value.isoformat()}"
    return f"a {type(value).__name__}"


def _hint(kind: str, value: Any) -> str:
    """What to write instead, when the intent is obvious."""
    if kind == "int_type" and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return f"; write {int(value)} without quotes"
    if kind == "int_type" and isinstance(value, float) and value.is_integer():
        return f"; write {int(value)}"
    if kind == "float_type" and isinstance(value, str) and _is_number(value):
        return f"; write {value.strip()} without quotes"
    if kind == "bool_type" and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return "; write true or false without quotes"
    if kind == "string_type" and isinstance(value, (int, float)):
        text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
        return f'; write "{text}" in quotes'
    if kind in ("tuple_type", "list_type") and isinstance(value, str):
        return f'; write a list: ["{value}"]'
    return ""


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _has(container: Any, part: int | str) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, (list, tuple)) and isinstance(part, int) and 0 <= part < len(container)


def clean_path(loc: tuple[int | str, ...], data: Any, kind: str) -> tuple[KeyPath, str | None]:
    """The key path of an error in the file's data, and the union member or key marker that followed it."""
    path: list[str | int] = []
    here = data
    for n, part in enumerate(loc):
        if _has(here, part):
            path.append(part)
            here = here[part]
        elif kind == "missing" and n == len(loc) - 1 and isinstance(part, str):
            path.append(part)
        else:
            return tuple(path), str(part)
    return tuple(path), None


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _model_fields(path: KeyPath) -> list[str]:
    """Names allowed in the table at `path` (for "did you mean")."""
    if not path:
        return list(SiteConfig.model_fields)
    if path == ("server",):
        return list(ServerConfig.model_fields)
    if len(path) == 2 and path[0] == "apps":
        return list(AppConfig.model_fields)
    return []


def describe_hidden(template: str) -> str:
    """A value that came from the environment, in words that do not show it."""
    shown = template if len(template) <= 60 else template[:57] + "..."
    return f'the string "{shown}" from the environment (its value is not shown)'


def _hidden_hint(kind: str) -> str:
    if kind in ("int_type", "float_type", "bool_type", "finite_number"):
        return "; ${...} expands to a string, so this key cannot come from the environment: write the value"
    return ""


def _message(err: ErrorDetails, path: KeyPath, marker: str | None, fmt: str, hidden: str | None = None) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    key = str(path[-1]) if path else ""
    found = f", found {describe(value, fmt) if hidden is None else describe_hidden(hidden)}"
    if kind == "missing":
        return f"required key `{key}` is missing"
    if kind == "extra_forbidden":
        return f"unknown key `{key}`" + did_you_mean(key, _model_fields(path[:-1]))
    if marker == "[key]":
        return _bad_name(path, key)
    if kind in _TYPE_EXPECTED:
        return _TYPE_EXPECTED[kind] + found + (_hint(kind, value) if hidden is None else _hidden_hint(kind))
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected {'a table' if fmt == 'toml' else 'a mapping'}{found}"
    if kind == "literal_error":
        choices = [c.strip().strip("'") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]
        quoted = [f'"{c}"' for c in choices if c]
        words = " or ".join(quoted) if len(quoted) <= 2 else "one of " + ", ".join(quoted)
        return f"expected {words}{found}" + (did_you_mean(value, choices) if isinstance(value, str) and hidden is None
                                             else "")
    return _bound_message(kind, ctx, found) or _other_message(err, key, found)


def _bound_message(kind: str, ctx: dict[str, Any], found: str) -> str | None:
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("more than", "gt"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, name = bounds[kind]
        return f"expected a value {words} {ctx.get(name)}{found}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), found none"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} items, found {ctx.get('actual_length')}"
    return None


def _other_message(err: ErrorDetails, key: str, found: str) -> str:
    kind = err["type"]
    if kind == "string_pattern_mismatch":
        return _PATTERN_EXPECTED.get(key, f"expected text matching {err.get('ctx', {}).get('pattern')}") + found
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def _bad_name(path: KeyPath, key: str) -> str:
    if len(path) == 2 and path[0] == "apps":
        return (f'app name "{key}" is not allowed: start with a lowercase letter, then up to 62 of a-z, 0-9, '
                '"_" and "-"')
    return f'environment variable name "{key}" is not allowed: use letters, digits and "_", not starting with a digit'


def translate_errors(errors: Iterable[ErrorDetails], data: Any, fmt: str,
                     hidden: Mapping[KeyPath, str] | None = None) -> list[tuple[KeyPath, str]]:
    """Every pydantic error as (key path, message); errors of one union-typed key become one message.
    `hidden`: key paths whose value came from the environment -> their text as written (shown instead)."""
    hidden = hidden or {}
    out: list[tuple[KeyPath, str]] = []
    union_paths: set[KeyPath] = set()
    for err in errors:
        path, marker = clean_path(tuple(err["loc"]), data, err["type"])
        if err["type"] == "cross_field":
            out.append(((*path, str((err.get("ctx") or {}).get("at", ""))), err["msg"]))
            continue
        key = str(path[-1]) if path else ""
        if marker != "[key]" and key in _UNION_EXPECTED and err["type"] != "missing":
            if path not in union_paths:
                union_paths.add(path)
                shown = describe_hidden(hidden[path]) if path in hidden else describe(_value_at(data, path), fmt)
                out.append((path, f"{_UNION_EXPECTED[key]}, found {shown}"))
            continue
        out.append((path, _message(err, path, marker, fmt, hidden.get(path))))
    return out
