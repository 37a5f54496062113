"""A frozen picture of the master: what it wants and what runs. Status, metrics, readiness and sd_notify read it.

The master's loop owns its records; nothing outside the loop reads them. When the control socket, the metrics
endpoint or the notifier needs to know something, it calls the `snapshot()` it was given and gets a `Snapshot`:
plain frozen values, taken in one go (the workers' counters are read from shared memory at that moment). So a
renderer can never change the master, and a new reader never needs the master's internals.

Times are monotonic seconds (`now` says when it was taken); `to_wall` turns them into Unix time for output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forkserve.channel import DURATION_BUCKETS, Counters, Serving
from forkserve.config.binds import BindAddress
from forkserve.outcomes import Crash
from forkserve.spec import DesiredState
from forkserve.state import Backoff, Phase


@dataclass
class Totals:
    """Request counts summed over workers: what exited workers served, kept per app so counters never go back."""

    by_class: list[int] = field(default_factory=lambda: [0] * 5)
    duration_us: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))

    def add(self, c: Counters) -> None:
        for i, n in enumerate(c.by_status_class):
            self.by_class[i] += n
        self.duration_us += c.duration_us
        for i, n in enumerate(c.buckets):
            self.buckets[i] += n

    def copy(self) -> Totals:
        return Totals(list(self.by_class), self.duration_us, list(self.buckets))


@dataclass(frozen=True)
class WorkerSnapshot:
    pid: int
    app: str
    revision: str
    phase: Phase
    started: float
    recycle: bool
    counters: Counters
    serving: Serving | None = None  # the request it started last and still runs (shared memory)

    @property
    def live(self) -> bool:
        return self.phase in (Phase.BOOTING, Phase.READY)

    @property
    def state(self) -> str:
        """booting | idle | busy | draining | killed."""
        if self.phase is Phase.READY:
            return "busy" if self.counters.in_flight > 0 else "idle"
        return str(self.phase)


@dataclass(frozen=True)
class SiteSnapshot:
    path: str
    revision: str
    last_result: str
    errors: tuple[str, ...]
    missing: bool


@dataclass(frozen=True)
class Snapshot:
    now: float  # monotonic, when taken
    wall: float  # time.time() at the same moment
    pid: int
    started_at: float  # monotonic
    started_wall: float  # time.time() at start: fixed, so a clock step never moves it
    control_socket: str | None
    site: SiteSnapshot
    desired: DesiredState
    workers: tuple[WorkerSnapshot, ...]  # by start time
    addresses: dict[BindAddress, str]  # open listeners: bind -> real address
    bind_errors: dict[BindAddress, str]
    backoff: dict[tuple[str, str], Backoff]
    proven: dict[str, str]  # app -> proven revision
    restarts: dict[tuple[str, str], int]  # (app, cause) -> count
    exited: dict[str, Totals]  # per app: what workers that are gone served
    loop_errors: int = 0  # loop steps that raised since start (logged with their traceback)
    last_loop_error: str = ""
    crashes: dict[tuple[str, str], int] = field(default_factory=dict)  # (app, CrashCause value) -> count
    last_crash: dict[str, Crash] = field(default_factory=dict)  # app -> its last crash of a ready worker

    def to_wall(self, t: float) -> float:
        return round(self.wall - (self.now - t), 3)

    @property
    def stopping(self) -> bool:
        return self.desired.stopping

    def app_names(self) -> list[str]:
        return sorted({*self.desired.apps, *(w.app for w in self.workers)})

    def workers_of(self, app: str) -> list[WorkerSnapshot]:
        return [w for w in self.workers if w.app == app]
