"""`${VAR}` and `${VAR:-default}` in the string values of a site file, from the environment of the loader. Pure.

Why here, between parsing and the models: a value from the environment must pass the same rules as one written
out (the models see only the expanded data), and a problem must still be located at the key that holds the
reference (the parsed positions are keyed by path, and expansion keeps every path).

The rules, strict like the rest of the site file:
- only string *values* are expanded: never keys (the shape of a file cannot depend on the environment) and
  never numbers or booleans (`workers = "${N}"` is a string and is refused as one: the type of a key is
  written in the file);
- `${NAME}`: the variable's value; unset is an error (located, naming the variable). An empty value is a value;
- `${NAME:-default}`: the default when NAME is unset *or empty* (as in POSIX sh); the default is literal text,
  it may hold `$$` but no `${` (no nesting) and no `}`;
- `$$` is a literal `$`; any other `$` is an error, so `$HOME` (which a shell would expand) is never silently
  kept as text;
- one expanded value is at most MAX_VALUE_CHARS (Linux's own limit for one environment string) and all of them
  together at most MAX_TOTAL_CHARS, so a small file cannot grow into gigabytes by repeating a large variable.

What a result depended on (every variable read, set or not) is returned with it, so that a cached result can
be reused only while those variables are unchanged (`config.dependencies`); which key paths hold expanded text
is returned too, so that no message ever echoes a value that came from the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forkserve.config.source_types import KeyPath

MAX_VALUE_CHARS = 128 * 1024  # MAX_ARG_STRLEN: the kernel refuses a longer environment string anyway
MAX_TOTAL_CHARS = 4 << 20
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExpandError(ValueError):
    """A reference that cannot be expanded; the message never holds a variable's value."""


@dataclass
class Expansion:
    """Everything one walk over a file's data found."""

    reads: dict[str, str | None] = field(default_factory=dict)  # every variable read: its value, None if unset
    templates: dict[KeyPath, str] = field(default_factory=dict)  # path -> the text as written, where it changed
    problems: list[tuple[KeyPath, str]] = field(default_factory=list)
    total: int = 0


def expand(text: str, environ: Mapping[str, str], reads: dict[str, str | None] | None = None) -> str:
    """`text` with its references replaced; ExpandError for a bad or unset reference. Variables read go to
    `reads` (name -> value, None when unset)."""
    if "$" not in text:
        return text
    out: list[str] = []
    size = 0
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        piece, i = _reference(text, j, environ, reads)
        out.append(piece)
        size += len(piece)
        if size + j > MAX_VALUE_CHARS:
            raise ExpandError(f"the expanded value is longer than {MAX_VALUE_CHARS // 1024} KiB")
    result = "".join(out)
    if len(result) > MAX_VALUE_CHARS:
        raise ExpandError(f"the expanded value is longer than {MAX_VALUE_CHARS // 1024} KiB")
    return result


def _reference(text: str, at: int, environ: Mapping[str, str], reads: dict[str, str | None] | None
               ) -> tuple[str, int]:
    """The text that the `$...` starting at `at` stands for, and the index after it."""
    nxt = text[at + 1 : at + 2]
    if nxt == "$":
        return "$", at + 2
    if nxt != "{":
        shown = text[at : at + 1 + len(m[0])] if (m := NAME_RE.match(text, at + 1)) else "$"
        hint = f"write ${{{shown[1:]}}} to use the variable, or $$" if len(shown) > 1 else "write $$"
        raise ExpandError(f"`{shown}` is not a reference: {hint} for a literal $")
    end = text.find("}", at + 2)
    if end < 0:
        raise ExpandError("`${` is not closed: write ${NAME} or ${NAME:-default}, or $$ for a literal $")
    body = text[at + 2 : end]
    name, sep, default = body.partition(":-")
    if not name:
        raise ExpandError("`${}` names no variable: write ${NAME} or ${NAME:-default}")
    if not NAME_RE.fullmatch(name):
        raise ExpandError(f"`${{{_short(body)}}}` is not a reference: write ${{NAME}} or ${{NAME:-default}} "
                          "(NAME: letters, digits and _, not starting with a digit)")
    if len(name) > 200:
        raise ExpandError(f"`${{{_short(name)}}}` names a variable longer than 200 characters")
    if sep and "${" in default:
        raise ExpandError(f"the default of ${{{name}:-...}} holds `${{`: references do not nest")
    value = environ.get(name)
    if reads is not None:
        reads[name] = value
    if value is None or (sep and value == ""):
        if not sep:
            raise ExpandError(f"environment variable {name} is not set (write ${{{name}:-default}} for a "
                              "default)")
        return _literal_default(name, default), end + 1
    return value, end + 1


def _literal_default(name: str, default: str) -> str:
    out = default.replace("$$", "\0")
    if "$" in out:
        raise ExpandError(f"the default of ${{{name}:-...}} holds a lone $: write $$ for a literal $")
    return out.replace("\0", "$")


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def expand_data(data: Any, environ: Mapping[str, str]) -> tuple[Any, Expansion]:
    """A copy of parsed site data with every string value expanded (keys and non-strings untouched). A string
    that cannot be expanded stays as written and is reported at its path."""
    found = Expansion()
    return _walk(data, (), environ, found), found


def _walk(data: Any, path: KeyPath, environ: Mapping[str, str], found: Expansion) -> Any:
    if isinstance(data, dict):
        return {key: _walk(value, (*path, key), environ, found) for key, value in data.items()}
    if isinstance(data, list):
        return [_walk(value, (*path, index), environ, found) for index, value in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data
    try:
        value = expand(data, environ, found.reads)
    except ExpandError as exc:
        found.problems.append((path, str(exc)))
        return data
    if value != data:
        found.templates[path] = data
        found.total += len(value)
        if found.total > MAX_TOTAL_CHARS:
            found.problems.append((path, f"the expanded values of this file exceed {MAX_TOTAL_CHARS >> 20} MiB "
                                         "in total"))
            found.total = -(1 << 62)  # reported once
    return value
