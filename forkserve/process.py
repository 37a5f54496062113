"""Fork a worker, signal it, reap it. OS calls only; decisions are made in plan.py.

Signals are blocked around fork so that no signal meant for the master runs the master's handler in the child
before the child has installed its own. The child closes every file descriptor except stdio, its channel and
its own app's listeners: a worker never holds another app's socket, the master's control socket or the
master's wake-up pipe.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
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


def _fork(keep: set[int], entry: Callable[[], None]) -> int:
    """Fork; the child resets signals, keeps only `keep` fds, runs `entry` and never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(_HANDLED))
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise
    if pid == 0:  # child: never returns
        code = EXIT_CHILD_CRASHED
        try:
            signal.set_wakeup_fd(-1)
            for sig in _HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            _close_fds_except({0, 1, 2, *keep})
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            entry()
        except BaseException:
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return pid


def spawn(spec: AppSpec, listeners: list[socket.socket]) -> Spawned:
    master_end, worker_end, _region = channel.create()
    master_pid = os.getpid()

    def entry() -> None:
        from forkserve.workers.base import run

        run(spec, listeners, worker_end, master_pid)

    try:
        pid = _fork({worker_end.write_fd, *(s.fileno() for s in listeners)}, entry)
    except OSError:
        master_end.close()
        os.close(worker_end.write_fd)
        raise
    os.close(worker_end.write_fd)
    return Spawned(pid, master_end)


@dataclass
class Zygote:
    pid: int
    end: channel.MasterEnd
    control: socket.socket  # SEQPACKET: spawn requests out, "pid N" / "exit N STATUS" in


def spawn_zygote(spec: AppSpec, listeners: list[socket.socket]) -> Zygote:
    """Fork the preload process of one app revision (see forkserve.workers.zygote)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master_end, worker_end, _region = channel.create()
    master_pid = os.getpid()

    def entry() -> None:
        from forkserve.workers.zygote import run_zygote

        run_zygote(spec, listeners, worker_end, master_pid, theirs)

    try:
        pid = _fork({worker_end.write_fd, theirs.fileno(), *(s.fileno() for s in listeners)}, entry)
    except OSError:
        master_end.close()
        ours.close()
        raise
    finally:
        os.close(worker_end.write_fd)
        theirs.close()
    ours.setblocking(False)
    return Zygote(pid, master_end, ours)


def request_worker(zygote: Zygote, timeout: float = 5.0) -> tuple[Spawned, list[tuple[int, int]]]:
    """Ask a ready zygote to fork one worker. Returns it, and any worker exits the zygote reported meanwhile.
    Waits for the answer (the zygote only forks: milliseconds), bounded by `timeout`."""
    master_end, memfd, write_fd = channel.create_for_zygote()
    try:
        fds = array.array("i", [memfd, write_fd])
        zygote.control.sendmsg([b"spawn"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    finally:
        os.close(memfd)
        os.close(write_fd)
    exits: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([zygote.control], [], [], left)[0]:
            master_end.close()
            raise OSError(f"preload process {zygote.pid} did not answer a spawn request")  # the caller kills it
        message = zygote.control.recv(64)
        if not message:
            master_end.close()
            raise OSError(f"preload process {zygote.pid} is gone")
        kind, _, rest = message.decode().partition(" ")
        if kind == "pid":
            return Spawned(int(rest), master_end), exits
        exits += parse_exits([message])


def parse_exits(messages: list[bytes]) -> list[tuple[int, int]]:
    out = []
    for message in messages:
        parts = message.decode(errors="replace").split()
        if len(parts) == 3 and parts[0] == "exit" and parts[1].isdigit() and parts[2].lstrip("-").isdigit():
            out.append((int(parts[1]), int(parts[2])))
    return out


def read_zygote_messages(zygote: Zygote) -> tuple[list[bytes], bool]:
    """Drain the zygote's socket without blocking: (messages, closed)."""
    messages: list[bytes] = []
    while True:
        try:
            message = zygote.control.recv(64)
        except BlockingIOError:
            return messages, False
        except OSError:
            return messages, True
        if not message:
            return messages, True
        messages.append(message)


def become_subreaper() -> bool:
    """Orphans of a dead preload process are re-parented to the master (Linux), so it still reaps them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


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
