"""What a validated site depended on outside its own bytes: environment variables and env_files. Pure values
plus `current()`, which re-reads them; standard library only (the master calls it).

Why: once values come from `${VAR}` and `env_file`, the same site file can mean two different sites. The cache
of validated results (`config.cache`) keys an entry by the file's bytes, so an entry carries its `Sources` and
is used only while `current()` holds; the master can ask the same question of the site it runs (has an
env_file changed under an unchanged site file?).

Values are never kept here, only sha256 digests of them (name and value together): a `Sources` is written to
disk with a cache entry, and a secret must not be. Which env values came from the environment is recorded too
(`secret_env`, `file_env`), so that the cache can store a site without them and put them back on a hit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from forkserve.config.dotenv import DotenvError, EnvFileUnreadable, parse_dotenv, read_env_file


@dataclass(frozen=True)
class Sources:
    """The environment a site's result was computed from, as digests, and where its env values came from."""

    variables: tuple[tuple[str, str | None], ...] = ()  # (name, digest of its value; None: it was unset)
    env_files: tuple[tuple[str, str], ...] = ()  # (absolute path, digest of its bytes)
    secret_env: tuple[tuple[str, str, str], ...] = ()  # (app, key, text as written): env values with ${...}
    file_env: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (app, env_file path, keys taken from it)

    def __bool__(self) -> bool:
        return bool(self.variables or self.env_files)


def variable_digest(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(f"{name}\0{value}".encode("utf-8", "surrogateescape")).hexdigest()


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_sources(reads: Mapping[str, str | None], env_files: Mapping[str, bytes],
                 secret_env: tuple[tuple[str, str, str], ...] = (),
                 file_env: tuple[tuple[str, str, tuple[str, ...]], ...] = ()) -> Sources:
    return Sources(
        tuple(sorted((name, variable_digest(name, value)) for name, value in reads.items())),
        tuple(sorted((path, bytes_digest(data)) for path, data in env_files.items())),
        tuple(sorted(secret_env)),
        tuple(sorted(file_env)),
    )


def variables_current(sources: Sources, environ: Mapping[str, str]) -> bool:
    return all(variable_digest(name, environ.get(name)) == digest for name, digest in sources.variables)


def read_current_env_files(sources: Sources) -> dict[str, dict[str, str]] | None:
    """Each env_file's variables, read again; None as soon as one is gone, unreadable, changed or invalid."""
    found: dict[str, dict[str, str]] = {}
    for path, digest in sources.env_files:
        try:
            data = read_env_file(path)
            if bytes_digest(data) != digest:
                return None
            found[path] = parse_dotenv(data)
        except (EnvFileUnreadable, DotenvError):
            return None
    return found


def current(sources: Sources | None, environ: Mapping[str, str]) -> bool:
    """True when every variable and env_file the result depended on is as it was."""
    if not sources:
        return True
    return variables_current(sources, environ) and read_current_env_files(sources) is not None
