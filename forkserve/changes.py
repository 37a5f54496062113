"""What applying a new site file changes, in words. Pure.

Used for the one log line each reload writes (`site revision 3f2a applied: api scaled 2->4; web rolling; shop
added`) and by `forkserve plan`.

Environment values may be secrets (from `${VAR}` or an env_file): a change names the variables that changed,
never a value (`web rolling (env changed: DB_PASSWORD)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from forkserve.spec import ROLL_FIELDS, AppSpec, DesiredState, ServerSettings

# [server] keys the master cannot change while it runs: reported, never silently ignored.
RESTART_ONLY: tuple[str, ...] = ("control_socket", "pidfile", "error_log", "watch", "metrics")


@dataclass(frozen=True)
class AppChange:
    app: str
    kind: str  # "added", "removed", "scaled", "rolling", "scaled+rolling", "changed" (live settings only)
    detail: str

    def __str__(self) -> str:
        return f"{self.app} {self.detail}" if self.detail else f"{self.app} {self.kind}"


def app_changes(old: DesiredState, new: DesiredState) -> list[AppChange]:
    changes = []
    for name in sorted({*old.apps, *new.apps}):
        before, after = old.apps.get(name), new.apps.get(name)
        if before is None:
            changes.append(AppChange(name, "added", f"added ({after.workers if after else 0} workers)"))
        elif after is None:
            changes.append(AppChange(name, "removed", "removed"))
        else:
            rolled = before.revision != after.revision
            scaled = before.workers != after.workers
            if rolled:
                fields = [f for f in ROLL_FIELDS if _field(before, f) != _field(after, f)]
                fields += ["start directory"] if before.start_dir != after.start_dir else []
                what = f"rolling ({', '.join(fields or ['log settings'])} changed{_env_names(before, after)})"
                kind = "scaled+rolling" if scaled else "rolling"
                detail = f"scaled {before.workers}->{after.workers}, {what}" if scaled else what
                changes.append(AppChange(name, kind, detail))
            elif scaled:
                changes.append(AppChange(name, "scaled", f"scaled {before.workers}->{after.workers}"))
            elif before != after:
                changes.append(AppChange(name, "changed", "live settings changed (no restart)"))
    return changes


def _field(spec: object, name: str) -> object:
    return getattr(spec, name)


def _env_names(before: AppSpec, after: AppSpec) -> str:
    """`: A, B` naming the environment variables added, removed or changed; their values are never shown."""
    old, new = dict(before.env), dict(after.env)
    names = sorted(name for name in {*old, *new} if old.get(name) != new.get(name))
    return f": {', '.join(names)}" if names else ""


def needs_restart(old: ServerSettings, new: ServerSettings) -> list[str]:
    return [key for key in RESTART_ONLY if getattr(old, key, None) != getattr(new, key, None)]


def summary(old: DesiredState, new: DesiredState, old_server: ServerSettings | None,
            new_server: ServerSettings) -> str:
    parts = [str(c) for c in app_changes(old, new)]
    if old_server is not None:
        parts += [f"[server] {key} changed: needs a restart to apply" for key in needs_restart(old_server, new_server)]
    return "; ".join(parts) if parts else "no changes"
