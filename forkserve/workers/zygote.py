"""The preload zygote: imports one app (one revision) once, then forks that app's workers on the master's request.

`preload = true` trades a little isolation for memory: workers forked from a process that already imported the
app share its pages copy-on-write. Unlike gunicorn's preload (which imports in the master, so HUP cannot load new
code), the zygote is a per-app, per-revision child of the master: the master never imports app code, and a code
or config change rolls by starting a new zygote for the new revision.

Protocol on the SEQPACKET socket pair (message boundaries kept by the kernel), master <-> zygote:
    master -> zygote   b"spawn" with SCM_RIGHTS [slot memfd, event pipe write fd]
    zygote -> master   b"pid N"                  the worker it forked for that request
    zygote -> master   b"exit N STATUS"          a worker it forked exited (STATUS as os.waitpid gives it)
The zygote's own boot is reported like a worker's, on its own channel ("ready" / "boot_error").
Workers forked here take the zygote as their parent: they exit when it goes, and it exits when the master goes.

The zygote runs `import_app` (chdir, sys.path, env, the worker class's patching, the import) once; a worker it
forks inherits all of that and only runs the worker class's `after_fork()` and its own per-worker start
(`Worker.forked`, `setup_process`, `start`). It never imports or patches again.
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import warnings
from typing import Any, NoReturn

from forkserve.channel import WorkerEnd, worker_end_from_fds
from forkserve.spec import AppSpec
from forkserve.workers.base import EXIT_OK, EXIT_PARENT_GONE, Worker, boot_error, import_app, serve_then_exit
from forkserve.workers.registry import WorkerClass, load

FD_SIZE = array.array("i").itemsize


def run_zygote(spec: AppSpec, listeners: list[Any], channel: WorkerEnd, master_pid: int,
               control: socket.socket) -> NoReturn:
    zygote = Worker(spec, listeners, channel, master_pid)
    try:
        zygote.setup_process()
        _title(f"forkserve: preload [{spec.name}]")
        worker_class = load(spec.worker_class)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            app = import_app(spec, worker_class)
    except BaseException:
        boot_error(zygote)
    channel.send("ready")
    # TERM (from the master, or to the whole process group from systemd or a shell): fork nothing more and
    # leave once our workers, which drain on their own TERM, are gone; leaving first would cut their requests.
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    control.setblocking(True)
    calls = _Calls(spec.worker_class == "gevent")
    children: set[int] = set()
    while True:
        channel.heartbeat()
        if os.getppid() != master_pid:
            zygote.exit(EXIT_PARENT_GONE)
        children -= _report_exits(control, calls)
        if stopping and not children:
            zygote.exit(EXIT_OK)
        readable, _, _ = calls.select([control], [], [], 0.2 if stopping else 0.5)
        if readable and not stopping:
            pid = _serve_request(zygote, app, worker_class, control, calls)
            if pid:
                children.add(pid)


class _Calls:
    """The zygote forks and reaps by itself. In a gevent app the patched fork/waitpid/select would watch and
    reap children in the hub behind our back, so we use the originals (and the gevent worker class's
    `after_fork()` re-initialises gevent in each child)."""

    def __init__(self, gevent: bool) -> None:
        self.gevent = gevent
        if gevent:
            from gevent import monkey

            self.fork = monkey.get_original("os", "fork")
            self.waitpid = monkey.get_original("os", "waitpid")
            self.select = monkey.get_original("select", "select")
        else:
            self.fork, self.waitpid, self.select = os.fork, os.waitpid, select.select


def _serve_request(zygote: Worker, app: Any, worker_class: WorkerClass, control: socket.socket,
                   calls: _Calls) -> int:
    try:
        data, ancillary, _flags, _addr = control.recvmsg(64, socket.CMSG_SPACE(2 * FD_SIZE))
    except ConnectionError:  # the master closed its end with our exit reports unread (an upgrade retiring us)
        data, ancillary = b"", []
    if not data:
        zygote.exit(EXIT_PARENT_GONE)  # the master closed its end
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % FD_SIZE])
    if data != b"spawn" or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return 0
    memfd, write_fd = fds
    pid = calls.fork()
    if pid == 0:
        worker_class.after_fork()
        control.close()
        _worker(zygote, app, worker_class, worker_end_from_fds(memfd, write_fd))
    os.close(memfd)
    os.close(write_fd)
    control.send(f"pid {pid}".encode())
    return pid


def _worker(zygote: Worker, app: Any, worker_class: WorkerClass, end: WorkerEnd) -> NoReturn:
    """In the forked worker: the app is already imported (and patched for); only the per-worker state is new."""
    worker = zygote.forked(end)  # its master_pid is the zygote: when it goes, we go
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        worker.setup_process()
        worker.start(app)
    except BaseException:
        boot_error(worker)
    serve_then_exit(worker, worker_class)


def _report_exits(control: socket.socket, calls: _Calls) -> set[int]:
    gone: set[int] = set()
    while True:
        try:
            pid, status = calls.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return gone
        if pid == 0:
            return gone
        gone.add(pid)
        try:
            control.send(f"exit {pid} {status}".encode())
        except OSError:
            pass  # the master is gone: we exit on the next parent check


def _title(text: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(text)
