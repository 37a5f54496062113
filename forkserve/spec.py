"""Desired state: frozen per-app specs derived from a validated site file. Pure.

`AppSpec.revision` hashes every field whose change needs new worker processes (module, env, binds, limits, ...);
`workers` is deliberately outside it, so a count change is a scale, never a roll.

The environment of a revision is part of it: `env` holds the app's env_file variables and every `${VAR}` already
expanded (by `config.load`), so a changed variable or env_file rolls the app. `AppSpec.start_dir` is the
directory `forkserve up` was started in, recorded at load time; `import_paths` is the one rule, used by the
workers and by `forkserve check --import`, for where an app is imported from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from math import ceil
from typing import TYPE_CHECKING

from forkserve.config.binds import BindAddress, parse_bind

if TYPE_CHECKING:  # the master process never imports pydantic: config is validated in a child
    from forkserve.config.dependencies import Sources
    from forkserve.config.models import AppConfig, ServerConfig, SiteConfig

# Fields of AppConfig that a running worker cannot pick up: changing any of them rolls the app's workers.
ROLL_FIELDS: tuple[str, ...] = (
    "module", "binds", "worker_class", "worker_connections", "preload", "timeout", "boot_timeout", "max_requests",
    "max_requests_jitter", "keepalive", "chdir", "pythonpath", "env", "limit_request_line",
    "limit_request_fields", "limit_request_field_size", "limit_request_body", "forwarded_allow_ips",
)
# Fields the master applies itself, with no new workers.
LIVE_FIELDS: tuple[str, ...] = ("workers", "graceful_timeout", "max_surge", "max_unavailable", "backlog",
                                "unix_socket_mode")


@dataclass(frozen=True)
class AppSpec:
    name: str
    revision: str
    module: str
    binds: tuple[BindAddress, ...]
    workers: int
    worker_class: str
    worker_connections: int
    timeout: float
    boot_timeout: float
    graceful_timeout: float
    max_requests: int
    max_requests_jitter: int
    max_surge: int
    max_unavailable: int
    keepalive: float
    backlog: int
    unix_socket_mode: int
    chdir: str | None
    pythonpath: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    access_log: str | None  # None: off; "-": stdout; else a path
    error_log: str
    log_level: str
    preload: bool = False  # import once in a per-(app, revision) zygote and fork the workers from it
    start_dir: str = ""  # where `forkserve up` was started: the cwd and a sys.path entry when chdir is unset
    limit_request_body: int = 100 * 1024 * 1024  # bytes; 0: no limit
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")  # "*": every peer; unix peers always trusted


@dataclass(frozen=True)
class DesiredState:
    apps: dict[str, AppSpec] = field(default_factory=dict)
    revision: str = ""  # of the whole site: changes when any app spec or count changes
    stopping: bool = False  # stop: no apps wanted; workers retire (graceful) or are killed (fast)
    fast: bool = False

    def stopped(self, fast: bool = False) -> DesiredState:
        return DesiredState({}, self.revision, stopping=True, fast=fast)

    @classmethod
    def from_config(cls, site: SiteConfig, start_dir: str = "") -> DesiredState:
        apps = {name: _app_spec(name, app, site, start_dir) for name, app in sorted(site.apps.items())}
        return cls(apps, site_revision(apps))


def site_revision(apps: dict[str, AppSpec]) -> str:
    """The revision of the whole site: changes when any app's revision or worker count changes."""
    return hashlib.sha256(json.dumps([[s.name, s.revision, s.workers] for s in apps.values()]).encode()
                          ).hexdigest()[:8]


@dataclass(frozen=True)
class ServerSettings:
    """`[server]` as a plain value (the master keeps this, not the pydantic model)."""

    control_socket: str | None = None
    graceful_timeout: float = 30.0
    log_level: str = "info"
    access_log: str | None = None
    error_log: str = "-"
    pidfile: str | None = None
    watch: bool = True
    metrics: str | None = None
    settle: float = 3.0  # seconds a file written in place rests before a destructive change applies

    @classmethod
    def from_config(cls, server: ServerConfig) -> ServerSettings:
        access = server.access_log
        return cls(server.control_socket, server.graceful_timeout, server.log_level,
                   None if access is False else str(access), server.error_log, server.pidfile, server.watch,
                   getattr(server, "metrics", None), server.settle)


