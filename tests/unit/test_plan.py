"""plan() is pure: table tests over values, and Hypothesis properties over simulated runs."""

from __future__ import annotations

import dataclasses
import itertools
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserve.config.binds import parse_bind
from forkserve.config.models import SiteConfig
from forkserve.plan import KILL_GRACE, Action, CloseListener, Kill, OpenListener, Retire, Spawn, plan
from forkserve.spec import DesiredState
from forkserve.state import Backoff, CrashBudget, Observed, Phase, WorkerView

NOW = 1000.0
A = parse_bind("127.0.0.1:8001")
B = parse_bind("127.0.0.1:8002")


def desired(**apps: dict[str, object]) -> DesiredState:
    data = {name: {"module": "m:app", "binds": ["127.0.0.1:8001"], **cfg} for name, cfg in apps.items()}
    return DesiredState.from_config(SiteConfig.model_validate({"apps": data}))


_pids = itertools.count(100)


def worker(d: DesiredState, app: str = "api", phase: Phase = Phase.READY, revision: str | None = None,
           started: float | None = None, **kw: object) -> WorkerView:
    spec = d.apps[app]
    if started is None:  # ready workers have been up a while; the others just started
        started = NOW - 100 if phase is Phase.READY else NOW - 1
    return WorkerView(pid=next(_pids), app=app, revision=revision or spec.revision, binds=frozenset(spec.binds),
                      phase=phase, started=started, heartbeat=NOW, timeout=spec.timeout,
                      boot_timeout=spec.boot_timeout, ready_at=started + 1 if phase is Phase.READY else None, **kw)


def observed(*workers: WorkerView, listeners: frozenset = frozenset({A}), **kw: object) -> Observed:
    return Observed(workers={w.pid: w for w in workers}, listeners=listeners, **kw)


def kinds(actions: tuple[Action, ...]) -> list[str]:
    return [type(a).__name__ for a in actions]


# ---- tables ---------------------------------------------------------------------------------------------

def test_empty_site_opens_listeners_before_spawning() -> None:
    d = desired(api={"workers": 2})
    actions = plan(d, Observed(), NOW)
    assert actions == (OpenListener(A, "api"), Spawn(d.apps["api"]),
                       Spawn(d.apps["api"]))


def test_converged_site_plans_nothing() -> None:
    d = desired(api={"workers": 2})
    assert plan(d, observed(worker(d), worker(d)), NOW) == ()


@pytest.mark.parametrize(("before", "after", "expect"), [
    (2, 4, ["Spawn", "Spawn"]),
    (4, 2, ["Retire", "Retire"]),
    (3, 3, []),
    (1, 2, ["Spawn"]),
])
def test_scale_only_touches_the_difference(before: int, after: int, expect: list[str]) -> None:
    d = desired(api={"workers": after})
    running = [worker(d, started=NOW - 100 + i) for i in range(before)]
    actions = plan(d, observed(*running), NOW)
    assert kinds(actions) == expect
    retired = {a.pid for a in actions if isinstance(a, Retire)}
    assert retired == {w.pid for w in running[: len(retired)]}  # the oldest go first


def test_scale_down_retires_booting_workers_first() -> None:
    d = desired(api={"workers": 2})
    ready = [worker(d), worker(d)]
    booting = worker(d, phase=Phase.BOOTING, started=NOW - 1)
    assert plan(d, observed(*ready, booting), NOW) == (Retire(booting.pid, "scale"),)


def test_roll_surges_one_then_retires_one_per_ready_replacement() -> None:
    old = desired(api={"workers": 2})
    new = desired(api={"workers": 2, "env": {"V": "2"}})
    olds = [worker(old, revision=old.apps["api"].revision, started=NOW - 100 + i) for i in range(2)]
    assert plan(new, observed(*olds), NOW) == (Spawn(new.apps["api"]),)
    booting = worker(new, phase=Phase.BOOTING)
    assert plan(new, observed(*olds, booting), NOW) == ()  # no old worker leaves before a new one is ready
    ready = dataclasses.replace(booting, phase=Phase.READY, ready_at=NOW)
    assert plan(new, observed(*olds, ready), NOW) == (Retire(olds[0].pid, "rolled"), Spawn(new.apps["api"]))


