"""Fork a worker, signal it, reap it. OS calls only; decisions are made in plan.py.

Signals are blocked around fork so that no signal meant for the master runs the master's handler in the child
before the child has installed its own. The child closes every file descriptor except stdio, its channel and
its own app's listeners: a worker never holds another app's socket, the master's control socket or the
master's wake-up pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from forkserve import channel
from forkserve.spec import AppSpec

EXIT_CHILD_CRASHED = 70  # the worker entry point returned or raised: a bug in forkserve, not in the app
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU)


@dataclass
class Spawned:
    pid: int
    end: channel.MasterEnd


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)


def _child(spec: AppSpec, listeners: list[socket.socket], end: channel.WorkerEnd, master_pid: int) -> None:
    signal.set_wakeup_fd(-1)
    for sig in _HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    _close_fds_except({0, 1, 2, end.write_fd, *(s.fileno() for s in listeners)})
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    from forkserve.workers.base import run

    run(spec, listeners, end, master_pid)


def spawn(spec: AppSpec, listeners: list[socket.socket]) -> Spawned:
    master_end, worker_end, _region = channel.create()
    master_pid = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(_HANDLED))
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(master_end.read_fd)
        os.close(worker_end.write_fd)
        raise
    if pid == 0:  # child: never returns
        code = EXIT_CHILD_CRASHED
        try:
            _child(spec, listeners, worker_end, master_pid)
        except BaseException:
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(worker_end.write_fd)
    return Spawned(pid, master_end)


def send_signal(pid: int, sig: int) -> bool:
    """False when the process is already gone (it will be, or was, reaped)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def reap() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of every child that has exited, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
