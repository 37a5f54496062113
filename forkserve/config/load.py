"""The one place a site file is validated: path -> SiteConfig, or ConfigError with every problem, located.

Steps, each of which may stop with one whole-file problem: read at most 1 MiB of a regular file (the one reader,
`config.sitefile`, here with its failures worded as diagnostics), decode UTF-8,
parse by extension (`config.source`), check the top level is a mapping. Then every remaining problem is
collected in one pass: refusals from the source reader, site-wide cross checks (binds shared by apps, unix
paths, the control socket) on the raw data, and the models' own errors translated into plain words
(`config.messages`). No code named in the file is imported or executed here.

The environment the rules depend on (where the default control socket is) comes in as a `config.paths.Env`;
callers that pass none get the process's, read here at the boundary, once per file.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from forkserve.config.crosscheck import cross_check
from forkserve.config.errors import ConfigError, Diagnostic
from forkserve.config.messages import translate_errors
from forkserve.config.models import SiteConfig
from forkserve.config.paths import Env
from forkserve.config.sitefile import MAX_SITE_BYTES, NotARegularFile, read_bytes
from forkserve.config.source import KeyPath, Source, SourceError, format_path, locate, parse

MAX_BYTES = MAX_SITE_BYTES
EXTENSIONS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}

__all__ = ["MAX_BYTES", "ConfigError", "Diagnostic", "Env", "load", "load_text", "read_site_file"]


def _whole_file(path: str, message: str, line: int | None = None, col: int | None = None) -> ConfigError:
    return ConfigError([Diagnostic(path, line, col, "", message)])


def load(path: str | os.PathLike[str], env: Env | None = None) -> SiteConfig:
    """Read and validate one site file. Raises ConfigError (and nothing else) for any bad input."""
    name = os.fspath(path)
    return load_text(read_site_file(name), name, env)


def read_site_file(name: str) -> bytes:
    """The bytes of a regular file of at most MAX_BYTES (+1 to detect larger), without blocking on a FIFO;
    ConfigError (io_error for a file that cannot be opened or read) otherwise."""
    try:
        return read_bytes(name)
    except NotARegularFile as exc:
        raise _whole_file(name, str(exc)) from None
    except OSError as exc:
        problem = Diagnostic(name, None, None, "", f"cannot read the file: {exc.strerror or exc}")
        raise ConfigError([problem], io_error=True) from None


def load_text(text: bytes, path: str, env: Env | None = None) -> SiteConfig:
    """Validate bytes already read from `path` (the name picks the format and the base of relative paths)."""
    try:
        return _load_text(text, path, env or Env.from_os())
    except ConfigError:
        raise
    except RecursionError:
        raise _whole_file(path, "the file is nested too deeply") from None
    except Exception as exc:  # the contract: bad input never escapes as anything but ConfigError
        raise _whole_file(path, f"cannot be read ({type(exc).__name__}: {exc})") from None


def _load_text(text: bytes, path: str, env: Env) -> SiteConfig:
    fmt = _format_of(path)
    source = _parse(_decode(text, path), fmt, path)
    base_dir = os.path.dirname(os.path.abspath(path))
    found: list[tuple[KeyPath, str, tuple[int, int | None] | None]] = [
        (p.path, p.message, (p.line, p.col) if p.line else None) for p in source.problems
    ]
    found += [(key, message, None) for key, message in cross_check(source.data, path, base_dir, env)]
    model: SiteConfig | None = None
    try:
        model = SiteConfig.model_validate(source.data, context={"base_dir": base_dir})
    except ValidationError as exc:
        reported = {key for key, _, _ in found}  # a refused value is not reported twice
        for key, message in translate_errors(exc.errors(), source.data, fmt):
            if key not in reported:
                found.append((key, message, None))
    if found or model is None:
        raise ConfigError(_diagnostics(found, source, path))
    return model


def _diagnostics(
    found: list[tuple[KeyPath, str, tuple[int, int | None] | None]], source: Source, path: str
) -> list[Diagnostic]:
    out = []
    for key, message, where in found:
        line, col = where or locate(source.positions, key) or (1, None)  # a missing top-level key: line 1
        out.append(Diagnostic(path, line, col, format_path(key), message))
    out.sort(key=lambda d: (d.line or 0, d.col or 0))
    return out


def _format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise _whole_file(path, f"unknown file extension {ext or '(none)'!r}: a site file ends in .toml, "
                                ".yaml or .yml")
    return EXTENSIONS[ext]


def _decode(text: bytes, path: str) -> str:
    if len(text) > MAX_BYTES:
        raise _whole_file(path, "the file is larger than 1 MiB; a site file is small")
    if not text.strip():
        raise _whole_file(path, "the file is empty: a site needs at least one app", 1, 1)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = text[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        bad = text[exc.start : exc.start + 1].hex()
        raise _whole_file(path, f"the file is not valid UTF-8 (byte 0x{bad})", line, col) from None
    return decoded.removeprefix("\ufeff")


def _parse(text: str, fmt: str, path: str) -> Source:
    try:
        source = parse(text, fmt)
    except SourceError as exc:
        raise _mismatch(text, fmt, path) or _whole_file(path, exc.message, exc.line, exc.col) from None
    if source.data is None or source.data == {}:
        raise _whole_file(path, "the file has no settings (only comments?): a site needs at least one app", 1, 1)
    if not isinstance(source.data, dict):
        raise _mismatch(text, fmt, path) or _whole_file(
            path, f"the top level must be a mapping of `server` and `apps`, found {_kind(source.data)}", 1, 1
        )
    return source


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"a single value ({str(value)[:40]!r})"


def _mismatch(text: str, fmt: str, path: str) -> ConfigError | None:
    """When the content parses as the *other* format, say so instead of showing a confusing syntax error."""
    other = "yaml" if fmt == "toml" else "toml"
    try:
        data = parse(text, other).data
    except (SourceError, RecursionError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    ext = ".yaml" if other == "yaml" else ".toml"
    return _whole_file(path, f"the content looks like {other.upper()}, but the file name ends in "
                             f"{os.path.splitext(path)[1]}; rename it to {ext} or write {fmt.upper()}", 1, 1)
