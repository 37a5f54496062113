"""`render(snapshot) -> dict`: what the master wants and runs, as plain JSON values (`forkserve status --json`).

Rendered from a frozen `Snapshot` (and /proc for RSS); changes nothing. The shape is stable:
keys are only ever added. Times are seconds; `*_at` values are Unix wall-clock times (floats).

    {
      "version": 1,
      "master": {"pid": 812, "started_at": 1718000000.5, "control_socket": "/run/forkserve/4f...e1.sock",
                 "uptime": 93.2, "stopping": false,
                 "loop_errors": 0, "last_loop_error": ""},   # loop steps that raised (logged with a traceback)
      "site": {"path": "/srv/site.toml", "revision": "3f2a9c1d", "last_result": "site revision ... applied: ...",
               "errors": ["/srv/site.toml:4:11: apps.api.workers: ..."], "missing": false},
      "ready": true,                       # every app of the site has at least its desired ready workers
      "apps": [
        {"name": "api", "in_site": true, "revision": "8e1f0a2b",
         "proven_revision": "8e1f0a2b",   # the newest desired revision that ran healthy: the fallback
         "desired": 2, "running": 2, "ready": 2, "updated": 2,
         "state": "running",               # running | rolling | degraded | backoff | removing
         "reason": "",                     # why the app is not converged, in words ("" when running): see below
         "backoff": null,                  # or {"failures": 3, "retry_at": ..., "retry_in": 4.2, "error": "..."}
         "restarts": {"crash": 0, "timeout": 0, "boot_timeout": 0, "max_requests": 0, "rolled": 2},
         "crashes": {"SIGSEGV": 1},        # unexpected deaths by cause (outcomes.CrashCause), only those seen
         "last_crash": null,               # or {"pid": 815, "cause": "SIGSEGV", "exit": "killed by SIGSEGV",
                                           #     "at": ..., "serving": "GET /report?id=7", "serving_for": 0.4,
                                           #     "in_flight": 1}: the last ready worker that died unasked
         "binds": [{"bind": "tcp://127.0.0.1:0", "address": "tcp://127.0.0.1:40213", "error": null}],
         "workers": [{"pid": 815, "revision": "8e1f0a2b", "age": 80.1, "state": "idle", "ready": true,
                      "requests": 120, "in_flight": 0, "connections": 0, "rss": 23134208,
                      "serving": null}]}   # or {"request": "GET /report?id=7", "for": 0.2}: the request
                                           # started last and still running (shared memory, channel.py)
      ]
    }

Worker states: booting (importing the app), idle / busy (ready, with no / some request in flight), draining
(retiring: finishing in-flight requests), killed (sent a kill signal, not reaped yet). `running` counts the
live workers (booting or ready, not on their way out), `ready` the live ones that serve (any revision: during
a roll the old ones still serve), `updated` the ready ones of the desired revision. App states: backoff (new
workers of the desired revision crash; waiting until `retry_at`), rolling (live workers of another revision
remain), degraded (fewer up-to-date ready workers than desired), running (converged), removing (no longer
in the site file, workers still draining).

`reason` says the same in words, for people and deploy pipelines (`forkserve wait`): "" when running;
"revision 3f2a9c1d cannot boot: ImportError: ..." in backoff (the last line of `backoff.error`, which holds the
whole boot error); "rolling: 1/2 updated"; "degraded: 1/2 updated (1 booting)"; "removed from the site file: 1
worker draining".
"""

from __future__ import annotations

import os
from typing import Any

from forkserve.outcomes import RESTART_CAUSES
from forkserve.snapshot import Snapshot, WorkerSnapshot
from forkserve.state import Phase

VERSION = 1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def render(snap: Snapshot, workers: bool = True) -> dict[str, Any]:
    """The status document; `workers=False` leaves the per-worker lists empty (cheap: no /proc reads)."""
    apps = [_app(snap, name, workers) for name in snap.app_names()]
    site = snap.site
    return {
        "version": VERSION,
        "master": {"pid": snap.pid, "started_at": snap.to_wall(snap.started_at),
                   "control_socket": snap.control_socket, "uptime": round(snap.now - snap.started_at, 3),
                   "stopping": snap.stopping, "loop_errors": snap.loop_errors,
                   "last_loop_error": snap.last_loop_error},
        "site": {"path": site.path, "revision": site.revision, "last_result": site.last_result,
                 "errors": list(site.errors), "missing": site.missing},
        "ready": all(a["ready"] >= a["desired"] for a in apps if a["in_site"]) and not snap.stopping,
        "apps": apps,
    }


