"""The master's mutable truth about what runs: workers, listeners, backoff, proven revisions, counts.

Owned by the loop (`master/loop.py`), changed only from it: by the executor when it applies actions, and by the
loop's own steps when workers report events, beat, exit or turn healthy. It is read in two frozen forms:
`observed()` for `plan()`, and `snapshot()` for everyone else (status, metrics, the control plane).

Its only I/O is reading the workers' event pipes and shared-memory slots, and (un)registering those pipes with
the loop's selector through the `FdWatch` it is given.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from forkserve import backoff, process
from forkserve.channel import MasterEnd
from forkserve.config.binds import BindAddress
from forkserve.outcomes import Crash, CrashCause, RestartCause
from forkserve.snapshot import SiteSnapshot, Snapshot, Totals, WorkerSnapshot
from forkserve.sockets import Listener
from forkserve.spec import AppSpec, DesiredState
from forkserve.state import Backoff, CrashBudget, Observed, Phase, WorkerView

log = logging.getLogger("forkserve")


class FdWatch(Protocol):
    """The loop's selector, narrowed to what records and preload processes need: wake the loop on input."""

    def watch(self, fd: int) -> None: ...

    def unwatch(self, fd: int) -> None: ...


@dataclass
class WorkerRecord:
    view: WorkerView
    end: MasterEnd
    spec: AppSpec
    boot_error: str = ""


