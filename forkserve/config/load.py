"""The one place a site file is validated: path -> SiteConfig, or ConfigError with every problem, located.

Steps, each of which may stop with one whole-file problem: read at most 1 MiB of a regular file (the one reader,
`config.sitefile`, here with its failures worded as diagnostics), decode UTF-8,
parse by extension (`config.source`), check the top level is a mapping. Then every remaining problem is
collected in one pass: refusals from the source reader, site-wide cross checks (binds shared by apps, unix
paths, the control socket) on the raw data, and the models' own errors translated into plain words
(`config.messages`). No code named in the file is imported or executed here.

The environment the rules depend on (where the default control socket is, the variables `${VAR}` reads) comes
in as a `config.paths.Env`; callers that pass none get the process's, read here at the boundary, once per file.

Between parsing and the checks, string values are expanded from that environment (`config.expand`) and each
app's `env_file` is read (`config.dotenv`; a problem in it is located at its own line). What the result
depended on is returned with it by `load_text_sources` (`config.dependencies.Sources`), for the cache. No
diagnostic shows a value that came from the environment: at such a key the text as written is shown instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import ValidationError

from forkserve.config.crosscheck import cross_check
from forkserve.config.dependencies import Sources, make_sources
from forkserve.config.dotenv import DotenvError, EnvFileUnreadable, parse_dotenv, read_env_file
from forkserve.config.errors import ConfigError, Diagnostic
from forkserve.config.expand import expand_data
from forkserve.config.messages import translate_errors
from forkserve.config.models import SiteConfig
from forkserve.config.paths import Env
from forkserve.config.sitefile import MAX_SITE_BYTES, NotARegularFile, read_bytes
from forkserve.config.source import KeyPath, Source, SourceError, format_path, locate, parse

MAX_BYTES = MAX_SITE_BYTES
EXTENSIONS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}

__all__ = ["MAX_BYTES", "ConfigError", "Diagnostic", "Env", "load", "load_text", "load_text_sources",
           "read_site_file"]

Found = list[tuple[KeyPath, str, "tuple[int, int | None] | None"]]


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
    return load_text_sources(text, path, env)[0]


def load_text_sources(text: bytes, path: str, env: Env | None = None) -> tuple[SiteConfig, Sources]:
    """`load_text`, and what its result depended on besides the bytes (variables read, env_files)."""
    try:
        return _load_text(text, path, env or Env.from_os())
    except ConfigError:
        raise
    except RecursionError:
        raise _whole_file(path, "the file is nested too deeply") from None
    except Exception as exc:  # the contract: bad input never escapes as anything but ConfigError
        raise _whole_file(path, f"cannot be read ({type(exc).__name__}: {exc})") from None


def _load_text(text: bytes, path: str, env: Env) -> tuple[SiteConfig, Sources]:
    fmt = _format_of(path)
    source = _parse(_decode(text, path), fmt, path)
    base_dir = os.path.dirname(os.path.abspath(path))
    data, expansion = expand_data(source.data, env.environ)
    hidden = expansion.templates
    found: Found = [(p.path, p.message, (p.line, p.col) if p.line else None) for p in source.problems]
    found += [(key, message, None) for key, message in expansion.problems]
    files = _EnvFiles(data, path, hidden)
    found += [(key, message, None) for key, message in files.problems]
    found += [(key, message, None) for key, message in cross_check(data, path, base_dir, env)]
    model: SiteConfig | None = None
    try:
        model = SiteConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        reported = {key for key, _, _ in found}  # a refused value is not reported twice
        for key, message in translate_errors(exc.errors(), data, fmt, hidden):
            if key not in reported:
                found.append((key, message, None))
    if found or files.diagnostics or model is None:
        raise ConfigError(_diagnostics(found, source, path, _secrets(data, hidden)) + files.diagnostics)
    secret_env = tuple((str(key[1]), str(key[3]), template) for key, template in hidden.items()
                       if len(key) == 4 and key[0] == "apps" and key[2] == "env")
    file_env = tuple((name, env_path, tuple(k for k in values if k not in model.apps[name].env))
                     for name, (env_path, values) in files.values.items())
    sources = make_sources(expansion.reads, files.read, secret_env, file_env)
    return _with_env_files(model, files.values), sources


class _EnvFiles:
    """Every app's env_file, read and parsed: problems of the key (located in the site file), problems inside
    a file (located in it), and the variables of each app's file."""

    def __init__(self, data: Any, site_path: str, hidden: dict[KeyPath, str]) -> None:
        self.problems: list[tuple[KeyPath, str]] = []
        self.diagnostics: list[Diagnostic] = []
        self.read: dict[str, bytes] = {}
        self.values: dict[str, tuple[str, dict[str, str]]] = {}
        apps = data.get("apps") if isinstance(data, dict) else None
        for name, app in (apps.items() if isinstance(apps, dict) else ()):
            value = app.get("env_file") if isinstance(app, dict) else None
            if isinstance(value, str) and value and "\0" not in value:  # other values: the model says why
                shown = os.path.normpath(os.path.join(os.path.dirname(site_path), value))  # named like the site
                self._one(str(name), os.path.abspath(shown), shown, hidden.get(("apps", name, "env_file"), value))

    def _one(self, app: str, path: str, shown: str, written: str) -> None:
        key: KeyPath = ("apps", app, "env_file")
        try:
            data = self.read[path] if path in self.read else read_env_file(path)
        except EnvFileUnreadable as exc:
            self.problems.append((key, f"env_file {written} cannot be read: {exc}"))
            return
        self.read[path] = data
        try:
            self.values[app] = (path, parse_dotenv(data))
        except DotenvError as exc:
            self.diagnostics.append(Diagnostic(shown, exc.line, exc.col, "", f"{exc.message} (the env_file of "
                                                                             f"apps.{app})"))


