"""Crash semantics (issue 12, item 3): boot failures back off per revision, every revision; a crash of a ready
worker is never a boot failure and is replaced at once within the app's crash rate; the slot says what a worker
was serving. Tables and Hypothesis properties over `backoff` and `plan`, then the real `Records` and `Executor`
with fake ports (tests/unit/test_executor.py's world)."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserve import backoff, channel
from forkserve.http.context import Context
from forkserve.master.executor import Executor
from forkserve.master.records import Records
from forkserve.outcomes import Crash, CrashCause
from forkserve.plan import Spawn, plan
from forkserve.state import Backoff, CrashBudget, Observed, Phase, WorkerView
from tests.unit.test_executor import FakeWorld, ready, run_for, turn
from tests.unit.test_plan import NOW, apply, desired, observed, worker

SEGV = signal.SIGSEGV  # a wait status: killed by SIGSEGV
EXIT_1 = 1 << 8  # a wait status: exit code 1
BOOT_ERROR = 3 << 8


def spawns(actions: tuple[object, ...]) -> list[Spawn]:
    return [a for a in actions if isinstance(a, Spawn)]


# ---- what counts as what --------------------------------------------------------------------------------

D = desired(api={"workers": 2})


@pytest.mark.parametrize(("view", "boot_failure", "crash"), [
    (worker(D, phase=Phase.BOOTING), True, False),  # exited before ready
    (dataclasses.replace(worker(D, phase=Phase.BOOTING), phase=Phase.KILLED, kill_signal=signal.SIGKILL,
                         killed_at=NOW), True, False),  # killed for its boot timeout
    (dataclasses.replace(worker(D, phase=Phase.BOOTING), phase=Phase.DRAINING, drain_deadline=NOW + 30),
     False, False),  # retired while booting (scale down): asked for
    (worker(D, started=NOW - 1), False, True),  # ready a moment ago, then died: a crash, not a boot failure
    (worker(D), False, True),
    (dataclasses.replace(worker(D), phase=Phase.KILLED, kill_signal=signal.SIGABRT, killed_at=NOW), False, False),
    (dataclasses.replace(worker(D), phase=Phase.DRAINING, drain_deadline=NOW + 30), False, False),
])
def test_boot_failure_or_crash(view: WorkerView, boot_failure: bool, crash: bool) -> None:
    assert (backoff.is_boot_failure(view), backoff.is_crash(view)) == (boot_failure, crash)


@pytest.mark.parametrize(("status", "cause"), [
    (signal.SIGSEGV, CrashCause.SIGSEGV), (signal.SIGKILL, CrashCause.SIGKILL), (signal.SIGBUS, CrashCause.SIGBUS),
    (signal.SIGUSR1, CrashCause.SIGNAL), (0, CrashCause.EXIT_0), (EXIT_1, CrashCause.EXIT_ERROR),
    (BOOT_ERROR, CrashCause.EXIT_ERROR),
])
def test_crash_causes_are_a_bounded_set(status: int, cause: CrashCause) -> None:
    assert CrashCause.of_status(status) is cause


@pytest.mark.parametrize(("crash", "line"), [
    (Crash(123, CrashCause.SIGSEGV, "killed by SIGSEGV", NOW, "GET /report?id=7", 0.42, 1),
     "app web: worker 123 died unexpectedly (killed by SIGSEGV) while serving GET /report?id=7 for 0.4s"),
    (Crash(123, CrashCause.EXIT_ERROR, "exit code 1", NOW, "POST /x", 2.0, 3),
     "app web: worker 123 died unexpectedly (exit code 1) while serving POST /x for 2.0s "
     "(the latest of 3 requests in flight)"),
    (Crash(123, CrashCause.SIGKILL, "killed by SIGKILL", NOW), "app web: worker 123 died unexpectedly "
     "(killed by SIGKILL) while idle"),
    (Crash(123, CrashCause.SIGKILL, "killed by SIGKILL", NOW, in_flight=2),
     "app web: worker 123 died unexpectedly (killed by SIGKILL) with 2 requests in flight"),
])
def test_crash_line(crash: Crash, line: str) -> None:
    assert crash.line("web") == line


# ---- the crash bucket -----------------------------------------------------------------------------------

def test_the_bucket_lets_a_burst_through_then_one_a_second() -> None:
    cap = backoff.crash_capacity(2)
    assert cap == backoff.CRASH_BURST
    budget = None
    for _ in range(backoff.CRASH_BURST):
        budget = backoff.after_crash(budget, NOW, cap)
        assert backoff.deferred(budget, NOW) == 0  # the burst: replaced at once
    budget = backoff.after_crash(budget, NOW, cap)
    budget = backoff.after_crash(budget, NOW, cap)
    assert backoff.deferred(budget, NOW) == 2
    assert backoff.wait(budget, NOW) == pytest.approx(2 / backoff.CRASH_RATE)
    assert backoff.deferred(budget, NOW + 0.5 / backoff.CRASH_RATE) == 2
    assert backoff.deferred(budget, NOW + 1 / backoff.CRASH_RATE) == 1
    assert backoff.deferred(budget, NOW + 2 / backoff.CRASH_RATE) == 0
    assert backoff.level(budget, NOW + 1000) == cap  # refills, up to its capacity


def test_a_big_app_gets_a_token_per_worker() -> None:
    assert backoff.crash_capacity(12) == 12


def test_the_plan_defers_replacements_beyond_the_rate() -> None:
    d = desired(api={"workers": 4})
    survivors = [worker(d)]
    owed = CrashBudget(level=-2.5, at=NOW, capacity=5)  # 3 replacements wait for tokens
    assert len(spawns(plan(d, observed(*survivors, crashes={"api": owed}), NOW))) == 0
    assert len(spawns(plan(d, observed(*survivors, crashes={"api": owed}), NOW + 0.5))) == 1
    assert len(spawns(plan(d, observed(*survivors, crashes={"api": owed}), NOW + 2.5))) == 3


# ---- boot failures of every revision back off ------------------------------------------------------------

def test_the_fallback_respects_a_backoff_of_the_proven_revision() -> None:
    old = desired(api={"workers": 3})
    new = desired(api={"workers": 3, "module": "broken:app"})
    survivors = [worker(old) for _ in range(2)]
    held = {("api", new.apps["api"].revision): Backoff(2, NOW + 5, "boom", NOW),
            ("api", old.apps["api"].revision): Backoff(1, NOW + 1, "boom too", NOW)}  # in-place: old code broken
    obs = observed(*survivors, backoff=held, proven={"api": old.apps["api"]})
    assert spawns(plan(new, obs, NOW)) == []
    assert spawns(plan(new, obs, NOW + 1)) == [Spawn(old.apps["api"])]  # the proven revision's turn comes first


@st.composite
def held_cases(draw: st.DrawFn) -> tuple[object, Observed, float]:
    old = desired(api={"workers": draw(st.integers(1, 5))})
    new = draw(st.sampled_from([old, desired(api={"workers": draw(st.integers(1, 5)), "module": "other:app"})]))
    revs = {old.apps["api"].revision, new.apps["api"].revision}
    workers = [worker(draw(st.sampled_from([old, new])), phase=draw(st.sampled_from([Phase.READY, Phase.BOOTING])))
               for _ in range(draw(st.integers(0, 6)))]
    entries = {("api", r): Backoff(draw(st.integers(1, 6)), NOW + draw(st.sampled_from([-1.0, 0.5, 5.0])), "x", NOW)
               for r in revs if draw(st.booleans())}
    proven = {"api": old.apps["api"]} if draw(st.booleans()) else {}
    return new, observed(*workers, backoff=entries, proven=proven), NOW


@settings(max_examples=300, deadline=None)
@given(held_cases())
def test_no_revision_in_backoff_is_ever_spawned(case: tuple[object, Observed, float]) -> None:
    d, obs, now = case
    for a in spawns(plan(d, obs, now)):  # type: ignore[arg-type]
        entry = obs.backoff.get((a.app, a.revision))
        assert entry is None or entry.retry_at <= now


# ---- a crash storm never spawns more than the rate allows ------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.integers(1, 8), st.lists(st.integers(0, 3), min_size=1, max_size=200))
def test_a_crash_storm_spawns_within_the_bucket_and_keeps_what_the_rate_allows(
    workers: int, kills_per_step: list[int]
) -> None:
    d = desired(api={"workers": workers})
    obs = observed(*[worker(d) for _ in range(workers)])
    step, now, spawned = 0.1, NOW, 0
    cap = backoff.crash_capacity(workers)
    for kills in [*kills_per_step, *[0] * 100]:  # the storm, then calm
        actions = plan(d, obs, now)
        spawned += len(spawns(actions))
        obs = apply(actions, obs, d, now)
        # never more than the bucket holds plus what it refilled since the storm began
        assert spawned <= cap + (now - NOW) * backoff.CRASH_RATE + 1e-9
        live = [w for w in obs.workers.values() if w.live]
        assert len(live) >= workers - backoff.deferred(obs.crashes.get("api"), now)  # only those owed wait
        moved = {p: dataclasses.replace(w, phase=Phase.READY, ready_at=now) for p, w in obs.workers.items()}
        budget = obs.crashes.get("api")
        for pid in sorted(moved)[:kills]:  # a request kills a ready worker: a crash, never a boot failure
            assert backoff.is_crash(moved[pid]) and not backoff.is_boot_failure(moved[pid])
            del moved[pid]
            budget = backoff.after_crash(budget, now, cap)
        obs = dataclasses.replace(obs, workers=moved, crashes={"api": budget} if budget else {})
        now += step
    assert sum(w.live for w in obs.workers.values()) == workers  # calm again: full capacity
    assert obs.backoff == {}


# ---- the real records and executor ----------------------------------------------------------------------

def _serving(world: FakeWorld, pid: int, method: str, target: str, started: float) -> None:
    end = world.ends[pid]
    ctx = Context(lambda env, start: [], end.slot, end.record, None, keepalive=0, timeout=5, limit_line=8190,
                  limit_fields=100, limit_field=8190, access=None, max_requests=0, on_max_requests=lambda: None,
                  text=end.text, starts=end.starts)
    ctx.show(method, target)
    end.starts[channel.REQUEST_START] = started
    end.slot[channel.IN_FLIGHT] += 1


def test_a_ready_worker_killed_under_a_request_is_a_crash_with_what_it_served(world: FakeWorld,
                                                                             records: Records) -> None:
    executor = Executor(records, world, world.ports())
    d = desired(api={"workers": 2})
    now = run_for(records, executor, world, d, 4)
    assert ready(records, "api") == 2
    victim = min(records.workers)
    _serving(world, victim, "GET", "/report?id=7", now - 0.4)
    records.worker_exited(victim, SEGV, now, stopping=False)  # ready 0.5 s ago: once a failure, now a crash
    assert records.backoff == {}
    assert records.crashes[("api", "SIGSEGV")] == 1
    crash = records.last_crash["api"]
    assert (crash.pid, crash.serving, round(crash.serving_for, 1), crash.in_flight) == (victim, "GET /report?id=7",
                                                                                         0.4, 1)
    turn(records, executor, world, d, now)
    assert len(records.workers) == 2  # replaced in the next pass


def test_a_request_that_kills_every_worker_costs_no_fork_storm(world: FakeWorld, records: Records) -> None:
    executor = Executor(records, world, world.ports())
    d = desired(api={"workers": 2})
    now = run_for(records, executor, world, d, 4)
    started = len(world.ends)
    for _ in range(80):  # 20 s: every ready worker is killed on every pass
        now += 0.25
        for pid in [p for p, r in records.workers.items() if r.view.phase is Phase.READY]:
            records.worker_exited(pid, SEGV, now, stopping=False)
        turn(records, executor, world, d, now)
    forks = len(world.ends) - started
    assert forks <= backoff.CRASH_BURST + 20 * backoff.CRASH_RATE + 1
    assert forks >= 20 * backoff.CRASH_RATE - 1  # but the app is replenished at the rate, never emptied for long
    assert records.backoff == {}  # never a boot failure


def test_a_bad_in_place_deploy_backs_off_the_proven_revision_too(world: FakeWorld, records: Records) -> None:
    """The code on disk breaks under a revision that has run healthy for long: a crashed old worker's
    replacements fail to boot, and the old workers that stay healthy must not clear that backoff."""
    executor = Executor(records, world, world.ports())
    d = desired(api={"workers": 3})
    rev = d.apps["api"].revision
    now = 0.0
    for _ in range(30):
        now += 0.25
        turn(records, executor, world, d, now)
    assert records.proven["api"].revision == rev
    started = len(world.ends)
    records.worker_exited(min(records.workers), signal.SIGKILL, now, stopping=False)
    for _ in range(40):  # 10 s: every new worker of the revision exits at boot (it imports the broken code)
        now += 0.25
        turn(records, executor, world, d, now)
        for pid in [p for p in records.workers if p not in range(0, 500 + started)]:
            records.worker_exited(pid, BOOT_ERROR, now, stopping=False)
    boots = len(world.ends) - started
    assert 3 <= boots <= 5  # 1 + 2 + 4 s of backoff (and the first retry at once) in 10 s, not 40
    assert records.backoff[("api", rev)].failures == boots
    assert records.crashes[("api", "boot_failure")] == boots and records.crashes[("api", "SIGKILL")] == 1
    assert ready(records, "api") == 2  # the old workers keep serving


def test_a_fresh_healthy_worker_clears_the_backoff() -> None:
    d = desired(api={"workers": 1})
    entry = Backoff(3, NOW - 1, "boom", failed_at=NOW - 20)
    old = worker(d, started=NOW - 100)
    fresh = dataclasses.replace(worker(d, started=NOW - 10), ready_at=NOW - 9)
    assert not backoff.clears(entry, old, NOW)  # healthy since long before the failure: proves nothing
    assert backoff.clears(entry, fresh, NOW)


# ---- the slot -------------------------------------------------------------------------------------------

def test_the_slot_says_what_the_worker_serves_bounded_and_printable() -> None:
    master, end, _region = channel.create()
    try:
        assert master.serving() is None
        ctx = Context(lambda env, start: [], end.slot, end.record, None, keepalive=0, timeout=5, limit_line=8190,
                      limit_fields=100, limit_field=8190, access=None, max_requests=0,
                      on_max_requests=lambda: None, text=end.text, starts=end.starts)
        ctx.show("GET", "/a\x7fb\xe9")  # as parse.py decodes the wire: latin-1
        end.starts[channel.REQUEST_START] = 5.0
        serving = master.serving()
        assert serving == channel.Serving("GET /a\\x7fb\\xe9", 5.0)  # escaped: the bytes as received
        ctx.show("POST", "/" + "x" * 1000)
        assert master.serving() is None  # the text is changing: no request named
        end.starts[channel.REQUEST_START] = 6.0
        text = master.serving().text  # type: ignore[union-attr]
        assert text.startswith("POST /xxx") and text.endswith("...") and len(text) == channel.TEXT_BYTES + 3
        end.starts[channel.REQUEST_START] = 0.0
        assert master.serving() is None
    finally:
        master.close()
        os.close(end.write_fd)
