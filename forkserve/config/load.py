"""The one place a site file is read: path -> SiteConfig, or ConfigError with every problem, located.

Loading is pure apart from reading the file: no code named in the config is imported or executed here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import yaml
from pydantic import ValidationError

from forkserve.config.models import SiteConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a site file, located as precisely as the source allows."""

    file: str
    line: int | None
    col: int | None
    path: str  # key path like "apps.api.binds[1]"; "" for a whole-file problem
    message: str

    def format(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A site file that cannot be used; `diagnostics` lists every problem found in one pass."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))


def load(path: str | os.PathLike[str]) -> SiteConfig:
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            text = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        problem = Diagnostic(name, None, None, "", f"cannot read the file: {exc.strerror}")
        raise ConfigError([problem]) from None
    return load_text(text, name)


def load_text(text: bytes, path: str) -> SiteConfig:
    def fail(message: str) -> ConfigError:
        return ConfigError([Diagnostic(path, None, None, "", message)])

    if len(text) > MAX_BYTES:
        raise fail("the file is larger than 1 MiB")
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("the file is not valid UTF-8") from None
    try:
        data = tomllib.loads(source) if path.endswith(".toml") else yaml.safe_load(source)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise fail(f"syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise fail("the top level must be a mapping")
    base = os.path.dirname(os.path.abspath(path))
    try:
        return SiteConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        raise ConfigError([
            Diagnostic(path, None, None, ".".join(str(p) for p in err["loc"]), err["msg"])
            for err in exc.errors()
        ]) from None
