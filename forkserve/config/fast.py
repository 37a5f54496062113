"""A pydantic-free fast path for TOML site files: "valid, here is the result" or None ("can't vouch").

Importing pydantic and building the models costs ~110 ms of start-up, and most site files are valid. So the
master tries this first, in-process; on None it validates in the pydantic child (`config.isolated`), which stays
the single source of truth for every error message. This path must never accept what the models reject, and must
produce exactly their result (tests/config/test_fast.py is a differential test). It is deliberately narrow: an
interpreter of the JSON Schema subset in `site_schema.SCHEMA` (generated from the models; an unknown keyword makes
it refuse, so a model change fails safe) with pydantic strict-mode types, a plain-Python mirror of each custom
validator of the models (`MIRRORED`), then the loader's own `cross_check`.

After changing the models, regenerate site_schema.py: `.venv/bin/python -m forkserve.config.fast --regenerate`.
"""

from __future__ import annotations

import math
import os
import re
import sys
from types import SimpleNamespace

from forkserve.config.binds import canonical_bind, parse_bind
from forkserve.config.crosscheck import cross_check
from forkserve.config.isolated import MAX_SITE_BYTES
from forkserve.config.site_schema import SCHEMA
from forkserve.spec import LoadedSite

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TYPE_CHECKING = False  # not `from typing import ...`: this runs in the master on the start-up critical path
if TYPE_CHECKING:
    from typing import Any

# The custom validators of config.models mirrored below, as (model, field): "<model>" is a model validator,
# "field[]" a validator of each item. A test fails when the models declare any other.
MIRRORED = frozenset({
    ("ServerConfig", "metrics"), ("ServerConfig", "control_socket"), ("ServerConfig", "pidfile"),
    ("ServerConfig", "access_log"), ("ServerConfig", "error_log"), ("AppConfig", "chdir"),
    ("AppConfig", "pythonpath"), ("AppConfig", "max_surge"), ("AppConfig", "max_unavailable"),
    ("AppConfig", "<model>"), ("AppConfig", "binds[]"),
})


class _Refuse(Exception):  # this path cannot vouch for the file: the models decide (and explain) instead
    pass


def quick_load(data: bytes, path: str) -> LoadedSite | None:
    """The LoadedSite the models would produce for this TOML file, or None when this path cannot vouch for it."""
    try:
        return _load(data, path)
    except Exception:  # _Refuse, a bad bind, a TOML syntax error, RecursionError...: the models will say
        return None


def _load(data: bytes, path: str) -> LoadedSite:
    # The loader's own preconditions (config.load._format_of, _decode, _parse), tested the same way.
    if os.path.splitext(path)[1].lower() != ".toml" or len(data) > MAX_SITE_BYTES or not data.strip():
        raise _Refuse
    raw = tomllib.loads(data.decode("utf-8").removeprefix("\ufeff"))
    if not isinstance(raw, dict) or not raw:
        raise _Refuse
    base_dir = os.path.dirname(os.path.abspath(path))
    site = _validate(SCHEMA, raw)
    apps = {name: _app(app, base_dir) for name, app in site["apps"].items()}
    if cross_check(raw, path, base_dir):
        raise _Refuse
    # LoadedSite.from_config only reads attributes: plain namespaces holding the models' values will do.
    site_ns = SimpleNamespace(server=_server(site["server"], base_dir), apps=apps)
    return LoadedSite.from_config(site_ns)  # type: ignore[arg-type]


# --- the JSON Schema subset, with pydantic strict-mode types ---------------------------------------------------------

def _is(v: Any, kind: str) -> bool:
    if kind == "number":  # int or float, not bool; every float field of the models forbids inf and nan
        return (type(v) is int or type(v) is float) and math.isfinite(v)
    if kind == "null":
        return v is None
    types = {"integer": int, "string": str, "boolean": bool, "array": list, "object": dict}
    if kind not in types:
        raise _Refuse
    return type(v) is types[kind]  # strict: True is not an int, 4.0 is not an int, "4" is not a number


def _matches(text: str, pattern: str) -> bool:
    # pydantic uses Rust regex, whose `$` is only the end of the text; Python's also matches before a final "\n".
    return "\n" not in text and re.search(pattern, text) is not None


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # False is not 0


# Keyword -> test of the value; "type" first (dicts keep order), so that the others see the type they expect.
_CHECKS = {
    "type": _is,
    "const": _same,
    "enum": lambda v, options: any(_same(v, option) for option in options),
    "pattern": _matches,
    "minimum": lambda v, bound: v >= bound,
    "maximum": lambda v, bound: v <= bound,
    "exclusiveMinimum": lambda v, bound: v > bound,
    "minItems": lambda v, n: len(v) >= n,
    "minProperties": lambda v, n: len(v) >= n,
}
KEYWORDS = set(_CHECKS) | {"$defs", "$ref", "anyOf", "default", "items", "properties", "patternProperties",
                           "additionalProperties", "required"}  # the others are handled in _validate and _object