def test_roll_with_max_unavailable_retires_before_replacing() -> None:
    old = desired(api={"workers": 2})
    new = desired(api={"workers": 2, "env": {"V": "2"}, "max_surge": 0, "max_unavailable": 1})
    olds = [worker(old, revision=old.apps["api"].revision, started=NOW - 100 + i) for i in range(2)]
    assert kinds(plan(new, observed(*olds), NOW)) == ["Retire", "Spawn"]


def test_new_revision_in_backoff_keeps_old_workers_serving() -> None:
    old = desired(api={"workers": 2})
    new = desired(api={"workers": 2, "module": "broken:app"})
    olds = [worker(old, revision=old.apps["api"].revision) for _ in range(2)]
    key = ("api", new.apps["api"].revision)
    assert plan(new, observed(*olds, backoff={key: Backoff(3, NOW + 5, "ImportError")}), NOW) == ()


def test_an_old_worker_lost_while_the_new_revision_cannot_boot_is_replaced_from_the_old_revision() -> None:
    old = desired(api={"workers": 3})
    new = desired(api={"workers": 3, "module": "broken:app"})
    old_rev = old.apps["api"].revision
    survivors = [worker(old, revision=old_rev) for _ in range(2)]
    held = {("api", new.apps["api"].revision): Backoff(2, NOW + 5, "ImportError")}
    obs = observed(*survivors, backoff=held, proven={"api": old.apps["api"]})
    assert plan(new, obs, NOW) == (Spawn(old.apps["api"]),)
    # once the backoff expires the roll is tried again: one new worker within the surge, nobody retired
    assert plan(new, dataclasses.replace(obs, backoff={}), NOW) == (Spawn(new.apps["api"]),) * 2
    # without a proven revision (the app never booted) there is nothing to fall back to
    assert plan(new, dataclasses.replace(obs, proven={}), NOW) == ()


@pytest.mark.parametrize(("serving", "booting_old", "booting_other", "expect"), [
    (3, 0, 0, []),  # full capacity from the old revision: nothing to do
    (1, 1, 0, ["Spawn"]),  # the booting replacement counts; one more is missing
    (2, 0, 1, ["Retire", "Spawn"]),  # a booting worker of an older, unproven revision serves nothing
    (4, 0, 0, ["Retire"]),  # scaled down while held: the oldest goes
])
def test_hold_keeps_the_wanted_count_from_the_proven_revision(
    serving: int, booting_old: int, booting_other: int, expect: list[str]
) -> None:
    old = desired(api={"workers": 3})
    older = desired(api={"workers": 3, "env": {"V": "0"}})
    new = desired(api={"workers": 3, "module": "broken:app"})
    rev = old.apps["api"].revision
    workers = [worker(old, revision=rev) for _ in range(serving)]
    workers += [worker(old, phase=Phase.BOOTING, revision=rev) for _ in range(booting_old)]
    workers += [worker(older, phase=Phase.BOOTING) for _ in range(booting_other)]
    obs = observed(*workers, backoff={("api", new.apps["api"].revision): Backoff(1, NOW + 1, "boom")},
                   proven={"api": old.apps["api"]})
    assert kinds(plan(new, obs, NOW)) == expect


