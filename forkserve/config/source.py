"""Site file text -> plain data plus the position of every key. Pure: no file access, no imports of config code.

Why not just `tomllib.loads` / `yaml.safe_load`: neither says where a key is, and PyYAML (YAML 1.1) silently turns
`no` into false, `010` into 8, `1:30` into 90, keeps the last of two duplicate keys and expands alias bombs.
A site file must be exact, so:

- TOML: tomllib parses (and reports syntax errors with a line); a small scanner of the already-valid text then
  records where each key, table header and array item starts.
- YAML (`source_yaml`, imported only for YAML files): PyYAML composes nodes (which carry marks) and we build
  the data ourselves with strict YAML 1.2-like rules: anchors, aliases and explicit tags are refused, duplicate
  keys are refused, and plain scalars that YAML 1.1 would read surprisingly are refused with a hint instead of
  converted.

A refused value is kept as its raw text in `data` and reported in `Source.problems`; the loader does not report
the same path again. The types both readers produce live in `source_types` (re-exported here), so that
`source_yaml` does not import this module back.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections.abc import Iterator
from typing import Any

from forkserve.config.source_types import KeyPath, Position, Problem, Source, SourceError, format_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["KeyPath", "Position", "Problem", "Source", "SourceError", "format_path", "iter_paths", "locate", "parse",
           "parse_toml"]


def locate(positions: dict[KeyPath, Position], path: KeyPath) -> Position | None:
    """Position of `path`, or of its nearest ancestor that the file spells out (a missing key -> its table)."""
    for end in range(len(path), 0, -1):
        found = positions.get(path[:end])
        if found:
            return found
    return None


def parse(text: str, fmt: str) -> Source:
    if fmt == "toml":
        return parse_toml(text)
    from forkserve.config.source_yaml import parse_yaml  # PyYAML costs ~20 ms to import: only for YAML files

    return parse_yaml(text)


# --- TOML -------------------------------------------------------------------------------------------------------

_TOML_AT_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_toml(text: str) -> Source:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_AT_RE.search(message)
        if match:
            raise SourceError(message[: match.start()], int(match[1]), int(match[2])) from None
        last_line = text.count("\n") + (0 if text.endswith("\n") else 1)
        raise SourceError(message.replace(" (at end of document)", " at the end of the file"), last_line) from None
    try:
        positions = _TomlScanner(text).scan()
    except (IndexError, ValueError, tomllib.TOMLDecodeError):  # pragma: no cover - the scanner is a best effort
        positions = {}
    return Source(data, positions)


class _TomlScanner:
    """Walks text that tomllib already accepted and records where keys and array items start."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.positions: dict[KeyPath, Position] = {}
        self.aot: dict[KeyPath, int] = {}  # arrays of tables: current index per path
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def pos(self, i: int) -> Position:
        line = bisect.bisect_right(self.line_starts, i)
        return line, i - self.line_starts[line - 1] + 1

    def scan(self) -> dict[KeyPath, Position]:
        table: KeyPath = ()
        while True:
            self.skip(newlines=True)
            if self.i >= len(self.text):
                return self.positions
            if self.text[self.i] == "[":
                table = self.header()
            else:
                self.key_value(table)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip(self, newlines: bool) -> None:
        while self.i < len(self.text):
            c = self.text[self.i]
            if c == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            elif c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            else:
                return

    def header(self) -> KeyPath:
        is_aot = self.text.startswith("[[", self.i)
        self.i += 2 if is_aot else 1
        parts = self.key()
        self.i += 2 if is_aot else 1
        path: KeyPath = ()
        for n, (name, at) in enumerate(parts):
            path = (*path, name)
            self.positions.setdefault(path, at)
            if path in self.aot and not (is_aot and n == len(parts) - 1):
                path = (*path, self.aot[path])  # [a.b] after [[a]] means the last element of a
        if is_aot:
            index = self.aot.get(path, -1) + 1
            self.aot[path] = index
            path = (*path, index)
            self.positions[path] = parts[-1][1]
        return path

    def key(self) -> list[tuple[str, Position]]:
        parts = []
        while True:
            self.skip(newlines=False)
            at = self.pos(self.i)
            parts.append((self.key_part(), at))
            self.skip(newlines=False)
            if self.peek() != ".":
                return parts
            self.i += 1

    def key_part(self) -> str:
        c = self.peek()
        if c in "\"'":
            start = self.i
            self.string()
            return tomllib.loads("k = " + self.text[start : self.i])["k"]
        start = self.i
        while self.i < len(self.text) and (self.text[self.i].isalnum() or self.text[self.i] in "_-"):
            self.i += 1
        return self.text[start : self.i]

    def key_value(self, table: KeyPath) -> None:
        path = table
        for name, at in self.key():
            path = (*path, name)
            self.positions.setdefault(path, at)
        self.i += 1  # "="
        self.skip(newlines=False)
        self.value(path)

    def value(self, path: KeyPath) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.array(path)
        elif c == "{":
            self.inline_table(path)
        else:
            while self.i < len(self.text) and self.text[self.i] not in ",]}\n#":
                self.i += 1

    def string(self) -> None:
        quote = self.text[self.i]
        if self.text.startswith(quote * 3, self.i):
            self.i += 3
            while not self.text.startswith(quote * 3, self.i):
                self.i += 2 if quote == '"' and self.text[self.i] == "\\" else 1
            self.i += 3
            while self.peek() == quote:  # up to two quotes may end the content
                self.i += 1
            return
        self.i += 1
        while self.text[self.i] != quote:
            self.i += 2 if quote == '"' and self.text[self.i] == "\\" else 1
        self.i += 1

    def array(self, path: KeyPath) -> None:
        self.i += 1
        index = 0
        while True:
            self.skip(newlines=True)
            if self.peek() == "]":
                self.i += 1
                return
            key = (*path, index)  # not inline in the subscript: mypy reads `x[(*a, b)]` as 3.11-only PEP 646 syntax
            self.positions[key] = self.pos(self.i)
            self.value(key)
            index += 1
            self.skip(newlines=True)
            if self.peek() == ",":
                self.i += 1

    def inline_table(self, path: KeyPath) -> None:
        self.i += 1
        while True:
            self.skip(newlines=True)
            if self.peek() == "}":
                self.i += 1
                return
            self.key_value(path)
            self.skip(newlines=True)
            if self.peek() == ",":
                self.i += 1


def iter_paths(data: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    """Every key path in plain data (used by tests and by position fallbacks)."""
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from iter_paths(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from iter_paths(value, (*path, index))
