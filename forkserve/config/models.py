"""The site file's typed schema: the contract every other part of forkserve stands on.

Models are frozen and strict (`"4"`, `4.0` and `true` are not ints) and forbid unknown keys. Binds stay
strings here (their canonical spelling) so that TOML and YAML renderings of one site compare equal;
`parse_bind` turns one into a `BindAddress` value for the master.

Paths: after `config.load.load()` every path field is absolute, resolved against the directory that holds the
site file (the loader passes that directory as validation context `base_dir`).

The models see a file's data after `${VAR}` expansion (`config.expand`) and never read an env_file: the loader
reads it and puts its variables under `env` (the file's own `env` wins), so a rule here holds for every value,
however it was written.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from forkserve.config.binds import BindAddress, canonical_bind, parse_bind

__all__ = ["APP_NAME_RE", "AppConfig", "BindAddress", "ServerConfig", "SiteConfig", "parse_bind"]

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MODULE_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$"
)
RATIO_RE = re.compile(r"^(100|[1-9]?[0-9])%$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Seconds = Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True)


def _resolve(path: str, info: ValidationInfo) -> str:
    import os.path

    base = (info.context or {}).get("base_dir")
    if base and not os.path.isabs(path):
        return os.path.normpath(os.path.join(base, path))
    return path


def _bind_item(v: str, info: ValidationInfo) -> str:
    """Canonical spelling of one bind (unix paths made absolute), so equal binds compare equal."""
    canon = canonical_bind(v)
    if canon.startswith("unix:"):
        canon = "unix:" + _resolve(canon[5:], info)
    return canon


def _at(key: str, message: str) -> PydanticCustomError:
    """A cross-field error that names the key it belongs to (`ctx["at"]`), so the loader can locate it there."""
    return PydanticCustomError("cross_field", message, {"at": key})


def _allow_item(v: str) -> str:
    """One `forwarded_allow_ips` item: "*" or an IP address / CIDR network, in its canonical spelling."""
    import ipaddress

    if v == "*":
        return v
    try:
        network = ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(f'{v!r} is not an IP address, a CIDR network ("10.0.0.0/8") or "*"') from None
    return str(network.network_address) if network.num_addresses == 1 else str(network)


# Each item is checked on its own, so a bad bind is reported at `binds[i]`, not at the whole list.
BindStr = Annotated[StrictStr, AfterValidator(_bind_item)]
AllowIp = Annotated[StrictStr, AfterValidator(_allow_item)]
AppName = Annotated[str, StringConstraints(pattern=APP_NAME_RE.pattern)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_RE.pattern)]


class ServerConfig(BaseModel):
    """`[server]`: settings of the master process, shared by every app."""

    model_config = _STRICT

    control_socket: str | None = Field(
        None,
        description="Path of the control socket used by `forkserve status|reload|stop|plan`. Default: a private "
        "per-site path, `$XDG_RUNTIME_DIR/forkserve/<hash of the site file path>.sock` "
        "(or `/tmp/forkserve-<uid>/...` without XDG_RUNTIME_DIR).",
    )
    graceful_timeout: Seconds = Field(
        30.0, description="Seconds a retiring worker may take to finish in-flight requests before it is killed."
    )
    log_level: LogLevel = Field("info", description="Least severe level of the master's and workers' error log.")
    access_log: str | Literal[False] = Field(
        False, description='Access log: a path, "-" for stdout, or false for none (the default, as in gunicorn).'
    )
    error_log: str = Field("-", description='Error log: a path, or "-" for stderr.')
    pidfile: str | None = Field(None, description="Write the master's pid to this file while it runs.")
    watch: bool = Field(True, description="Reload when the site file changes (watching its directory).")
    metrics: str | None = Field(
        None,
        description='Serve Prometheus metrics at http://HOST:PORT/metrics from the master ("HOST:PORT", TCP only; '
        "port 0 picks a free port). Default: off.",
    )
    settle: float = Field(
        3.0, ge=0, le=300, allow_inf_nan=False,
        description="Seconds a site file written in place must rest unchanged before a destructive change (an app "
        "or bind removed, an app scaled to 0) is applied, so a file caught half-written is not applied; other "
        "changes, atomic renames and `forkserve reload` apply at once. 0 disables the wait.",
    )

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: str | None) -> str | None:
        if v is None:
            return v
        bind = parse_bind(v)  # ValueError -> a located diagnostic
        if bind.kind != "tcp":
            raise ValueError(f'metrics {v!r}: must be "HOST:PORT" (TCP), not a unix socket or fd')
        return str(bind)

    @field_validator("control_socket", "pidfile")
    @classmethod
    def _optional_path(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not v or "\0" in v:
            raise ValueError("must be a non-empty path")
        return _resolve(v, info)

    @field_validator("access_log", "error_log")
    @classmethod
    def _log_path(cls, v: str | bool, info: ValidationInfo) -> str | bool:
        if v is False or v == "-":
            return v
        if not v or "\0" in str(v):
            raise ValueError('must be a path, "-" or false')
        return _resolve(str(v), info)


class AppConfig(BaseModel):
    """`[apps.<name>]`: one WSGI app, its listeners and its workers."""

    model_config = _STRICT

    module: str = Field(
        description='The WSGI callable as "dotted.module:attribute" (identifiers only; no calls, no private names).',
        pattern=MODULE_RE.pattern,
    )
    binds: tuple[BindStr, ...] = Field(
        min_length=1,
        strict=False,  # a list in the file; items stay strict strings
        description='Where to listen: "HOST:PORT", "tcp://HOST:PORT", "[IPv6]:PORT", "unix:PATH" or "fd://N". '
        "Port 0 picks a free port (reported by `forkserve status`).",
    )
    workers: int = Field(1, ge=1, le=1024, description="Number of worker processes.")
    worker_class: Literal["sync", "gevent"] = Field(
        "sync", description="sync: one request at a time per worker; gevent: one greenlet per connection."
    )
    worker_connections: int = Field(
        1000, ge=1, le=100_000, description="gevent only: most connections one worker serves at once."
    )
    preload: bool = Field(
        False,
        description="Import the app once in a per-app preload process (never in the master) and fork the "
        "workers from it, so they share its memory copy-on-write. A code or config change rolls by starting a "
        "new preload process.",
    )
    timeout: Seconds = Field(
        30.0, description="A worker silent for this many seconds (stuck request or loop) is killed and replaced."
    )
    boot_timeout: Seconds = Field(60.0, description="Seconds a new worker may take to import the app and be ready.")
    graceful_timeout: Seconds | None = Field(None, description="Overrides `[server] graceful_timeout` for this app.")
    max_requests: int = Field(0, ge=0, description="Recycle a worker after this many requests (0: never).")
    max_requests_jitter: int = Field(0, ge=0, description="Add up to this many requests, at random, per worker.")
    max_surge: int | str = Field(
        1, description='During a rolling change, extra workers allowed above `workers` (count or "N%").'
    )
    max_unavailable: int | str = Field(
        0, description='During a rolling change, ready workers allowed below `workers` (count or "N%").'
    )
    keepalive: float = Field(
        2.0, ge=0, le=3600, allow_inf_nan=False,
        description="Seconds an idle keep-alive connection stays open (gevent; sync workers close after each "
        "response). 0 disables keep-alive.",
    )
    backlog: int = Field(2048, ge=1, le=65535, description="listen() backlog of TCP and unix listeners.")
    unix_socket_mode: str = Field(
        "0660", pattern=r"^0?[0-7]{3}$", description='Permissions of unix sockets this app binds, octal ("0660").'
    )
    chdir: str | None = Field(None, description="Directory the workers change to before importing the app.")
    pythonpath: tuple[StrictStr, ...] = Field(
        (), strict=False, description="Directories prepended to sys.path in the workers."
    )
    env: dict[EnvName, str] = Field(
        default_factory=dict,
        repr=False,  # the values may be secrets: a model printed in a traceback or a debugger must not show them
        description="Environment variables set in the workers (over those of `env_file`). A changed value rolls "
        "the app; values are never printed.",
    )
    env_file: str | None = Field(
        None,
        description="A dotenv file (`KEY=value`, `export KEY=value`, quotes, `#` comments) whose variables are set "
        "in the workers, read each time the site file is loaded (a changed file rolls the app on reload). No "
        "`${VAR}` expansion inside it; at most 1 MiB; values are never printed.",
    )
    limit_request_line: int = Field(
        4094, ge=0, le=8190, description="Longest request line in bytes (0: the maximum, 8190); longer gets 414."
    )
    limit_request_fields: int = Field(
        100, ge=0, le=32768, description="Most header fields in a request (0: the maximum, 32768); more gets 431."
    )
    limit_request_field_size: int = Field(
        8190, ge=0, le=65536, description="Largest header field in bytes (0: the maximum, 65536); larger gets 431."
    )
    limit_request_body: int = Field(
        100 * 1024 * 1024, ge=0, le=1 << 50,
        description="Largest request body in bytes (0: no limit). A larger Content-Length gets 413 before any body "
        "byte is read; a chunked body is cut with 413 once it passes the limit, and the app never sees more. "
        "The default, 100 MiB, stops runaway uploads out of the box while leaving room for ordinary files.",
    )
    forwarded_allow_ips: tuple[AllowIp, ...] = Field(
        ("127.0.0.1", "::1"), strict=False,
        description='Peers trusted to set X-Forwarded-For/-Proto/-Host/-Port and Forwarded (RFC 7239): IP '
        'addresses or CIDR networks, or ["*"] for any peer. Unix-socket peers are always trusted. From a trusted '
        "peer they set REMOTE_ADDR (the rightmost hop that is not a trusted proxy), wsgi.url_scheme, HTTP_HOST, "
        "SERVER_NAME and SERVER_PORT (conflicting schemes get 400); from other peers they are plain headers.",
    )

    @field_validator("chdir", "env_file")
    @classmethod
    def _chdir(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and (not v or "\0" in v):
            raise ValueError("must be a non-empty path")
        return None if v is None else _resolve(v, info)

    @field_validator("env")
    @classmethod
    def _env_values(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(name for name, value in v.items() if "\0" in value)
        if bad:
            raise ValueError(f"the value of {', '.join(bad)} holds a NUL character, which no environment value can")
        return v

    @field_validator("pythonpath")
    @classmethod
    def _pythonpath(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return tuple(_resolve(p, info) for p in v)

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _count_or_ratio(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1024:
            return v
        if isinstance(v, str) and RATIO_RE.fullmatch(v):  # not match: its `$` also matches before a final "\n"
            return v
        raise ValueError('must be a count from 0 to 1024 or a percentage like "25%"')

    @model_validator(mode="after")
    def _cross_fields(self) -> AppConfig:
        if self.worker_class != "gevent" and "worker_connections" in self.model_fields_set:
            raise _at("worker_connections", 'worker_connections applies only to worker_class = "gevent"; '
                      f'this app has worker_class = "{self.worker_class}"')
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            key = "max_unavailable" if "max_unavailable" in self.model_fields_set else "max_surge"
            raise _at(key, "max_surge and max_unavailable cannot both be 0: a rolling change could never proceed")
        return self


class SiteConfig(BaseModel):
    """The whole site file: optional `[server]`, and at least one `[apps.<name>]`."""

    model_config = _STRICT

    server: ServerConfig = Field(default_factory=ServerConfig, description="Master settings.")
    apps: dict[AppName, AppConfig] = Field(
        min_length=1, description="The WSGI apps of the site, by name (lowercase letter first, then up to 62 of "
        "a-z, 0-9, _ and -)."
    )
