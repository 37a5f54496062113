"""Process-level chores of the master that need no plan: start-up preparation and the last-resort drain.

Plain calls on pids, so that they work when the loop's own steps do not (a loop that keeps failing still drains
its workers before it exits) and when start-up fails half-way (what was forked is killed and reaped).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import time
from collections.abc import Iterable

from forkserve import process

log = logging.getLogger("forkserve")


def drain(pids: set[int], grace: float) -> None:
    """TERM every child, reap until `grace` seconds have passed, then KILL and reap what is left."""
    log.warning("draining %d worker(s) within %.0fs before exiting", len(pids), grace)
    for pid in pids:
        process.send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = set(pids)
    while left and time.monotonic() < deadline:
        left -= {pid for pid, _ in process.reap()}
        time.sleep(0.05)
    kill_now(left)


def kill_now(pids: Iterable[int]) -> None:
    pids = list(pids)
    for pid in pids:
        process.send_signal(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:  # optional: ps shows "python -m forkserve up ..." instead
        return
    setproctitle.setproctitle(title)


def import_worker_side(worker_classes: Iterable[str]) -> None:
    """Import the modules the workers of these classes need (the HTTP request path, httptools) into the master
    before the first fork: forked workers find them loaded and shared instead of each importing its own copy
    (~15 ms off every worker's boot, less private memory per worker). Never gevent or app code: those stay in
    the workers."""
    for name in sorted(worker_classes):
        importlib.import_module(f"forkserve.workers.{name}")
