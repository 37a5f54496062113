"""`snapshot(master) -> dict`: what the master wants and runs, as plain JSON values (`forkserve status --json`).

Built only by reading the Master's attributes (and /proc for RSS); changes nothing. The shape is stable:
keys are only ever added. Times are seconds; `*_at` values are Unix wall-clock times (floats).

    {
      "version": 1,
      "master": {"pid": 812, "started_at": 1718000000.5, "control_socket": "/run/forkserve/4f...e1.sock",
                 "uptime": 93.2, "stopping": false},
      "site": {"path": "/srv/site.toml", "revision": "3f2a9c1d", "last_result": "site revision ... applied: ...",
               "errors": ["/srv/site.toml:4:11: apps.api.workers: ..."], "missing": false},
      "ready": true,                       # every app of the site has at least its desired ready workers
      "apps": [
        {"name": "api", "in_site": true, "revision": "8e1f0a2b",
         "proven_revision": "8e1f0a2b",   # the newest desired revision that ran healthy: the fallback
         "desired": 2, "running": 2, "ready": 2, "updated": 2,
         "state": "running",               # running | rolling | degraded | backoff | removing
         "backoff": null,                  # or {"failures": 3, "retry_at": ..., "retry_in": 4.2, "error": "..."}
         "restarts": {"crash": 0, "timeout": 0, "boot_timeout": 0, "max_requests": 0, "rolled": 2},
         "binds": [{"bind": "tcp://127.0.0.1:0", "address": "tcp://127.0.0.1:40213", "error": null}],
         "workers": [{"pid": 815, "revision": "8e1f0a2b", "age": 80.1, "state": "idle", "ready": true,
                      "requests": 120, "in_flight": 0, "connections": 0, "rss": 23134208}]}
      ]
    }

Worker states: booting (importing the app), idle / busy (ready, with no / some request in flight), draining
(retiring: finishing in-flight requests), killed (sent a kill signal, not reaped yet). `running` counts the
live workers (booting or ready, not on their way out), `ready` the live ones that serve (any revision: during
a roll the old ones still serve), `updated` the ready ones of the desired revision. App states: backoff (new
workers of the desired revision crash; waiting until `retry_at`), rolling (live workers of another revision
remain), degraded (fewer up-to-date ready workers than desired), running (converged), removing (no longer
in the site file, workers still draining).
"""

from __future__ import annotations

import os
import time
from typing import Any

from forkserve.state import Phase

VERSION = 1
RESTART_CAUSES = ("crash", "timeout", "boot_timeout", "max_requests", "rolled")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def worker_state(phase: Phase, in_flight: int) -> str:
    if phase is Phase.READY:
        return "busy" if in_flight > 0 else "idle"
    return str(phase)  # booting, draining, killed


def snapshot(master: Any, now: float | None = None, wall: float | None = None,
             workers: bool = True) -> dict[str, Any]:
    """The status document; `workers=False` leaves the per-worker lists empty (cheap: no /proc reads)."""
    now = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall

    def to_wall(t: float) -> float:
        return round(wall - (now - t), 3)

    site = master.site
    names = sorted({*master.desired.apps, *(r.view.app for r in master.workers.values())})
    apps = [_app(master, name, now, to_wall, workers) for name in names]
    return {
        "version": VERSION,
        "master": {"pid": os.getpid(), "started_at": to_wall(master.started_at),
                   "control_socket": _control(master),
                   "uptime": round(now - master.started_at, 3), "stopping": bool(master.desired.stopping)},
        "site": {"path": site.path, "revision": site.revision, "last_result": site.last_result,
                 "errors": list(site.errors), "missing": bool(site.missing)},
        "ready": all(a["ready"] >= a["desired"] for a in apps if a["in_site"])
        and not master.desired.stopping,
        "apps": apps,
    }


def readiness(snap: dict[str, Any]) -> str:
    """One line for probes: "ready", or "not ready: web 1/2, api 0/1" (or "stopping")."""
    if snap["ready"]:
        return "ready"
    lagging = [f"{a['name']} {a['ready']}/{a['desired']}" for a in snap["apps"]
               if a["in_site"] and a["ready"] < a["desired"]]
    return f"not ready: {', '.join(lagging) or 'stopping'}"


def _control(master: Any) -> str | None:
    plane = getattr(master, "control", None)
    return plane.server.path if plane is not None else None


def _app(master: Any, name: str, now: float, to_wall: Any, with_workers: bool) -> dict[str, Any]:
    spec = master.desired.apps.get(name)
    records = sorted((r for r in master.workers.values() if r.view.app == name), key=lambda r: r.view.started)
    live = [r.view for r in records if r.view.live]
    revision = spec.revision if spec else ""
    ready = sum(1 for w in live if w.phase is Phase.READY)
    updated = sum(1 for w in live if w.phase is Phase.READY and w.revision == revision and not w.recycle)
    entry = master.backoff.get((name, revision)) if spec else None
    backoff = None
    if entry is not None and entry.retry_at > now:
        backoff = {"failures": entry.failures, "retry_at": to_wall(entry.retry_at),
                   "retry_in": round(entry.retry_at - now, 3), "error": entry.last_error}
    if spec is None:
        state = "removing"
    elif backoff is not None:
        state = "backoff"
    elif any(w.revision != revision or w.recycle for w in live):
        state = "rolling"
    elif updated < spec.workers:
        state = "degraded"
    else:
        state = "running"
    binds = []
    for bind in spec.binds if spec else ():
        listener = master.listeners.get(bind)
        binds.append({"bind": str(bind), "address": listener.address if listener else None,
                      "error": master.bind_errors.get(bind)})
    return {
        "name": name,
        "in_site": spec is not None,
        "revision": revision,
        "proven_revision": proven.revision if (proven := master.proven.get(name)) else None,
        "desired": spec.workers if spec else 0,
        "running": len(live),
        "ready": ready,
        "updated": updated,
        "state": state,
        "backoff": backoff,
        "restarts": {cause: master.restarts.get((name, cause), 0) for cause in RESTART_CAUSES},
        "binds": binds,
        "workers": [_worker(r, now) for r in records] if with_workers else [],
    }


def _worker(record: Any, now: float) -> dict[str, Any]:
    view = record.view
    counters = record.end.counters()
    return {
        "pid": view.pid,
        "revision": view.revision,
        "age": round(now - view.started, 3),
        "state": worker_state(view.phase, counters.in_flight),
        "ready": view.phase is Phase.READY,
        "requests": counters.requests,
        "in_flight": counters.in_flight,
        "connections": counters.connections,
        "rss": rss_bytes(view.pid),
    }
