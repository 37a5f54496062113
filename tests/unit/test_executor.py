"""plan() against the real executor and records, with fake ports: no fork, no socket, no signal.

The fake workers speak the real channel (a shared slot and an event pipe): they report "ready" and beat, and
the records read that as the master does. So a scale, a roll and a fallback are checked end to end through the
code the master runs, with the floor of ready workers sampled after every step.
"""

from __future__ import annotations

import itertools
import signal
import socket
from dataclasses import dataclass, field

from forkserve import channel
from forkserve.config.binds import BindAddress
from forkserve.master.executor import Executor, Ports
from forkserve.master.records import Records
from forkserve.plan import plan
from forkserve.sockets import Listener
from forkserve.spec import AppSpec, DesiredState
from forkserve.state import Phase
from tests.unit.test_plan import desired


@dataclass
class FakeWorld:
    """Stands in for the kernel: forks, listeners and signals are recorded; workers answer as told."""

    pids: itertools.count[int] = field(default_factory=lambda: itertools.count(500))
    ends: dict[int, channel.WorkerEnd] = field(default_factory=dict)
    specs: dict[int, AppSpec] = field(default_factory=dict)
    signals: list[tuple[int, int]] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # revisions whose workers never report ready
    regions: list[object] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def watch(self, fd: int) -> None:
        pass

    def unwatch(self, fd: int) -> None:
        pass

    def spawn(self, spec: AppSpec, sockets: list[socket.socket], now: float) -> object:
        master_end, worker_end, region = channel.create()
        self.regions.append(region)
        pid = next(self.pids)
        self.ends[pid], self.specs[pid] = worker_end, spec
        return _Spawned(pid, master_end)

    def open_listener(self, bind: BindAddress, spec: AppSpec) -> Listener:
        sock = socket.socket()  # never bound: the plan only needs the listener to exist
        self.sockets.append(sock)
        return Listener(bind, sock, str(bind))

    def boot_all(self) -> None:
        for pid, end in self.ends.items():
            if self.specs[pid].revision not in self.broken:
                end.send("ready")
                end.heartbeat()

    def ports(self) -> Ports:
        return Ports(open_listener=self.open_listener, close_listener=lambda listener: listener.sock.close(),
                     send_signal=lambda pid, sig: self.signals.append((pid, sig)))


@dataclass
class _Spawned:
    pid: int
    end: channel.MasterEnd


def turn(records: Records, executor: Executor, world: FakeWorld, want: DesiredState, now: float) -> None:
    """One pass of the master's loop: workers report, the plan runs, retired workers exit at once."""
    world.boot_all()
    records.read_events(now)
    records.read_heartbeats()
    records.note_healthy(want, now)
    executor.execute(plan(want, records.observed(), now), want, now)
    for pid, sig in world.signals:  # a retired worker exits cleanly, a killed one by its signal
        if pid in records.workers:
            records.worker_exited(pid, 0 if sig == signal.SIGTERM else sig, now, stopping=False)
    world.signals.clear()


def run_for(records: Records, executor: Executor, world: FakeWorld, want: DesiredState, passes: int,
            now: float = 0.0) -> float:
    """`passes` loop passes, a quarter second apart; returns the time reached."""
    for _ in range(passes):
        now += 0.25
        turn(records, executor, world, want, now)
    return now


def ready(records: Records, app: str) -> int:
    return sum(r.view.phase is Phase.READY for r in records.workers.values() if r.view.app == app)


def test_scale_then_roll_keeps_the_floor_through_the_real_executor(world: FakeWorld, records: Records) -> None:
    executor = Executor(records, world, world.ports())
    v1 = desired(api={"workers": 3})
    now = run_for(records, executor, world, v1, 5)
    assert ready(records, "api") == 3 and len(records.listeners) == 1
    v2 = desired(api={"workers": 3, "env": {"V": "2"}})
    for _ in range(20):
        now += 0.25
        turn(records, executor, world, v2, now)
        assert ready(records, "api") >= 3  # max_unavailable 0: never below the floor
        assert len(records.workers) <= 4  # max_surge 1
    assert {r.view.revision for r in records.workers.values()} == {v2.apps["api"].revision}
    assert records.restarts[("api", "rolled")] == 3


def test_a_revision_that_never_gets_ready_keeps_the_old_workers(world: FakeWorld, records: Records) -> None:
    executor = Executor(records, world, world.ports())
    v1 = desired(api={"workers": 2})
    now = 0.0
    for _ in range(30):  # healthy after backoff.HEALTHY_AFTER: v1 becomes the proven revision
        now += 0.25
        turn(records, executor, world, v1, now)
    assert records.proven["api"].revision == v1.apps["api"].revision
    v2 = desired(api={"workers": 2, "module": "broken:app", "boot_timeout": 2})
    world.broken.add(v2.apps["api"].revision)
    for _ in range(120):  # 30 s: boot timeouts kill the new workers; the backoff holds the roll back
        now += 0.25
        turn(records, executor, world, v2, now)
        assert ready(records, "api") >= 2
    assert records.backoff[("api", v2.apps["api"].revision)].failures >= 2