@dataclass(frozen=True)
class LoadedSite:
    """What a valid site file means to the master: the desired state and the server settings."""

    desired: DesiredState
    server: ServerSettings
    sources: Sources | None = None  # the variables and env_files it was computed from (digests, no values)

    @classmethod
    def from_config(cls, site: SiteConfig, start_dir: str = "", sources: Sources | None = None) -> LoadedSite:
        return cls(DesiredState.from_config(site, start_dir), ServerSettings.from_config(site.server), sources)


def import_paths(spec: AppSpec) -> tuple[str, tuple[str, ...]]:
    """Where the app is imported from: (the directory to change to, the entries to put first on sys.path, in
    order). The directory is `chdir`, else the start directory; it is on sys.path after `pythonpath`, as in
    gunicorn (and uvicorn, which puts the working directory there). "" means "stay where you are"."""
    cwd = spec.chdir or spec.start_dir
    return cwd, (*spec.pythonpath, *((cwd,) if cwd else ()))


def resolve_count(value: int | str, workers: int, round_up: bool) -> int:
    """`max_surge`/`max_unavailable` as a count: "25%" of 4 workers -> 1 (surge rounds up, unavailable down)."""
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * workers / 100
    return ceil(share) if round_up else int(share)


def _scoped(bind: BindAddress, app: str) -> BindAddress:
    return replace(bind, scope=app) if bind.kind == "tcp" and bind.port == 0 else bind


def _app_spec(name: str, app: AppConfig, site: SiteConfig, start_dir: str = "") -> AppSpec:
    roll = {key: getattr(app, key) for key in ROLL_FIELDS}
    roll["env"] = sorted(app.env.items())
    if app.chdir is None and start_dir:
        roll["start_dir"] = start_dir  # where it imports from (absent when unknown: revisions stay as they were)
    roll["logs"] = [site.server.access_log, site.server.error_log, site.server.log_level]
    revision = hashlib.sha256(json.dumps(roll, sort_keys=True, default=list).encode()).hexdigest()[:8]
    surge = resolve_count(app.max_surge, app.workers, round_up=True)
    unavailable = resolve_count(app.max_unavailable, app.workers, round_up=False)
    if surge == 0 and unavailable == 0:
        surge = 1  # "0%" of a small count must not wedge a roll
    access = site.server.access_log
    return AppSpec(
        name=name,
        revision=revision,
        module=app.module,
        binds=tuple(_scoped(parse_bind(b), name) for b in app.binds),
        workers=app.workers,
        worker_class=app.worker_class,
        worker_connections=app.worker_connections,
        preload=app.preload,
        timeout=app.timeout,
        boot_timeout=app.boot_timeout,
        graceful_timeout=app.graceful_timeout if app.graceful_timeout is not None else site.server.graceful_timeout,
        max_requests=app.max_requests,
        max_requests_jitter=app.max_requests_jitter,
        max_surge=surge,
        max_unavailable=unavailable,
        keepalive=app.keepalive,
        backlog=app.backlog,
        unix_socket_mode=int(app.unix_socket_mode, 8),
        chdir=app.chdir,
        pythonpath=app.pythonpath,
        env=tuple(sorted(app.env.items())),
        limit_request_line=app.limit_request_line or 8190,
        limit_request_fields=app.limit_request_fields or 32768,
        limit_request_field_size=app.limit_request_field_size or 65536,
        access_log=None if access is False else str(access),
        error_log=site.server.error_log,
        log_level=site.server.log_level,
        start_dir=start_dir,
        limit_request_body=app.limit_request_body,
        forwarded_allow_ips=tuple(app.forwarded_allow_ips),
    )
