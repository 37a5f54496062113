"""YAML site files -> plain data plus positions, with strict YAML 1.2-like rules (see `source` for why).

A module of its own so that PyYAML is imported only when a YAML file is read: start-up with a TOML file
never pays for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from forkserve.config.source_types import KeyPath, Position, Problem, Source, SourceError


class _StrictComposer(yaml.SafeLoader):
    """Refuses anchors, aliases and explicit tags while composing, before anything could be expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SourceError(
                "anchors and aliases (&name, *name) are not allowed in a site file; write the value out "
                "(a value starting with * or & must be quoted)", mark.line + 1, mark.column + 1,
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise SourceError(f"explicit tags ({tag}) are not allowed in a site file", mark.line + 1, mark.column + 1)
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Source:
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_syntax(exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SourceError(f"character {exc.character!r} is not allowed in YAML", line, col) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"YAML syntax error: {exc}") from None
    builder = _YamlBuilder()
    data = None if node is None else builder.build(node, ())
    return Source(data, builder.positions, tuple(builder.problems))


def _compose(text: str) -> yaml.Node | None:
    loader = _StrictComposer(text)  # the reader checks characters here already
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _yaml_syntax(exc: yaml.MarkedYAMLError) -> SourceError:
    mark = exc.problem_mark or exc.context_mark
    words = " ".join(part for part in (exc.context, exc.problem) if part)
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return SourceError(f"YAML syntax error: {words or exc}", line, col)


_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_OCTAL_RE = re.compile(r"^[-+]?0[0-9_]+$")
_BASED_RE = re.compile(r"^[-+]?0[xXoObB][0-9a-fA-F_]+$")
_SEXAGESIMAL_RE = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$")
_UNDERSCORE_RE = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?$")
_NAN_INF_RE = re.compile(r"^([-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$")
_YAML11_BOOLS = {"yes", "no", "on", "off"}  # not y/n: PyYAML and YAML 1.2 read those as strings
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}


class _YamlBuilder:
    def __init__(self) -> None:
        self.positions: dict[KeyPath, Position] = {}
        self.problems: list[Problem] = []

    def refuse(self, path: KeyPath, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(path, node.start_mark.line + 1, node.start_mark.column + 1, message))

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return self.sequence(node, path)
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.refuse(path, key_node, "keys must be plain strings, found a list or mapping used as a key")
                continue
            key = key_node.value
            here = (*path, key)
            if key in first_line:
                self.refuse(here, key_node, f"duplicate key {key!r} (first at line {first_line[key]}); "
                            "YAML would silently keep only the last one")
                continue
            first_line[key] = key_node.start_mark.line + 1
            self.positions[here] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, here)
        return out

    def sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        out = []
        for index, item in enumerate(node.value):
            key = (*path, index)  # not inline in the subscript: mypy reads `x[(*a, b)]` as 3.11-only PEP 646 syntax
            self.positions[key] = (item.start_mark.line + 1, item.start_mark.column + 1)
            out.append(self.build(item, key))
        return out

    def scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        text = node.value
        if node.style is not None:  # quoted, literal (|) or folded (>): always a string
            return text
        resolved = _plain_scalar(text)
        if isinstance(resolved, _Refused):
            self.refuse(path, node, resolved.message)
            return text
        return resolved


@dataclass(frozen=True)
class _Refused:
    message: str


def _plain_scalar(text: str) -> Any:
    """YAML 1.2 core-schema reading of an unquoted scalar; what YAML 1.1 would read differently is refused."""
    for rule in _PLAIN_RULES:
        found = rule(text)
        if found is not _NO_MATCH:
            return found
    return text


_NO_MATCH = object()


def _nulls_and_bools(text: str) -> Any:
    if text in _NULLS:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    if text.lower() in _YAML11_BOOLS:
        return _Refused(f"{text} is ambiguous: YAML 1.1 reads it as a boolean; write \"{text}\" in quotes for "
                        "a string, or true/false for a boolean")
    return _NO_MATCH


def _numbers(text: str) -> Any:
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    if _NAN_INF_RE.match(text):
        return _Refused(f"{text} is not a number here: nan and infinity are not allowed")
    return _NO_MATCH


def _yaml11_numbers(text: str) -> Any:
    quoted = f'"{text}"'
    if _OCTAL_RE.match(text):
        return _Refused(f"{text} is ambiguous: YAML 1.1 reads a leading 0 as octal; write {text.lstrip('0') or 0} "
                        f"for a number, or {quoted} in quotes for a string")
    if _BASED_RE.match(text):
        return _Refused(f"{text} is not a decimal number; write the number in decimal, or {quoted} in quotes")
    if _SEXAGESIMAL_RE.match(text):
        return _Refused(f"{text} is ambiguous: YAML 1.1 reads it as a base-60 number; write {quoted} in quotes "
                        "for a string")
    return _NO_MATCH


def _underscores(text: str) -> Any:
    if _UNDERSCORE_RE.match(text):
        return _Refused(f"{text} is ambiguous: write the number without underscores, or \"{text}\" in quotes")
    return _NO_MATCH


# Order matters: what YAML 1.1 reads surprisingly is refused before the plain number rules could accept it.
_PLAIN_RULES = (_nulls_and_bools, _yaml11_numbers, _numbers, _underscores)
