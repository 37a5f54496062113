"""The sync worker: one request at a time, `Connection: close` after every response.

Keep-alive would let one idle client hold the only thread of the process, so, like gunicorn's sync worker, we
always close. The accept loop polls every listener plus a signal wake-up pipe with a short timeout (the
heartbeat); listeners are non-blocking (several workers share them: whoever loses the accept race gets EAGAIN
and goes back to poll). After an accept we try to accept again before polling: under load that saves a poll.

Client sockets stay blocking; reads and writes first try with MSG_DONTWAIT (one syscall when the data is there,
which is the common case) and only then poll, ticking the heartbeat every half second while waiting, up to
`timeout` seconds. So a slow client costs at most `timeout`, and never a missed heartbeat.
"""

from __future__ import annotations

import _socket
import os
import select
import signal
import socket
from time import monotonic
from typing import TYPE_CHECKING, Any

from forkserve.http.connection import Connection
from forkserve.http.context import base_environ, connection_environ
from forkserve.workers.worker import EXIT_OK, TICK_SECONDS, log

if TYPE_CHECKING:
    from forkserve.http.context import Context
    from forkserve.workers.worker import Worker

_DONTWAIT = socket.MSG_DONTWAIT


def before_import() -> None:
    """Nothing to do before the app is imported."""


def after_fork() -> None:
    """Nothing to do in a worker forked from the preload process."""


class SyncConnection(Connection):
    __slots__ = ("worker",)
    worker: Worker  # set by serve() right after construction

    def _wait(self, events: int, timeout: float) -> None:
        deadline = monotonic() + timeout
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        tick = self.worker.tick
        while True:
            left = deadline - monotonic()
            if left <= 0:
                raise TimeoutError("client timed out")
            if poller.poll(min(left, TICK_SECONDS) * 1000):
                return
            tick()

    def _recv(self, n: int, timeout: float) -> bytes:
        sock = self.sock
        try:
            return sock.recv(n, _DONTWAIT)
        except BlockingIOError:
            pass
        while True:
            self._wait(select.POLLIN, timeout)
            try:
                return sock.recv(n, _DONTWAIT)
            except BlockingIOError:
                continue

    def _sendall(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._wait(select.POLLOUT, self.ctx.timeout)
            try:
                sent = sock.send(view, _DONTWAIT)
            except BlockingIOError:
                continue
            view = view[sent:]


def serve(worker: Worker) -> int:
    ctx = worker.ctx
    assert ctx is not None
    wake_r = _install_signals(worker, ctx)
    poller = select.poll()
    by_fd: dict[int, tuple[socket.socket, dict[str, Any]]] = {}
    for listener in worker.listeners:
        listener.setblocking(False)
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
        by_fd[listener.fileno()] = (listener, base_environ(listener, worker.errors))
        poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    tick = worker.tick
    poll_ms = TICK_SECONDS * 1000
    while not ctx.stopping:
        tick()
        for fd, _ in poller.poll(poll_ms):
            if fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                continue
            listener, base = by_fd[fd]
            _accept_and_serve(worker, ctx, listener, base)
    return EXIT_OK


def _install_signals(worker: Worker, ctx: Context) -> int:
    """TERM = graceful (with an alarm at graceful_timeout), INT/QUIT = exit now, USR1 = reopen the logs at the
    next tick. Returns the read end of the signal wake-up pipe, which the accept loop polls."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)

    def graceful(signum: int, frame: Any) -> None:
        ctx.stopping = True
        signal.signal(signal.SIGALRM, lambda *_: worker.exit(EXIT_OK))
        signal.setitimer(signal.ITIMER_REAL, max(worker.spec.graceful_timeout, 0.001))

    def fast(signum: int, frame: Any) -> None:
        worker.exit(EXIT_OK)

    def reopen(signum: int, frame: Any) -> None:
        worker.reopen_requested = True

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, fast)
    signal.signal(signal.SIGQUIT, fast)
    signal.signal(signal.SIGUSR1, reopen)
    return wake_r


def _accept_and_serve(worker: Worker, ctx: Context, listener: socket.socket, base: dict[str, Any]) -> None:
    """Accept and serve connections on a listener that polled readable until it has none ready (EAGAIN: another
    worker won the race, or the backlog is empty): under load that saves a poll per connection."""
    accept = listener._accept  # type: ignore[attr-defined]
    family, proto, sock_type, raw_socket = listener.family, listener.proto, socket.SOCK_STREAM, _socket.socket
    tick = worker.tick
    while not ctx.stopping:
        try:
            sock_fd, address = accept()
        except BlockingIOError:
            return
        except OSError as exc:  # EMFILE, ECONNABORTED...: log, go back to poll
            log.warning("accept failed: %s", exc)
            return
        # a plain blocking _socket.socket: none of socket.socket's Python-level wrapping per connection
        sock = raw_socket(family, sock_type, proto, sock_fd)
        conn = SyncConnection(ctx, sock, connection_environ(base, address))
        conn.worker = worker
        conn.serve()
        tick()