def _with_env_files(model: SiteConfig, files: dict[str, tuple[str, dict[str, str]]]) -> SiteConfig:
    """Each app's env_file variables under its `env`, the file's own `env` winning."""
    if not files:
        return model
    apps = {name: app.model_copy(update={"env": {**files[name][1], **app.env}}) if name in files else app
            for name, app in model.apps.items()}
    return model.model_copy(update={"apps": apps})


def _secrets(data: Any, hidden: dict[KeyPath, str]) -> list[tuple[str, str]]:
    """(expanded value, text as written) of every expanded value worth hiding, longest first."""
    found = []
    for key, template in hidden.items():
        value: Any = data
        for part in key:
            value = value[part]
        if isinstance(value, str) and len(value) >= 3:
            found.append((value, template))
    return sorted(found, key=lambda pair: -len(pair[0]))


_RUN = 6  # a message sharing this many characters in a row with a value from the environment may be showing it


def _scrub(message: str, secrets: list[tuple[str, str]]) -> str:
    """The message with any expanded value (as is, or quoted by repr/JSON) shown as the text written instead.
    A message that still shares a run of _RUN characters with such a value (a rule that quoted part of it, or
    reworded it) is replaced whole: no reason is worth a secret."""
    for value, template in secrets:
        for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1]):
            if form in message:
                message = message.replace(form, template)
    rest = message
    for _, template in secrets:
        rest = rest.replace(template, "\0")  # the text as written may be shown: it is in the file
    for value, template in secrets:
        if any(rest[i : i + _RUN] in value for i in range(len(rest) - _RUN + 1)):
            return (f'the value of "{template}" from the environment is refused here; the reason is not shown, as '
                    "it would show the value: check the variable (or try the value written out in a copy)")
    return message


def _diagnostics(found: Found, source: Source, path: str, secrets: list[tuple[str, str]]) -> list[Diagnostic]:
    out = []
    for key, message, where in found:
        line, col = where or locate(source.positions, key) or (1, None)  # a missing top-level key: line 1
        out.append(Diagnostic(path, line, col, format_path(key), _scrub(message, secrets)))
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