class Records:
    def __init__(self, fds: FdWatch) -> None:
        self.fds = fds
        self.workers: dict[int, WorkerRecord] = {}
        self.listeners: dict[BindAddress, Listener] = {}
        self.backoff: dict[tuple[str, str], Backoff] = {}
        self.proven: dict[str, AppSpec] = {}  # app -> spec of the desired revision, once one of its workers was
        # healthy (ready for backoff.HEALTHY_AFTER): what the plan falls back to while a newer one cannot boot
        self.bind_retry_at: dict[BindAddress, float] = {}
        self.bind_errors: dict[BindAddress, str] = {}
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.crashes: Counter[tuple[str, str]] = Counter()  # (app, CrashCause value) -> unexpected deaths
        self.last_crash: dict[str, Crash] = {}  # app -> the last crash of a ready worker (what it was serving)
        self.crash_budget: dict[str, CrashBudget] = {}  # app -> crash-replacement token bucket (backoff.py)
        self.exited: dict[str, Totals] = {}  # per app: counters of workers that are gone (read once, at exit)
        self.converged: dict[str, str] = {}  # app -> "revision/count" it last fully converged to (for the log)

    def observed(self) -> Observed:
        return Observed(
            workers={pid: r.view for pid, r in self.workers.items()},
            listeners=frozenset(self.listeners),
            backoff=dict(self.backoff),
            bind_retry_at=dict(self.bind_retry_at),
            proven=dict(self.proven),
            crashes=dict(self.crash_budget),
        )

    def snapshot(self, desired: DesiredState, site: SiteSnapshot, *, now: float, wall: float, pid: int,
                 started_at: float, started_wall: float, control_socket: str | None, loop_errors: int = 0,
                 last_loop_error: str = "") -> Snapshot:
        workers = sorted(self.workers.values(), key=lambda r: r.view.started)
        return Snapshot(
            now=now, wall=wall, pid=pid, started_at=started_at, started_wall=started_wall,
            control_socket=control_socket, site=site, desired=desired,
            workers=tuple(WorkerSnapshot(r.view.pid, r.view.app, r.view.revision, r.view.phase, r.view.started,
                                         r.view.recycle, r.end.counters(), r.end.serving()) for r in workers),
            addresses={bind: listener.address for bind, listener in self.listeners.items()},
            bind_errors=dict(self.bind_errors),
            backoff=dict(self.backoff),
            proven={app: spec.revision for app, spec in self.proven.items()},
            restarts=dict(self.restarts),
            exited={app: totals.copy() for app, totals in self.exited.items()},
            loop_errors=loop_errors, last_loop_error=last_loop_error,
            crashes=dict(self.crashes), last_crash=dict(self.last_crash),
        )

    # ---- what the executor records ------------------------------------------------------------------------

    def add_worker(self, pid: int, end: MasterEnd, spec: AppSpec, now: float) -> None:
        view = WorkerView(pid=pid, app=spec.name, revision=spec.revision, binds=frozenset(spec.binds),
                          phase=Phase.BOOTING, started=now, heartbeat=now, timeout=spec.timeout,
                          boot_timeout=spec.boot_timeout)
        self.workers[pid] = WorkerRecord(view, end, spec)
        self.fds.watch(end.read_fd)

    def failed(self, app: str, revision: str, now: float, error: str,
               cause: CrashCause = CrashCause.BOOT_FAILURE) -> Backoff:
        """A boot failure of (app, revision) (a worker's or a preload process's): the next spawn of it waits
        longer, whatever the revision (the proven one too: see `forkserve.backoff`)."""
        self.crashes[(app, cause.value)] += 1
        key = (app, revision)
        self.backoff[key] = backoff.after_failure(self.backoff.get(key), now, error)
        return self.backoff[key]

    def count_restart(self, app: str, cause: RestartCause | None) -> None:
        if cause is not None:
            self.restarts[(app, cause.value)] += 1

    def update(self, pid: int, **changes: object) -> WorkerView:
        record = self.workers[pid]
        record.view = dataclasses.replace(record.view, **changes)  # type: ignore[arg-type]
        return record.view

    # ---- what the loop reads from workers -------------------------------------------------------------------

    def read_events(self, now: float) -> None:
        for record in list(self.workers.values()):
            self._events_of(record, now)

    def _events_of(self, record: WorkerRecord, now: float) -> None:
        if record.end.read_fd < 0:
            return
        events, closed = record.end.read_events()
        for event in events:
            kind = event.get("event")
            if kind == "ready" and record.view.phase is Phase.BOOTING:
                record.view = dataclasses.replace(record.view, phase=Phase.READY, ready_at=now, heartbeat=now)
                log.debug("worker %d of %s ready", record.view.pid, record.view.app)
            elif kind == "recycle":
                record.view = dataclasses.replace(record.view, recycle=True)
            elif kind == "boot_error":
                record.boot_error = str(event.get("text", ""))
        if closed:
            self._close_end(record)

    def _close_end(self, record: WorkerRecord) -> None:
        if record.end.read_fd >= 0:
            self.fds.unwatch(record.end.read_fd)
            record.end.close()

    def read_heartbeats(self) -> None:
        for record in self.workers.values():
            beat = record.end.heartbeat()
            if beat > record.view.heartbeat:
                record.view = dataclasses.replace(record.view, heartbeat=beat)

    def worker_exited(self, pid: int, status: int, now: float, stopping: bool) -> None:
        """A worker is gone: reaped by the master, or reported by the preload process that forked it."""
        record = self.workers.pop(pid, None)
        if record is None:
            return
        self._events_of(record, now)  # a boot error written just before exit
        self._close_end(record)
        self.exited.setdefault(record.view.app, Totals()).add(record.end.counters())
        self._after_exit(record, status, now, stopping)

    def _after_exit(self, record: WorkerRecord, status: int, now: float, stopping: bool) -> None:
        """Boot failure (never ready: back off this revision) or crash of a ready worker (count it, log what it
        was serving, take a token of the app's crash bucket: the plan replaces it within the rate). The rules
        and their numbers are `forkserve.backoff`'s."""
        view = record.view
        how = process.describe_exit(status)
        if view.phase is Phase.DRAINING or stopping:  # retired, or stopping (TERM may reach the whole process
            # group from systemd or a shell, so workers can be quicker than our own retire)
            log.debug("worker %d of %s exited (%s)", view.pid, view.app, how)
            return
        if backoff.is_boot_failure(view):
            timed_out = view.kill_signal is not None  # the plan killed it for its boot timeout
            error = record.boot_error.strip() or (
                f"not ready within boot_timeout ({view.boot_timeout:g}s)" if timed_out
                else f"worker exited during boot ({how})")
            log.error("app %s (revision %s): worker %d failed to boot (%s):\n%s", view.app, view.revision,
                      view.pid, how, indent(error))
            entry = self.failed(view.app, view.revision, now, error,
                                CrashCause.BOOT_TIMEOUT if timed_out else CrashCause.BOOT_FAILURE)
            if entry.failures > 1:
                log.warning("app %s: %d failures in a row; next try in %.0fs", view.app, entry.failures,
                            entry.retry_at - now)
            return
        if not backoff.is_crash(view):  # killed by the plan (timeout): replaced in that plan, counted there
            log.debug("worker %d of %s exited (%s)", view.pid, view.app, how)
            return
        self.count_restart(view.app, RestartCause.CRASH)
        crash = self._crash(record, status, how, now)
        self.crashes[(view.app, crash.cause.value)] += 1
        self.last_crash[view.app] = crash
        budget = backoff.after_crash(self.crash_budget.get(view.app), now,
                                     backoff.crash_capacity(record.spec.workers))
        self.crash_budget[view.app] = budget
        wait = backoff.wait(budget, now)
        when = "replacing it" if wait <= 0 else (
            f"replacing it in {wait:.1f}s (crash replacements are limited to {backoff.CRASH_RATE:g}/s after a "
            f"burst of {budget.capacity:g})")
        log.warning("%s; %s", crash.line(view.app), when)

    @staticmethod
    def _crash(record: WorkerRecord, status: int, how: str, now: float) -> Crash:
        """What the dead worker's slot says it was serving (shared memory outlives the process)."""
        serving = record.end.serving()
        return Crash(pid=record.view.pid, cause=CrashCause.of_status(status), how=how, at=now,
                     serving=serving.text if serving else "",
                     serving_for=max(0.0, now - serving.started) if serving else 0.0,
                     in_flight=record.end.counters().in_flight)

    def note_healthy(self, desired: DesiredState, now: float) -> None:
        """A revision with a healthy worker is out of backoff, and, when desired, the app's proven revision.
        Healthy rather than merely ready: code that crashes seconds after boot is not something to fall back on."""
        healthy = {(r.view.app, r.view.revision) for r in self.workers.values() if backoff.healthy(r.view, now)}
        for key, entry in list(self.backoff.items()):  # only a worker started after the last failure clears it:
            # old healthy workers prove nothing about the code on disk now (a bad in-place deploy)
            if key in healthy and any((r.view.app, r.view.revision) == key and backoff.clears(entry, r.view, now)
                                      for r in self.workers.values()):
                del self.backoff[key]
        for name, spec in desired.apps.items():
            if (name, spec.revision) in healthy:
                self.proven[name] = spec

    def revision_needed(self, desired: DesiredState, app: str, revision: str) -> bool:
        """Does a desired spec, the proven fallback or a running worker still need (app, revision)? (Its preload
        process is kept while it does.)"""
        spec = desired.apps.get(app)
        if spec is not None and spec.preload and spec.revision == revision:
            return True
        proven = self.proven.get(app)
        if spec is not None and proven is not None and proven.preload and proven.revision == revision:
            return True  # the plan may spawn from it while the desired revision cannot boot
        return any((r.view.app, r.view.revision) == (app, revision) for r in self.workers.values())

    def forget_removed_apps(self, desired: DesiredState) -> None:
        self.proven = {app: spec for app, spec in self.proven.items() if app in desired.apps}

    def converged_on(self, desired: DesiredState) -> bool:
        """Has every app reached its desired count of ready workers of its desired revision (as last logged)?"""
        return all(self.converged.get(name) == f"{spec.revision}/{spec.workers}" for name, spec in desired.apps.items())

    def log_convergence(self, desired: DesiredState) -> None:
        for name in [n for n in self.converged if n not in desired.apps]:
            if not any(r.view.app == name for r in self.workers.values()):
                del self.converged[name]
                log.info("app %s: removed (all workers gone)", name)
        for name, spec in desired.apps.items():
            mine = [r.view for r in self.workers.values() if r.view.app == name and r.view.live]
            done = (len(mine) == spec.workers and all(w.phase is Phase.READY and w.revision == spec.revision
                                                      for w in mine))
            if done and self.converged.get(name) != f"{spec.revision}/{spec.workers}":
                self.converged[name] = f"{spec.revision}/{spec.workers}"
                log.info("app %s: %d/%d workers ready (revision %s)", name, len(mine), spec.workers, spec.revision)

    def close_ends(self) -> None:
        for record in self.workers.values():
            self._close_end(record)


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
