"""`forkserve plan`: what applying a site file would do, as a JSON-able report. Pure; executes nothing.

The master builds it from its live desired and observed state; with no master running the client builds it
against an empty site. Report::

    {"path": "/srv/site.toml", "valid": true, "errors": [],
     "revision": {"from": "3f2a9c1d", "to": "77b0e4aa"},
     "changes": [{"app": "api", "kind": "scale", "detail": "scaled 2->4"},
                 {"app": "web", "kind": "roll", "detail": "rolling (module changed)"},
                 {"app": "web", "kind": "rebind", "detail": "binds tcp://127.0.0.1:8000 -> tcp://127.0.0.1:8080"},
                 {"app": "shop", "kind": "add", "detail": "added (2 workers)"},
                 {"app": "old", "kind": "remove", "detail": "removed"},
                 {"app": "", "kind": "needs-restart", "detail": "[server] metrics changed: needs a restart"}],
     "first_steps": ["open listener tcp://127.0.0.1:8080 (web)", "spawn 1 worker of web", ...],
     "changed": true}

Kinds: add, remove, scale, roll, rebind (with roll: listeners change), settings (live settings such as
graceful_timeout, applied without new workers), needs-restart (`[server]` keys the master reads only at
start). `first_steps` are the actions the very next reconcile would take; a roll continues as workers report
ready. `changed` is false exactly when `changes` is empty (`plan` exits 0), else true (exit 1).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from forkserve.changes import app_changes, needs_restart
from forkserve.plan import CloseListener, Kill, OpenListener, Retire, Spawn, plan
from forkserve.spec import DesiredState, LoadedSite, ServerSettings
from forkserve.state import Observed

_KINDS = {"added": "add", "removed": "remove", "scaled": "scale", "rolling": "roll", "changed": "settings"}


def invalid_report(path: str, errors: list[str], current_revision: str = "") -> dict[str, Any]:
    return {"path": path, "valid": False, "errors": errors, "revision": {"from": current_revision, "to": None},
            "changes": [], "first_steps": [], "changed": False}


def plan_report(path: str, loaded: LoadedSite, current: DesiredState, current_server: ServerSettings | None,
                observed: Observed, now: float) -> dict[str, Any]:
    new = loaded.desired
    changes: list[dict[str, str]] = []
    for change in app_changes(current, new):
        kinds = ["scale", "roll"] if change.kind == "scaled+rolling" else [_KINDS.get(change.kind, change.kind)]
        changes += [{"app": change.app, "kind": kind, "detail": change.detail} for kind in kinds]
        before, after = current.apps.get(change.app), new.apps.get(change.app)
        if before is not None and after is not None and before.binds != after.binds:
            old = ", ".join(str(b) for b in before.binds)
            changes.append({"app": change.app, "kind": "rebind",
                            "detail": f"binds {old} -> {', '.join(str(b) for b in after.binds)}"})
    if current_server is not None:
        changes += [{"app": "", "kind": "needs-restart", "detail": f"[server] {key} changed: needs a restart"}
                    for key in needs_restart(current_server, loaded.server)]
    return {
        "path": path,
        "valid": True,
        "errors": [],
        "revision": {"from": current.revision, "to": new.revision},
        "changes": changes,
        "first_steps": describe_actions(plan(new, observed, now), observed),
        "changed": bool(changes),
    }


def describe_actions(actions: tuple[Any, ...], observed: Observed) -> list[str]:
    """Readable lines; spawns and retirements of one app are counted together."""
    lines: list[str] = []
    spawns: Counter[str] = Counter()
    retires: Counter[tuple[str, str]] = Counter()
    for action in actions:
        if isinstance(action, OpenListener):
            lines.append(f"open listener {action.bind} ({action.app})")
        elif isinstance(action, CloseListener):
            lines.append(f"close listener {action.bind}")
        elif isinstance(action, Spawn):
            spawns[action.app] += 1
        elif isinstance(action, Retire | Kill):
            view = observed.workers.get(action.pid)
            retires[(view.app if view else "?", action.reason)] += 1
    lines += [f"spawn {n} worker{'s' if n > 1 else ''} of {app}" for app, n in sorted(spawns.items())]
    lines += [f"retire {n} worker{'s' if n > 1 else ''} of {app} ({why})" for (app, why), n in sorted(retires.items())]
    return lines
