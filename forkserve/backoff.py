"""Per-(app, revision) crash-loop backoff. Pure.

A worker that exits before it is ready, or dies within HEALTHY_AFTER seconds of starting, is a failure. Each
failure doubles the wait before the next spawn of that revision, from BASE to CAP (Kubernetes does 10 s -> 5 min;
web workers boot in well under a second, so we start lower). A worker of the revision that stays ready for
HEALTHY_AFTER seconds clears the record. A new revision starts with a clean record, and so does an explicit
reload: an operator who fixed the code and says "reload" wants a try now.
"""

from __future__ import annotations

from forkserve.state import Backoff, WorkerView

BASE = 1.0
CAP = 60.0
HEALTHY_AFTER = 5.0


def delay(failures: int) -> float:
    return 0.0 if failures <= 0 else min(CAP, BASE * 2 ** (failures - 1))


def after_failure(previous: Backoff | None, now: float, error: str) -> Backoff:
    failures = (previous.failures if previous else 0) + 1
    return Backoff(failures=failures, retry_at=now + delay(failures), last_error=error)


def is_failure(worker: WorkerView, exited_at: float) -> bool:
    """An exit we did not ask for, before the worker was ready or soon after it started."""
    if worker.drain_deadline is not None or (worker.kill_signal is not None and worker.ready_at is not None):
        return False
    return worker.ready_at is None or exited_at - worker.started < HEALTHY_AFTER


def healthy(worker: WorkerView, now: float) -> bool:
    return worker.ready_at is not None and worker.live and now - worker.ready_at >= HEALTHY_AFTER
