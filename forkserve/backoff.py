"""When a worker may be started again after one failed: boot-failure backoff and the crash-replacement rate. Pure.

Two kinds of death, two rules, decided by one fact: had the worker reported ready?

**Boot failure** (the worker exited, or was killed for `boot_timeout`, before it reported ready): the code cannot
start, and starting it again at once will fail again. Each boot failure of an (app, revision) doubles the wait
before the next spawn of that revision, from BASE (1 s) to CAP (60 s), like Kubernetes' CrashLoopBackOff (which
does 10 s -> 5 min; web workers boot in well under a second, so we start lower). This holds for *every*
revision, including the proven one the plan falls back to: after a bad in-place deploy the proven revision
imports the broken code now on disk, and without a backoff its replacements failed ~100 times a second. A record
is cleared by a worker of that revision that *started after its last failure* and stayed ready for HEALTHY_AFTER
seconds (an old worker that has been healthy for an hour proves nothing about the code on disk now), and by a new
revision or an explicit reload (an operator who fixed the code and says "reload" wants a try now).

**Crash of a ready worker** (a signal, `os._exit`, the OOM killer, after it reported ready): the code boots; one
request (a segfault in a C extension, a runaway allocation) killed it. This is never a boot failure: counting it
as one turned ten such requests in 8 s into ~95 s with no workers at all. The worker is replaced at once, like
gunicorn (which simply respawns, with no limit), but through a token bucket per app, so that a request that kills
every worker it reaches (a client or a load balancer retrying it) cannot become a fork storm: the bucket holds
max(CRASH_BURST, workers) tokens (5 at least: a whole app's worth of workers, killed at once by the OOM killer,
comes back at once) and refills at CRASH_RATE (1 per second). Each crash takes a token when it happens; while
the bucket is below zero, that many replacements wait (`deferred`), each for its token. So an app keeps as many
workers as crashes allow: at worst one fork a second per app once the burst is spent (a boot costs tens to
hundreds of ms of CPU: the master's host stays usable), and an app never waits more than a second for a
replacement unless crashes come faster than one a second.
"""

from __future__ import annotations

import math

from forkserve.state import Backoff, CrashBudget, WorkerView

BASE = 1.0
CAP = 60.0
HEALTHY_AFTER = 5.0
CRASH_BURST = 5  # tokens of the crash bucket at least (an app with more workers gets one per worker)
CRASH_RATE = 1.0  # tokens per second: replacements of crashed ready workers once the burst is spent


def delay(failures: int) -> float:
    return 0.0 if failures <= 0 else min(CAP, BASE * 2 ** (failures - 1))


def after_failure(previous: Backoff | None, now: float, error: str) -> Backoff:
    failures = (previous.failures if previous else 0) + 1
    return Backoff(failures=failures, retry_at=now + delay(failures), last_error=error, failed_at=now)


def is_boot_failure(worker: WorkerView) -> bool:
    """It exited (or was killed for its boot timeout) before it was ready, and we had not retired it."""
    return worker.ready_at is None and worker.drain_deadline is None


def is_crash(worker: WorkerView) -> bool:
    """A ready worker that died without being asked to (not retired, not killed by the master)."""
    return worker.ready_at is not None and worker.drain_deadline is None and worker.kill_signal is None


def healthy(worker: WorkerView, now: float) -> bool:
    return worker.ready_at is not None and worker.live and now - worker.ready_at >= HEALTHY_AFTER


def clears(entry: Backoff, worker: WorkerView, now: float) -> bool:
    """Does this worker prove its revision boots again? Healthy, and started after the last failure."""
    return healthy(worker, now) and worker.started >= entry.failed_at


# ---- the crash bucket -------------------------------------------------------------------------------------

def crash_capacity(workers: int) -> float:
    return float(max(CRASH_BURST, workers))


def level(budget: CrashBudget | None, now: float) -> float:
    """Tokens in the bucket at `now` (negative: replacements owed beyond the rate)."""
    if budget is None:
        return math.inf
    return min(budget.capacity, budget.level + max(0.0, now - budget.at) * CRASH_RATE)


def after_crash(budget: CrashBudget | None, now: float, capacity: float) -> CrashBudget:
    """A ready worker of the app crashed: it takes a token."""
    tokens = capacity if budget is None else min(capacity, level(budget, now))
    return CrashBudget(level=tokens - 1.0, at=now, capacity=capacity)


def deferred(budget: CrashBudget | None, now: float) -> int:
    """How many replacements of crashed workers must still wait for a token."""
    if budget is None:
        return 0
    return max(0, math.ceil(-level(budget, now) - 1e-9))


def wait(budget: CrashBudget | None, now: float) -> float:
    """Seconds until every deferred replacement may start (0.0 when none waits)."""
    if budget is None:
        return 0.0
    return max(0.0, -level(budget, now)) / CRASH_RATE
