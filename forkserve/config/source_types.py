"""What a parsed site file is made of: key paths, positions, problems, `Source`, `SourceError`, `format_path`.

A module of its own so that the TOML reader (`source`), the YAML reader (`source_yaml`), the cross checks and
the messages share these types without importing each other: `source` imports `source_yaml` (for YAML files
only), and `source_yaml` needs only these types, so neither depends on the other in both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

KeyPath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line and column


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the text itself (as opposed to a value the models reject)."""

    path: KeyPath
    line: int | None
    col: int | None
    message: str


@dataclass(frozen=True)
class Source:
    data: Any
    positions: dict[KeyPath, Position] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()


class SourceError(Exception):
    """The text cannot be read as the format at all (a syntax error): one located problem."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col


_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: KeyPath) -> str:
    """`("apps", "api", "binds", 1)` -> `apps.api.binds[1]`; odd keys are quoted as TOML would."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY_RE.match(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out += f".{text}" if out else text
    return out
