"""Apply `plan()`'s actions: each action becomes calls on small injected ports, and a change to the records.

    OpenListener  -> ports.open_listener(...)        records.listeners (or a bind error and a retry time)
    Spawn         -> spawner.spawn(spec, sockets)     records.add_worker (or a backoff on a fork failure)
    Retire        -> ports.send_signal(pid, TERM)     the worker drains until now + graceful_timeout
    Kill          -> ports.send_signal(pid, sig)      the worker is KILLED until reaped
    CloseListener -> ports.close_listener(listener)

The ports are plain callables, so the plan tests can drive the real executor with fakes (no fork, no socket),
and the master passes the real ones (`process`, `sockets`, the preload-aware spawner).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from forkserve import process
from forkserve.channel import MasterEnd
from forkserve.config.binds import BindAddress
from forkserve.master.records import Records
from forkserve.outcomes import KillReason, RestartCause
from forkserve.plan import Action, CloseListener, Kill, OpenListener, Retire, Spawn
from forkserve.preload import Preloads
from forkserve.sockets import BindError, Listener
from forkserve.spec import AppSpec, DesiredState
from forkserve.state import Phase

log = logging.getLogger("forkserve")

BIND_RETRY = 5.0  # seconds before retrying a listener that failed to open after start-up


class Spawned(Protocol):
    pid: int
    end: MasterEnd


class Spawner(Protocol):
    def spawn(self, spec: AppSpec, sockets: list[socket.socket], now: float) -> Spawned | None:
        """A forked worker; None when it cannot be had yet (a preload process still starting). OSError: fork
        failed."""


class ForkSpawner:
    """The real spawner: fork a worker directly, or through its revision's preload process."""

    def __init__(self, preloads: Preloads) -> None:
        self.preloads = preloads

    def spawn(self, spec: AppSpec, sockets: list[socket.socket], now: float) -> Spawned | None:
        return self.preloads.spawn(spec, sockets, now) if spec.preload else process.spawn(spec, sockets)


@dataclass(frozen=True)
class Ports:
    open_listener: Callable[[BindAddress, AppSpec], Listener]  # raises BindError
    close_listener: Callable[[Listener], None]
    send_signal: Callable[[int, int], object]


class Executor:
    def __init__(self, records: Records, spawner: Spawner, ports: Ports) -> None:
        self.records = records
        self.spawner = spawner
        self.ports = ports

    def execute(self, actions: tuple[Action, ...], desired: DesiredState, now: float) -> None:
        for action in actions:
            if isinstance(action, OpenListener):
                with contextlib.suppress(BindError):
                    self.open(action, desired.apps[action.app], now, at_startup=False)
            elif isinstance(action, Spawn):
                self.spawn(action.spec, now)
            elif isinstance(action, Retire):
                self.retire(action, desired, now)
            elif isinstance(action, Kill):
                self.kill(action, now)
            elif isinstance(action, CloseListener):
                listener = self.records.listeners.pop(action.bind)
                self.ports.close_listener(listener)
                log.info("closed listener %s", listener.address)

    def open(self, action: OpenListener, spec: AppSpec, now: float, at_startup: bool) -> None:
        """Raises BindError; after start-up the bind is retried after BIND_RETRY."""
        records = self.records
        try:
            listener = self.ports.open_listener(action.bind, spec)
        except BindError as exc:
            if not at_startup:
                records.bind_errors[action.bind] = str(exc)
                records.bind_retry_at[action.bind] = now + BIND_RETRY
                log.error("app %s: cannot bind %s; retrying in %.0fs", action.app, exc, BIND_RETRY)
            raise
        records.listeners[action.bind] = listener
        records.bind_errors.pop(action.bind, None)
        records.bind_retry_at.pop(action.bind, None)
        log.info("listening on %s (app %s)", listener.address, action.app)

    def spawn(self, spec: AppSpec, now: float) -> None:
        listeners = self.records.listeners
        if any(b not in listeners for b in spec.binds):
            return  # a listener failed to open in this same plan; the plan retries after BIND_RETRY
        try:
            spawned = self.spawner.spawn(spec, [listeners[b].sock for b in spec.binds], now)
        except OSError as exc:
            self.records.failed(spec.name, spec.revision, now, f"fork failed: {exc}")
            log.error("app %s: fork failed: %s", spec.name, exc)
            return
        if spawned is None:
            return  # its preload process is starting: the plan asks again on a later wake-up
        self.records.add_worker(spawned.pid, spawned.end, spec, now)
        log.debug("spawned worker %d of %s (revision %s)", spawned.pid, spec.name, spec.revision)

    def retire(self, action: Retire, desired: DesiredState, now: float) -> None:
        record = self.records.workers[action.pid]
        spec = desired.apps.get(record.view.app, record.spec)
        self.records.update(action.pid, phase=Phase.DRAINING, drain_deadline=now + spec.graceful_timeout)
        self.records.count_restart(record.view.app, RestartCause.of_retire(action.reason))
        self.ports.send_signal(action.pid, signal.SIGTERM)
        log.debug("retiring worker %d of %s (%s)", action.pid, record.view.app, action.reason)

    def kill(self, action: Kill, now: float) -> None:
        view = self.records.workers[action.pid].view
        first = view.killed_at if view.phase is Phase.KILLED else now
        self.records.update(action.pid, phase=Phase.KILLED, kill_signal=action.signal, killed_at=first)
        self.records.count_restart(view.app, RestartCause.of_kill(action.reason))
        if action.reason in (KillReason.TIMEOUT, KillReason.BOOT_TIMEOUT):
            timed_out = action.reason is KillReason.TIMEOUT
            log.error("app %s: worker %d %s (%.0fs); sending %s", view.app, action.pid,
                      "silent too long" if timed_out else "not ready in time",
                      view.timeout if timed_out else view.boot_timeout, signal.Signals(action.signal).name)
        elif action.reason is KillReason.DRAIN_TIMEOUT:
            log.warning("app %s: worker %d still busy after graceful_timeout; killing it", view.app, action.pid)
        self.ports.send_signal(action.pid, action.signal)
