"""The gevent worker: one greenlet per connection, keep-alive, up to worker_connections at once.

Imported only in gevent worker processes (never in the master): `prepare()` monkey-patches before the app is
imported. Per listener an accept-loop greenlet (hand-written rather than gevent's StreamServer: fewer layers on
the path, and we control shutdown) takes a slot of a semaphore of `worker_connections`, accepts, and starts a
raw greenlet running the shared HTTP connection loop. gevent sockets wait on the hub only when a recv/send would
block, so a keep-alive request costs one recv and one send.

Heartbeat: a greenlet ticks every half second. If the app blocks the event loop, it stops ticking, and the
master kills the worker after `timeout`. Signals are libev watchers (they run in the hub, never inside a
request's greenlet): TERM = graceful (stop accepting, kill idle keep-alive connections at once, let busy ones
finish their request and close, up to graceful_timeout), INT/QUIT = exit now, USR1 = reopen the logs at the
next tick.
"""

from __future__ import annotations

import _socket
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from forkserve.http.body import ClientDisconnected
from forkserve.http.connection import Connection, base_environ, connection_environ
from forkserve.workers.base import EXIT_OK, TICK_SECONDS, log

if TYPE_CHECKING:
    from forkserve.workers.base import Worker


def prepare() -> None:
    from gevent import monkey

    monkey.patch_all()


class GeventConnection(Connection):
    __slots__ = ("current_timeout",)

    def has_pending_data(self) -> bool:
        # peek on the real socket under gevent's: gevent's recv would wait for data instead of saying "none"
        try:
            return bool(_socket.socket.recv(self.sock._sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # BlockingIOError included: nothing there
            return False

    def _recv(self, n: int, timeout: float) -> bytes:
        if timeout != self.current_timeout:
            self.current_timeout = timeout
            self.sock.settimeout(timeout if timeout > 0 else None)
        return self.sock.recv(n)

    def _sendfile(self, fd: int, offset: int, count: int) -> None:
        from gevent.socket import wait_write

        out = self.sock.fileno()
        while count > 0:
            try:
                sent = os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                wait_write(out, timeout=self.ctx.timeout)
                continue
            if sent == 0:
                raise ClientDisconnected("sendfile: no progress (file truncated?)")
            offset += sent
            count -= sent


def serve(worker: Worker) -> int:  # noqa: C901
    import gevent
    import gevent.event
    import gevent.socket
    from gevent.lock import Semaphore

    ctx = worker.ctx
    assert ctx is not None
    active: dict[Any, GeventConnection] = {}  # greenlet -> its connection
    slots = Semaphore(worker.spec.worker_connections)
    getcurrent = gevent.getcurrent
    spawn_raw = gevent.spawn_raw
    done = gevent.event.Event()

    def handle(sock: Any, env: dict[str, Any]) -> None:
        me = getcurrent()
        conn = GeventConnection(ctx, sock, env)
        conn.current_timeout = -1.0
        active[me] = conn
        try:
            conn.serve()
        finally:
            del active[me]
            slots.release()

    def accept_loop(listener: Any, base: dict[str, Any]) -> None:
        while not ctx.stopping:
            slots.acquire()
            try:
                sock, address = listener.accept()
            except OSError as exc:
                slots.release()
                if ctx.stopping:
                    return
                log.warning("accept failed: %s", exc)
                gevent.sleep(0.05)
                continue
            spawn_raw(handle, sock, connection_environ(base, address))

    def heartbeat() -> None:
        while True:
            worker.tick()
            gevent.sleep(TICK_SECONDS)

    acceptors = []
    listeners = []
    for plain in worker.listeners:
        if plain.family in (socket.AF_INET, socket.AF_INET6):
            plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
        base = base_environ(plain, worker.errors)
        listener = gevent.socket.socket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        listeners.append(listener)
        acceptors.append(gevent.spawn(accept_loop, listener, base))

    def graceful() -> None:
        if ctx.stopping:
            return
        ctx.stopping = True
        gevent.spawn(shutdown)

    def shutdown() -> None:
        gevent.killall(acceptors, block=False)
        for listener in listeners:
            listener.close()
        deadline = gevent.get_hub().loop.now() + worker.spec.graceful_timeout
        while active and gevent.get_hub().loop.now() < deadline:
            for greenlet, conn in list(active.items()):
                if conn.waiting and not conn.has_pending_data():  # idle keep-alive, nothing sent: close
                    gevent.kill(greenlet)
            gevent.sleep(0.05)
        if active:
            log.warning("graceful timeout: %d connections still busy; exiting", len(active))
        done.set()

    def reopen() -> None:
        worker.reopen_requested = True

    gevent.signal_handler(signal.SIGTERM, graceful)
    gevent.signal_handler(signal.SIGINT, worker.exit, EXIT_OK)
    gevent.signal_handler(signal.SIGQUIT, worker.exit, EXIT_OK)
    gevent.signal_handler(signal.SIGUSR1, reopen)
    gevent.spawn(heartbeat)
    done.wait()
    return EXIT_OK