def test_recycle_requests_during_a_hold_roll_within_the_proven_revision() -> None:
    old = desired(api={"workers": 2})
    new = desired(api={"workers": 2, "module": "broken:app"})
    rev = old.apps["api"].revision
    tired, fresh = worker(old, revision=rev, recycle=True), worker(old, revision=rev)
    held = {"backoff": {("api", new.apps["api"].revision): Backoff(1, NOW + 30, "boom")},
            "proven": {"api": old.apps["api"]}}
    assert plan(new, observed(tired, fresh, **held), NOW) == (Spawn(old.apps["api"]),)  # surge first
    replacement = worker(old, revision=rev)
    assert plan(new, observed(tired, fresh, replacement, **held), NOW) == (Retire(tired.pid, "recycle"),)


def test_recycle_request_is_a_one_worker_roll() -> None:
    d = desired(api={"workers": 2})
    tired = worker(d, recycle=True)
    other = worker(d)
    assert kinds(plan(d, observed(tired, other), NOW)) == ["Spawn"]
    fresh = worker(d, started=NOW)
    assert plan(d, observed(tired, other, fresh), NOW) == (Retire(tired.pid, "recycle"),)


@pytest.mark.parametrize(("view", "expect"), [
    ({"phase": Phase.READY, "heartbeat": NOW - 31}, Kill(0, signal.SIGABRT, "timeout")),
    ({"phase": Phase.BOOTING, "started": NOW - 61}, Kill(0, signal.SIGKILL, "boot_timeout")),
    ({"phase": Phase.DRAINING, "drain_deadline": NOW - 1}, Kill(0, signal.SIGKILL, "drain_timeout")),
    ({"phase": Phase.KILLED, "kill_signal": signal.SIGABRT, "killed_at": NOW - KILL_GRACE},
     Kill(0, signal.SIGKILL, "escalate")),
])
def test_liveness(view: dict[str, object], expect: Kill) -> None:
    d = desired(api={"workers": 1})
    w = dataclasses.replace(worker(d), **view)
    actions = plan(d, observed(w), NOW)
    assert dataclasses.replace(expect, pid=w.pid) in actions


def test_hung_worker_is_replaced_in_the_same_plan() -> None:
    d = desired(api={"workers": 1})
    hung = dataclasses.replace(worker(d), heartbeat=NOW - 60)
    assert kinds(plan(d, observed(hung), NOW)) == ["Kill", "Spawn"]


def test_removed_app_drains_then_its_listener_closes() -> None:
    d = desired(web={"workers": 1, "binds": ["127.0.0.1:8002"]})
    gone_app = desired(api={"workers": 1})
    w = worker(gone_app)
    web = worker(d, app="web")
    assert plan(d, observed(w, web, listeners=frozenset({A, B})), NOW) == (Retire(w.pid, "removed"),)
    draining = dataclasses.replace(w, phase=Phase.DRAINING, drain_deadline=NOW + 30)
    assert plan(d, observed(draining, web, listeners=frozenset({A, B})), NOW) == ()  # still held
    assert plan(d, observed(web, listeners=frozenset({A, B})), NOW) == (CloseListener(A),)


def test_failed_bind_is_not_retried_before_its_time_and_blocks_spawns() -> None:
    d = desired(api={"workers": 1})
    obs = Observed(bind_retry_at={A: NOW + 3})
    assert plan(d, obs, NOW) == ()
    assert kinds(plan(d, obs, NOW + 3)) == ["OpenListener", "Spawn"]


def test_graceful_stop_retires_everyone_fast_stop_kills() -> None:
    d = desired(api={"workers": 2})
    ws = [worker(d), worker(d, phase=Phase.BOOTING, started=NOW)]
    assert kinds(plan(d.stopped(), observed(*ws), NOW)) == ["Retire", "Retire"]  # listener held until they exit
    fast = plan(d.stopped(fast=True), observed(*ws), NOW)
    assert {(a.pid, a.signal) for a in fast if isinstance(a, Kill)} == {(w.pid, signal.SIGQUIT) for w in ws}


def test_unchanged_bind_keeps_its_listener_across_a_roll() -> None:
    d = desired(api={"workers": 1, "binds": ["127.0.0.1:8001", "127.0.0.1:8002"]})
    old = worker(desired(api={"workers": 1}), revision="0ld")
    actions = plan(d, observed(old), NOW)
    assert OpenListener(B, "api") in actions
    assert not any(isinstance(a, CloseListener) for a in actions)


