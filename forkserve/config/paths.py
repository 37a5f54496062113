"""Where a site's private files live by default, and the environment that decides it, as an explicit value.

`Env` holds every environment value the loader reads (XDG_RUNTIME_DIR and the uid, for the default control
socket). It is taken from the process once, by `Env.from_os()`, at the loader's boundary (`config.load`,
`config.validate`) and passed down: the cross checks stay pure functions of their arguments, and the cache of
validated results (`config.cache`) can put the environment in its key, so a result computed for one runtime
dir is never reused for another.

It also carries the process environment (`environ`, for `${VAR}` in site files) and the start directory
(`start_dir`, where a worker with no `chdir` imports from). `environ` is not in `key()`: a cached result
records the few variables it read instead (`config.dependencies`), so an unrelated variable never costs a miss.
The start directory is read once per process (`start_dir()`): the master's reloads, forked from it, see the
directory `forkserve up` was started in even if that directory is later removed or renamed.
"""

from __future__ import annotations

import hashlib
import os

TYPE_CHECKING = False  # not `from typing import ...`: this runs in the master before its first fork
if TYPE_CHECKING:
    from collections.abc import Mapping


_START_DIR: list[str] = []


def start_dir() -> str:
    """The directory this process was started in (physical: symlinks resolved, as `os.getcwd()` gives it), read
    at the first call and kept: a process forked later (a validating child) inherits the value."""
    if not _START_DIR:
        try:
            _START_DIR.append(os.getcwd())
        except OSError:  # the directory was removed before we looked: nothing sensible to import from
            _START_DIR.append("/")
    return _START_DIR[0]


class Env:
    """The environment a site file is validated in. A plain value: equal when its `key()` and `environ` are."""

    __slots__ = ("environ", "runtime_dir", "start_dir", "uid")

    def __init__(self, runtime_dir: str | None, uid: int, environ: Mapping[str, str] | None = None,
                 start_dir: str = "") -> None:
        self.runtime_dir = runtime_dir or None  # an empty XDG_RUNTIME_DIR is no runtime dir
        self.uid = uid
        self.environ: Mapping[str, str] = dict(environ or {})
        self.start_dir = start_dir

    @classmethod
    def from_os(cls) -> Env:
        """The one place the loader's environment is read."""
        return cls(os.environ.get("XDG_RUNTIME_DIR"), os.getuid(), os.environ, start_dir())

    def key(self) -> tuple[str | None, int, str]:
        return (self.runtime_dir, self.uid, self.start_dir)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Env) and self.key() == other.key() and self.environ == other.environ

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"Env(runtime_dir={self.runtime_dir!r}, uid={self.uid}, start_dir={self.start_dir!r})"  # no values


def site_key(site_path: str) -> str:
    """A short stable name per site file, so two sites on one machine never share a control socket."""
    return hashlib.sha256(os.path.abspath(site_path).encode()).hexdigest()[:16]


def default_control_socket(site_path: str, env: Env | None = None) -> str:
    """`$XDG_RUNTIME_DIR/forkserve/<key>.sock`, or `/tmp/forkserve-<uid>/<key>.sock` without XDG_RUNTIME_DIR.

    Both directories are private to the user (the runtime dir by its spec; the master creates the /tmp one 0700).
    `env`: the loader passes its own; other callers (the master, the client) get the process's.
    """
    env = env or Env.from_os()
    base = os.path.join(env.runtime_dir, "forkserve") if env.runtime_dir else f"/tmp/forkserve-{env.uid}"
    return os.path.join(base, f"{site_key(site_path)}.sock")