def _deref(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in schema:
        return schema
    if len(schema) != 1 or not schema["$ref"].startswith("#/$defs/"):  # siblings of $ref: not our subset
        raise _Refuse
    return SCHEMA["$defs"][schema["$ref"][8:]]  # type: ignore[no-any-return]


def _validate(schema: dict[str, Any], v: Any) -> Any:
    """`v` as the models would produce it (defaults filled in, ints of "number" fields as floats, arrays as tuples:
    every array field of the frozen models is a tuple); raises _Refuse when it cannot vouch for it."""
    schema = _deref(schema)
    if not schema.keys() <= KEYWORDS:
        raise _Refuse
    if "anyOf" in schema:
        if not schema.keys() <= {"anyOf", "default"}:
            raise _Refuse
        results = []
        for option in schema["anyOf"]:
            try:
                results.append(_validate(option, v))
            except _Refuse:
                pass
        if len(results) != 1:  # two options match: pydantic's smart union might pick the other one
            raise _Refuse
        return results[0]
    if not all(check(v, schema[key]) for key, check in _CHECKS.items() if key in schema):
        raise _Refuse
    if type(v) is list:
        return tuple(_validate(schema["items"], item) for item in v) if "items" in schema else tuple(v)
    if type(v) is dict:
        return _object(schema, v)
    return float(v) if schema.get("type") == "number" else v


def _object(schema: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    patterns: dict[str, Any] = schema.get("patternProperties", {})
    if schema.get("additionalProperties", False) is not False:
        raise _Refuse  # extra keys kept or dropped by the model: not our subset
    out = {}
    for key, value in v.items():
        subs = ([props[key]] if key in props else []) + [s for p, s in patterns.items() if _matches(key, p)]
        if len(subs) != 1:  # an unknown key (additionalProperties false), or two schemas for one key
            raise _Refuse
        out[key] = _validate(subs[0], value)
    for key, sub in props.items():
        if key in v:
            continue
        if key in schema.get("required", ()):
            raise _Refuse
        if "default" in sub:  # the models validate their defaults (validate_default=True): so do we
            out[key] = _validate(sub, sub["default"])
        elif _deref(sub).get("type") == "object":  # a default_factory (a model, a dict): its defaults, or {}
            out[key] = _validate(sub, {})
        else:
            raise _Refuse
    return out


# --- the models' custom validators (MIRRORED), in plain Python ------------------------------------------------------

def _resolve(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _path(v: str, base_dir: str) -> str:
    if not v or "\0" in v:  # ServerConfig._optional_path and _log_path refuse these
        raise _Refuse
    return _resolve(v, base_dir)


def _server(server: dict[str, Any], base_dir: str) -> SimpleNamespace:
    if server["metrics"] is not None:
        bind = parse_bind(server["metrics"])
        if bind.kind != "tcp":
            raise _Refuse
        server["metrics"] = str(bind)
    for key in ("control_socket", "pidfile"):
        if server[key] is not None:
            server[key] = _path(server[key], base_dir)
    for key in ("access_log", "error_log"):
        if server[key] is not False and server[key] != "-":
            server[key] = _path(server[key], base_dir)
    return SimpleNamespace(**server)


def _bind(text: str, base_dir: str) -> str:
    canon = canonical_bind(text)  # ValueError for a bad bind: caught in quick_load
    return "unix:" + _resolve(canon[5:], base_dir) if canon.startswith("unix:") else canon


def _app(app: dict[str, Any], base_dir: str) -> SimpleNamespace:
    # Mirrored elsewhere: AppConfig._count_or_ratio by the schema itself (config.schema writes its ranges into
    # max_surge and max_unavailable), AppConfig._cross_fields by cross_check (_gevent_only, _rolling_stuck).
    app["binds"] = tuple(_bind(b, base_dir) for b in app["binds"])
    app["chdir"] = None if app["chdir"] is None else _resolve(app["chdir"], base_dir)
    app["pythonpath"] = tuple(_resolve(p, base_dir) for p in app["pythonpath"])
    return SimpleNamespace(**app)


# --- site_schema.py --------------------------------------------------------------------------------------------------

def _strip(node: Any, names: bool = False) -> Any:
    """The schema without annotations. Keys under properties/patternProperties/$defs are names, not keywords, and
    default/const/enum hold data: those are kept whole."""
    if isinstance(node, list):
        return [_strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {name: _strip(sub) for name, sub in node.items()}
    return {key: value if key in ("default", "const", "enum") else
            _strip(value, names=key in ("properties", "patternProperties", "$defs"))
            for key, value in node.items() if key not in ("description", "title", "$schema", "$id")}


def _literal(value: Any, indent: str = "") -> str:
    """`value` as Python source, one key or item a line when it does not fit on one."""
    flat = repr(value)
    if len(indent) + len(flat) <= 90 or not isinstance(value, (dict, list)):
        return flat
    inner = indent + "    "
    if isinstance(value, dict):
        lines = [f"{inner}{key!r}: {_literal(item, inner)}," for key, item in value.items()]
        return "{\n" + "\n".join(lines) + f"\n{indent}}}"
    return "[\n" + "\n".join(f"{inner}{_literal(item, inner)}," for item in value) + f"\n{indent}]"


def render_schema_module() -> str:
    """The text of site_schema.py. Imports the models: for `--regenerate` and the drift test, never at start-up."""
    from forkserve.config.schema import site_schema

    return ("# GENERATED from the models (forkserve.config.schema.site_schema): do not edit. Regenerate with\n"
            "#     .venv/bin/python -m forkserve.config.fast --regenerate\n"
            "# The site JSON Schema without titles and descriptions, as a Python literal, so that the fast path\n"
            "# (config.fast) reads it without pydantic or json. tests/config/test_fast.py fails when it drifts.\n"
            "# ruff: noqa: E501\n\n"
            f"SCHEMA: dict = {_literal(_strip(site_schema()))}\n")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m forkserve.config.fast --regenerate")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "site_schema.py"), "w") as f:
        f.write(render_schema_module())
