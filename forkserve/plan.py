"""plan(desired, observed, now) -> actions: the whole of forkserve's decision making. Pure.

Theory of operation
-------------------
The master wakes up for any reason (a signal, a worker event, a file change, a timer), rebuilds `Observed` and
asks `plan()` what to do. Nothing here remembers the last call: the answer depends only on the desired state,
the observed state and the time (level-triggered). Applying the answer and asking again yields nothing new.

Per app, workers split into *current* (live, the desired revision, not asking to be recycled) and *outdated*
(live, another revision, or asking to be recycled by max_requests):
- no outdated workers: **scale** — spawn or retire exactly the difference; no other worker is touched;
- outdated workers: **roll** — spawn current workers while the live total stays within `workers + max_surge`;
  retire a ready outdated worker only while the ready count stays at or above `workers - max_unavailable`;
  outdated workers that are not ready serve nothing and go at once. New workers that cannot boot are held back
  by the backoff, so the outdated ones keep serving;
- the desired revision held back by its backoff: **hold** — the scale and roll rules above aim at the newest
  revision that ran healthy (`Observed.proven`) instead: its workers keep serving, those that die are replaced
  *from that revision*, and its recycle requests roll within it. A crash of an old worker during a bad deploy
  therefore costs no capacity. The roll to the desired revision resumes when the backoff expires. The proven
  revision has a backoff of its own (after an in-place deploy it imports the broken code on disk too): while
  both are held back nothing is spawned.
Crashes of ready workers are not boot failures (`forkserve.backoff`): their replacements spawn at once, except
that while the app's crash bucket is below zero, that many of the app's spawns wait for their token.
Liveness is decided here too: a booting worker past `boot_timeout`, a ready one silent for `timeout` (SIGABRT,
then SIGKILL), a draining one past its deadline. Listeners open before the workers that use them spawn (same
plan, earlier action), and close only after no desired app names them and no worker holds them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

from forkserve import backoff
from forkserve.config.binds import BindAddress
from forkserve.outcomes import KillReason, RetireReason
from forkserve.spec import AppSpec, DesiredState
from forkserve.state import Observed, Phase, WorkerView

KILL_GRACE = 3.0  # seconds between SIGABRT/SIGQUIT and SIGKILL


@dataclass(frozen=True)
class OpenListener:
    bind: BindAddress
    app: str  # the first desired app that names it: its backlog and unix mode apply


@dataclass(frozen=True)
class CloseListener:
    bind: BindAddress


@dataclass(frozen=True)
class Spawn:
    """Fork a worker of exactly this spec (the desired one, or the proven one while the desired is held back)."""

    spec: AppSpec

    @property
    def app(self) -> str:
        return self.spec.name

    @property
    def revision(self) -> str:
        return self.spec.revision


@dataclass(frozen=True)
class Retire:
    """Graceful: SIGTERM, the worker finishes in-flight requests; killed at now + graceful_timeout."""

    pid: int
    reason: RetireReason


@dataclass(frozen=True)
class Kill:
    pid: int
    signal: int
    reason: KillReason


Action = OpenListener | CloseListener | Spawn | Retire | Kill


def plan(desired: DesiredState, observed: Observed, now: float) -> tuple[Action, ...]:
    opening = _listeners_to_open(desired, observed, now)
    available = observed.listeners | {a.bind for a in opening}
    kills = _liveness(observed, now)
    if desired.stopping:
        kills += _stop(observed, desired.fast, {k.pid for k in kills})
    gone = {k.pid for k in kills}  # killed in this plan: no longer counted, replaced right away
    actions: list[Action] = [*opening, *kills]
    for name in sorted({*desired.apps, *(w.app for w in observed.workers.values())}):
        spec = desired.apps.get(name)
        workers = [w for w in observed.of_app(name) if w.live and w.pid not in gone]
        if spec is None:
            actions += [Retire(w.pid, RetireReason.STOP if desired.stopping else RetireReason.REMOVED) for w in workers]
        else:
            actions += _app(spec, workers, observed, available, now)
    actions += _listeners_to_close(desired, observed)
    return tuple(actions)


def _listeners_to_open(desired: DesiredState, observed: Observed, now: float) -> list[OpenListener]:
    wanted: dict[BindAddress, str] = {}
    for spec in desired.apps.values():
        for bind in spec.binds:
            wanted.setdefault(bind, spec.name)
    return [
        OpenListener(bind, app)
        for bind, app in sorted(wanted.items())
        if bind not in observed.listeners and observed.bind_retry_at.get(bind, 0.0) <= now
    ]


def _app(spec: AppSpec, live: list[WorkerView], observed: Observed, available: frozenset[BindAddress],
         now: float) -> list[Action]:
    current = [w for w in live if w.revision == spec.revision and not w.recycle]
    outdated = [w for w in live if w.revision != spec.revision or w.recycle]
    held_back = _held_back(observed, spec, now)
    proven = observed.proven.get(spec.name)
    if held_back and proven is not None and proven.revision != spec.revision:
        actions = _hold(spec, proven, current, outdated, available, _held_back(observed, proven, now))
    else:
        may_spawn = all(b in available for b in spec.binds) and not held_back
        actions = _roll(spec, current, outdated, may_spawn) if outdated else _scale(spec, current, may_spawn)
    return _defer(actions, backoff.deferred(observed.crashes.get(spec.name), now))


def _held_back(observed: Observed, spec: AppSpec, now: float) -> bool:
    """Is this revision of the app waiting out a boot-failure backoff?"""
    entry = observed.backoff.get((spec.name, spec.revision))
    return entry is not None and entry.retry_at > now


def _defer(actions: list[Action], waiting: int) -> list[Action]:
    """Leave out the last `waiting` spawns: replacements of crashed workers waiting for a token of the app's
    crash bucket. (Applying the plan and planning again still adds nothing: the bucket does not move.)"""
    if waiting <= 0:
        return actions
    spawns = [i for i, a in enumerate(actions) if isinstance(a, Spawn)]
    dropped = set(spawns[max(0, len(spawns) - waiting):])
    return [a for i, a in enumerate(actions) if i not in dropped]


def _scale(spec: AppSpec, current: list[WorkerView], may_spawn: bool) -> list[Action]:
    missing = spec.workers - len(current)
    if missing > 0:
        return [Spawn(spec)] * missing if may_spawn else []
    return [Retire(w.pid, RetireReason.SCALE) for w in _surplus_first(current)[:-missing]]


def _surplus_first(workers: list[WorkerView]) -> list[WorkerView]:
    """Who goes first when there are too many: those not serving yet (newest first), then the oldest."""
    return sorted(workers, key=lambda w: (w.phase is Phase.READY, -w.started if w.ready_at is None else w.started))


def _roll(spec: AppSpec, current: list[WorkerView], outdated: list[WorkerView], may_spawn: bool) -> list[Action]:
    unready_old = [w for w in outdated if w.phase is not Phase.READY]
    ready_old = sorted((w for w in outdated if w.phase is Phase.READY), key=lambda w: w.started)
    ready_now = sum(w.phase is Phase.READY for w in current) + len(ready_old)
    floor = spec.workers - spec.max_unavailable
    leaving = unready_old + ready_old[: max(0, min(len(ready_old), ready_now - floor))]
    actions: list[Action] = [Retire(w.pid, _why(w)) for w in leaving]
    # Room is counted after this plan's retirements, so that applying the plan and planning again adds nothing.
    room = spec.workers + spec.max_surge - len(current) - (len(outdated) - len(leaving))
    wanted = min(spec.workers - len(current), room)
    if may_spawn and wanted > 0:
        actions += [Spawn(spec)] * wanted
    if len(current) > spec.workers:  # scaled down while rolling: trim the current revision too
        actions += [Retire(w.pid, RetireReason.SCALE) for w in _surplus_first(current)[: len(current) - spec.workers]]
    return actions


def _hold(spec: AppSpec, proven: AppSpec, current: list[WorkerView], outdated: list[WorkerView],
          available: frozenset[BindAddress], proven_held_back: bool) -> list[Action]:
    """The desired revision cannot boot: keep `spec.workers` serving from the proven revision meanwhile, by the
    same scale and roll rules aimed at it (so older revisions and recycle requests still roll, within the same
    surge and floor). Ready workers of the desired revision count; booting ones are left to boot or fail. When
    the proven revision cannot boot either (its own backoff), nothing is spawned until one of them may retry."""
    ready_new = sum(w.phase is Phase.READY for w in current)
    target = replace(proven, workers=max(0, spec.workers - ready_new), max_surge=spec.max_surge,
                     max_unavailable=spec.max_unavailable)
    mine = [w for w in outdated if w.revision == proven.revision and not w.recycle]
    others = [w for w in outdated if w.revision != proven.revision or w.recycle]
    may_spawn = all(b in available for b in proven.binds) and not proven_held_back
    actions = _roll(target, mine, others, may_spawn) if others else _scale(target, mine, may_spawn)
    return [Spawn(proven) if isinstance(a, Spawn) else a for a in actions]  # the proven spec, not the target


def _why(worker: WorkerView) -> RetireReason:
    return RetireReason.RECYCLE if worker.recycle else RetireReason.ROLLED


def _stop(observed: Observed, fast: bool, already: set[int]) -> list[Kill]:
    """Fast stop: QUIT every worker not already on its way out by a kill (escalated to KILL by _liveness).
    A graceful stop needs nothing here: with no desired apps, every live worker is retired below."""
    if not fast:
        return []
    return [Kill(w.pid, signal.SIGQUIT, KillReason.FAST_STOP) for w in observed.workers.values()
            if w.phase is not Phase.KILLED and w.pid not in already]


def _liveness(observed: Observed, now: float) -> list[Kill]:
    actions: list[Kill] = []
    for w in observed.workers.values():
        if w.phase is Phase.KILLED:
            if w.kill_signal != signal.SIGKILL and now - (w.killed_at or now) >= KILL_GRACE:
                actions.append(Kill(w.pid, signal.SIGKILL, KillReason.ESCALATE))
        elif w.phase is Phase.DRAINING:
            if w.drain_deadline is not None and now >= w.drain_deadline:
                actions.append(Kill(w.pid, signal.SIGKILL, KillReason.DRAIN_TIMEOUT))
        elif w.phase is Phase.BOOTING:
            if now - w.started >= w.boot_timeout:
                actions.append(Kill(w.pid, signal.SIGKILL, KillReason.BOOT_TIMEOUT))
        elif now - w.heartbeat >= w.timeout:
            actions.append(Kill(w.pid, signal.SIGABRT, KillReason.TIMEOUT))
    return actions


def _listeners_to_close(desired: DesiredState, observed: Observed) -> list[Action]:
    wanted = {b for spec in desired.apps.values() for b in spec.binds}
    held = {b for w in observed.workers.values() for b in w.binds}
    return [CloseListener(b) for b in sorted(observed.listeners) if b not in wanted and b not in held]