# ---- properties over simulated runs -------------------------------------------------------------------

def apply(actions: tuple[Action, ...], obs: Observed, d: DesiredState, now: float) -> Observed:
    """What the master's executor does to the observed state, without processes."""
    workers, listeners = dict(obs.workers), set(obs.listeners)
    for a in actions:
        if isinstance(a, OpenListener):
            listeners.add(a.bind)
        elif isinstance(a, CloseListener):
            listeners.discard(a.bind)
        elif isinstance(a, Spawn):
            spec = d.apps[a.app] if d.apps[a.app].revision == a.revision else obs.proven[a.app]
            pid = next(_pids)
            workers[pid] = WorkerView(pid, a.app, a.revision, frozenset(spec.binds), Phase.BOOTING, now, now,
                                      spec.timeout, spec.boot_timeout)
        elif isinstance(a, Retire):
            workers[a.pid] = dataclasses.replace(workers[a.pid], phase=Phase.DRAINING, drain_deadline=now + 30)
        elif isinstance(a, Kill):
            workers[a.pid] = dataclasses.replace(workers[a.pid], phase=Phase.KILLED, kill_signal=a.signal,
                                                 killed_at=now)
    return dataclasses.replace(obs, workers=workers, listeners=frozenset(listeners))


app_settings = st.fixed_dictionaries({
    "workers": st.integers(1, 6),
    "max_surge": st.integers(0, 3),
    "max_unavailable": st.integers(0, 3),
    "env": st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["1", "2"]), max_size=2),
}).filter(lambda c: c["max_surge"] + c["max_unavailable"] > 0)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DesiredState, Observed]:
    d = desired(api=draw(app_settings))
    other = desired(api=draw(app_settings))
    workers = []
    for _ in range(draw(st.integers(0, 8))):
        source = draw(st.sampled_from([d, other]))
        phase = draw(st.sampled_from(list(Phase)))
        extra = {"drain_deadline": NOW + 5} if phase is Phase.DRAINING else {}
        if phase is Phase.KILLED:
            extra = {"kill_signal": signal.SIGABRT, "killed_at": NOW}
        workers.append(worker(source, phase=phase, recycle=draw(st.booleans()), **extra))
    extra: dict[str, object] = {}
    if draw(st.booleans()):  # the desired revision cannot boot; the other one did
        extra = {"backoff": {("api", d.apps["api"].revision): Backoff(1, NOW + draw(st.sampled_from([-1, 1])), "x")},
                 "proven": {"api": other.apps["api"]}}
        if draw(st.booleans()):  # and the proven one cannot boot either now (a bad in-place deploy)
            extra["backoff"][("api", other.apps["api"].revision)] = Backoff(  # type: ignore[index]
                1, NOW + draw(st.sampled_from([-1, 1])), "y")
    if draw(st.booleans()):  # crashed ready workers, some of whose replacements wait for a token
        extra["crashes"] = {"api": CrashBudget(draw(st.sampled_from([-2.5, -1.0, 0.0, 3.0])), NOW, 5.0)}
    listeners = draw(st.sampled_from([frozenset(), frozenset({A}), frozenset({A, B})]))
    return d, observed(*workers, listeners=listeners, **extra)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_replanning_after_applying_a_plan_yields_nothing(case: tuple[DesiredState, Observed]) -> None:
    d, obs = case
    after = apply(plan(d, obs, NOW), obs, d, NOW)
    assert plan(d, after, NOW) == ()


