"""Located problems in a site file. No pydantic here: the master imports this, never the models."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a site file, located as precisely as the source allows (1-based line and column)."""

    file: str
    line: int | None
    col: int | None
    path: str  # key path like "apps.api.binds[1]"; "" for a whole-file problem
    message: str

    def format(self) -> str:
        """`FILE:LINE:COL: key.path: message`, leaving out the parts that are not known."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A site file that cannot be used; `diagnostics` lists every problem found in one pass.

    `io_error` is true when the file could not be read at all (missing, permission denied): `check` exits 2
    for those, and 1 for files that were read but are invalid.
    """

    def __init__(self, diagnostics: list[Diagnostic], io_error: bool = False) -> None:
        self.diagnostics = list(diagnostics)
        self.io_error = io_error
        super().__init__("\n".join(d.format() for d in self.diagnostics))