def readiness(doc: dict[str, Any]) -> str:
    """One line for probes: "ready", or "not ready: web 1/2, api 0/1" (or "stopping")."""
    if doc["ready"]:
        return "ready"
    lagging = [f"{a['name']} {a['ready']}/{a['desired']}" for a in doc["apps"]
               if a["in_site"] and a["ready"] < a["desired"]]
    return f"not ready: {', '.join(lagging) or 'stopping'}"


def _state(snap: Snapshot, name: str, live: list[WorkerSnapshot], updated: int, backoff: object) -> str:
    spec = snap.desired.apps.get(name)
    if spec is None:
        return "removing"
    if backoff is not None:
        return "backoff"
    if any(w.revision != spec.revision or w.recycle for w in live):
        return "rolling"
    return "degraded" if updated < spec.workers else "running"


def reason(state: str, revision: str, desired: int, updated: int, live: list[WorkerSnapshot],
           backoff: dict[str, Any] | None) -> str:
    """The app's `reason` (see the module docstring)."""
    if state == "backoff" and backoff is not None:
        lines = [line.strip() for line in str(backoff["error"]).splitlines() if line.strip()]
        return f"revision {revision} cannot boot: {lines[-1] if lines else 'its workers exit during boot'}"
    if state == "removing":
        return f"removed from the site file: {len(live)} worker{'' if len(live) == 1 else 's'} draining"
    if state in ("rolling", "degraded"):
        booting = sum(1 for w in live if w.phase is not Phase.READY)
        return f"{state}: {updated}/{desired} updated" + (f" ({booting} booting)" if booting else "")
    return ""


def _app(snap: Snapshot, name: str, with_workers: bool) -> dict[str, Any]:
    spec = snap.desired.apps.get(name)
    mine = snap.workers_of(name)
    live = [w for w in mine if w.live]
    revision = spec.revision if spec else ""
    ready = sum(1 for w in live if w.phase is Phase.READY)
    updated = sum(1 for w in live if w.phase is Phase.READY and w.revision == revision and not w.recycle)
    entry = snap.backoff.get((name, revision)) if spec else None
    backoff = None
    if entry is not None and entry.retry_at > snap.now:
        backoff = {"failures": entry.failures, "retry_at": snap.to_wall(entry.retry_at),
                   "retry_in": round(entry.retry_at - snap.now, 3), "error": entry.last_error}
    binds = [{"bind": str(bind), "address": snap.addresses.get(bind), "error": snap.bind_errors.get(bind)}
             for bind in (spec.binds if spec else ())]
    state = _state(snap, name, live, updated, backoff)
    return {
        "name": name,
        "in_site": spec is not None,
        "revision": revision,
        "proven_revision": snap.proven.get(name),
        "desired": spec.workers if spec else 0,
        "running": len(live),
        "ready": ready,
        "updated": updated,
        "state": state,
        "reason": reason(state, revision, spec.workers if spec else 0, updated, live, backoff),
        "backoff": backoff,
        "restarts": {cause: snap.restarts.get((name, cause), 0) for cause in RESTART_CAUSES},
        "crashes": {cause: n for (app, cause), n in sorted(snap.crashes.items()) if app == name and n},
        "last_crash": _last_crash(snap, name),
        "binds": binds,
        "workers": [_worker(snap, w) for w in mine] if with_workers else [],
    }


def _worker(snap: Snapshot, w: WorkerSnapshot) -> dict[str, Any]:
    return {
        "pid": w.pid,
        "revision": w.revision,
        "age": round(snap.now - w.started, 3),
        "state": w.state,
        "ready": w.phase is Phase.READY,
        "requests": w.counters.requests,
        "in_flight": w.counters.in_flight,
        "connections": w.counters.connections,
        "rss": rss_bytes(w.pid),
        "serving": {"request": w.serving.text, "for": round(max(0.0, snap.now - w.serving.started), 3)}
        if w.serving is not None else None,
    }


def _last_crash(snap: Snapshot, name: str) -> dict[str, Any] | None:
    crash = snap.last_crash.get(name)
    if crash is None:
        return None
    return {"pid": crash.pid, "cause": crash.cause.value, "exit": crash.how, "at": snap.to_wall(crash.at),
            "serving": crash.serving or None, "serving_for": round(crash.serving_for, 3) if crash.serving else None,
            "in_flight": crash.in_flight}