@settings(max_examples=200, deadline=None)
@given(app_settings, app_settings, st.lists(st.booleans(), min_size=1, max_size=60))
def test_a_roll_never_drops_below_the_ready_floor_and_converges(
    before: dict[str, object], after: dict[str, object], boots_ok: list[bool]
) -> None:
    old = desired(api=before)
    new = desired(api={**after, "env": {"NEW": "1"}})
    spec = new.apps["api"]
    obs = observed(*[worker(old) for _ in range(old.apps["api"].workers)])
    floor = min(spec.workers - spec.max_unavailable, old.apps["api"].workers)
    now, outcomes = NOW, iter(boots_ok * 10)
    for _ in range(200):
        obs = apply(plan(new, obs, now), obs, new, now)
        ready = [w for w in obs.workers.values() if w.phase is Phase.READY]
        assert len(ready) >= floor
        # the world moves: booting workers become ready (or fail at boot), draining ones exit
        moved = {}
        for w in obs.workers.values():
            if w.phase is Phase.BOOTING:
                if next(outcomes, True):
                    moved[w.pid] = dataclasses.replace(w, phase=Phase.READY, ready_at=now)
            elif w.phase is Phase.READY:
                moved[w.pid] = dataclasses.replace(w, heartbeat=now)  # healthy workers keep beating
        obs = dataclasses.replace(obs, workers=moved)
        now += 1
        live = [w for w in obs.workers.values() if w.live]
        if len(live) == spec.workers and all(w.revision == spec.revision and w.phase is Phase.READY for w in live):
            break
    else:
        pytest.fail("the roll did not converge")


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_listener_closes_only_when_no_worker_holds_it(case: tuple[DesiredState, Observed]) -> None:
    d, obs = case
    for a in plan(d.stopped(), obs, NOW):
        if isinstance(a, CloseListener):
            assert all(a.bind not in w.binds for w in obs.workers.values())


@settings(max_examples=150, deadline=None)
@given(app_settings, app_settings, st.lists(st.sampled_from(["calm", "death", "recycle"]), min_size=1, max_size=40))
def test_a_hold_keeps_the_floor_and_converges_on_the_proven_revision(
    before: dict[str, object], after: dict[str, object], events: list[str]
) -> None:
    old = desired(api=before)
    new = desired(api={**after, "module": "broken:app"})
    spec, rev = new.apps["api"], old.apps["api"].revision
    held = {"backoff": {("api", spec.revision): Backoff(1, NOW + 10_000, "boom")}, "proven": {"api": old.apps["api"]}}
    obs = observed(*[worker(old) for _ in range(old.apps["api"].workers)], **held)
    floor = spec.workers - spec.max_unavailable
    now = NOW
    for step in range(len(events) + 60):
        ready_before = sum(w.phase is Phase.READY for w in obs.workers.values())
        obs = apply(plan(new, obs, now), obs, new, now)
        assert all(w.revision == rev for w in obs.workers.values() if w.phase is Phase.BOOTING)  # never the broken one
        ready = sum(w.phase is Phase.READY for w in obs.workers.values())
        assert ready >= min(floor, ready_before)  # retirements never take it below the floor
        event = events[step] if step < len(events) else "calm"
        moved = {}
        for w in obs.workers.values():
            if w.phase is Phase.BOOTING:
                moved[w.pid] = dataclasses.replace(w, phase=Phase.READY, ready_at=now)
            elif w.phase is Phase.READY:
                moved[w.pid] = dataclasses.replace(w, heartbeat=now)
        ready_pids = sorted(p for p, w in moved.items() if w.phase is Phase.READY and w.ready_at != now)
        if event == "death" and ready_pids:
            del moved[ready_pids[0]]  # killed from outside: gone before the next plan
        elif event == "recycle" and ready_pids:
            moved[ready_pids[-1]] = dataclasses.replace(moved[ready_pids[-1]], recycle=True)
        obs = dataclasses.replace(obs, workers=moved)
        now += 1
    live = [w for w in obs.workers.values() if w.live]
    assert len(live) == spec.workers
    assert all(w.revision == rev and w.phase is Phase.READY and not w.recycle for w in live)
