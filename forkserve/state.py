"""Observed state: what the master knows is running, as frozen values. Pure.

The master keeps these records up to date from SIGCHLD, worker events and the shared counters, and hands a
snapshot to `plan()` on every wake-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from forkserve.config.binds import BindAddress
from forkserve.spec import AppSpec


class Phase(str, Enum):
    BOOTING = "booting"  # forked, importing the app; not accepting yet
    READY = "ready"  # accepting connections
    DRAINING = "draining"  # sent TERM: finishing in-flight requests, accepts nothing new
    KILLED = "killed"  # sent a kill signal; waiting to be reaped

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class WorkerView:
    pid: int
    app: str
    revision: str
    binds: frozenset[BindAddress]
    phase: Phase
    started: float  # monotonic seconds
    heartbeat: float  # monotonic seconds of the last sign of life
    timeout: float
    boot_timeout: float
    ready_at: float | None = None
    recycle: bool = False  # asked to be replaced (max_requests)
    drain_deadline: float | None = None  # DRAINING: killed after this
    kill_signal: int | None = None  # KILLED: the last signal sent
    killed_at: float | None = None

    @property
    def live(self) -> bool:
        """Counts toward the app's workers (not on its way out)."""
        return self.phase in (Phase.BOOTING, Phase.READY)


@dataclass(frozen=True)
class Backoff:
    """Boot-failure state of one (app, revision): no spawn before `retry_at` (`forkserve.backoff`)."""

    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    failed_at: float = 0.0  # the last failure: only a worker started after it can clear the record


@dataclass(frozen=True)
class CrashBudget:
    """The crash-replacement token bucket of one app (`forkserve.backoff`): `level` tokens at time `at`, refilling
    up to `capacity`; below zero, that many replacements of crashed ready workers wait for their token."""

    level: float
    at: float
    capacity: float


@dataclass(frozen=True)
class Observed:
    workers: dict[int, WorkerView] = field(default_factory=dict)
    listeners: frozenset[BindAddress] = frozenset()
    backoff: dict[tuple[str, str], Backoff] = field(default_factory=dict)  # (app, revision) -> state
    bind_retry_at: dict[BindAddress, float] = field(default_factory=dict)  # failed binds: next attempt
    proven: dict[str, AppSpec] = field(default_factory=dict)  # app -> newest desired spec that ran healthy
    crashes: dict[str, CrashBudget] = field(default_factory=dict)  # app -> crash-replacement bucket

    def of_app(self, app: str) -> list[WorkerView]:
        return [w for w in self.workers.values() if w.app == app]
