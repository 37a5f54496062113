"""Site-wide checks that no single model can make: two apps on one socket, a unix path used twice or equal to
the control socket, gevent-only keys on a sync app.

They run on the raw data (not the validated model), so they are reported in the same run as every other
problem even when some app is invalid; each finding names the key it belongs to. Pure: the environment (for the
default control socket path) is an argument, `config.paths.Env`, read from the process by the loader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from forkserve.config.binds import BindAddress, binds_overlap, parse_bind
from forkserve.config.paths import Env, default_control_socket
from forkserve.config.source_types import KeyPath, format_path

GEVENT_ONLY = ("worker_connections",)


def _resolve(path: str, base_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, path))


def _binds(data: dict[str, Any], base_dir: str) -> Iterator[tuple[KeyPath, str, BindAddress]]:
    """Every bind that parses, with its key path and spelling; unix paths made absolute."""
    apps = data.get("apps")
    if not isinstance(apps, dict):
        return
    for name, app in apps.items():
        binds = app.get("binds") if isinstance(app, dict) else None
        if not isinstance(binds, list):
            continue
        for index, text in enumerate(binds):
            try:
                bind = parse_bind(text)
            except (ValueError, TypeError):
                continue  # reported by the model
            if bind.kind == "unix":
                bind = BindAddress("unix", path=_resolve(bind.path, base_dir))
            yield ("apps", name, "binds", index), text, bind


def _control_socket(data: dict[str, Any], site_path: str, base_dir: str, env: Env) -> str:
    server = data.get("server")
    value = server.get("control_socket") if isinstance(server, dict) else None
    if isinstance(value, str) and value:
        return _resolve(value, base_dir)
    return default_control_socket(site_path, env)


def _overlap_group(bind: BindAddress) -> tuple[str, object] | None:
    """Binds can only overlap within one group (same path, fd or port; port 0 overlaps nothing): comparing
    within groups keeps a site with thousands of binds linear, not quadratic."""
    if bind.kind == "unix":
        return ("unix", bind.path)
    if bind.kind == "fd":
        return ("fd", bind.fd)
    return ("tcp", bind.port) if bind.port else None


def _shared_binds(data: dict[str, Any], base_dir: str) -> Iterator[tuple[KeyPath, str]]:
    seen: dict[tuple[str, object], list[tuple[KeyPath, str, BindAddress]]] = {}
    for path, text, bind in _binds(data, base_dir):
        key = _overlap_group(bind)
        if key is None:
            continue
        group = seen.setdefault(key, [])
        for other_path, other_text, other in group:
            if binds_overlap(bind, other):
                owner = "this app" if other_path[1] == path[1] else f"app `{other_path[1]}`"
                what = "is the same socket as" if bind == other else "overlaps"
                yield path, (f'"{text}" {what} "{other_text}" of {owner} ({format_path(other_path)}); '
                             "one socket cannot be bound twice")
                break
        group.append((path, text, bind))


def _control_clash(data: dict[str, Any], site_path: str, base_dir: str, env: Env) -> Iterator[tuple[KeyPath, str]]:
    control = _control_socket(data, site_path, base_dir, env)
    for path, text, bind in _binds(data, base_dir):
        if bind.kind == "unix" and bind.path == control:
            yield path, f'"{text}" is the control socket of this site ({control}); choose another path'


def _gevent_only(data: dict[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    apps = data.get("apps")
    for name, app in (apps.items() if isinstance(apps, dict) else ()):
        if not isinstance(app, dict) or app.get("worker_class", "sync") != "sync":
            continue
        for key in GEVENT_ONLY:
            if key in app:
                yield ("apps", name, key), (f'{key} applies only to worker_class = "gevent"; this app has '
                                            'worker_class = "sync"')


def _is_zero(value: Any) -> bool:
    return not isinstance(value, bool) and value in (0, "0%")


def _rolling_stuck(data: dict[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    """The same check as the model's, made here too so it is reported even when the app has other errors."""
    apps = data.get("apps")
    for name, app in (apps.items() if isinstance(apps, dict) else ()):
        if isinstance(app, dict) and _is_zero(app.get("max_surge", 1)) and _is_zero(app.get("max_unavailable", 0)):
            key = "max_unavailable" if "max_unavailable" in app else "max_surge"
            yield ("apps", name, key), ("max_surge and max_unavailable cannot both be 0: a rolling change could "
                                        "never proceed")


def cross_check(data: Any, site_path: str, base_dir: str, env: Env) -> list[tuple[KeyPath, str]]:
    """Every site-wide problem as (key path, message). `env`: where the default control socket is."""
    if not isinstance(data, dict):
        return []
    return [
        *_shared_binds(data, base_dir),
        *_control_clash(data, site_path, base_dir, env),
        *_gevent_only(data),
        *_rolling_stuck(data),
    ]
