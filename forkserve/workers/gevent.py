"""The gevent worker: one greenlet per connection, keep-alive, up to worker_connections at once.

The module imports no gevent at import time (the master imports it before forking: `_import_worker_side`);
gevent is imported by `before_import()`, which monkey-patches before the app is imported (the patching itself is
`forkserve.workers.gevent_patch`), or, in a worker forked from a preload process, by `after_fork()`. A
`GeventServer` per worker owns the serving state (the hub, the open connections, the parked handlers). Per
listener an accept-loop greenlet (hand-written rather than gevent's StreamServer: fewer layers on
the path, and we control shutdown) takes a slot of a semaphore of `worker_connections`, accepts, and starts a
raw greenlet running the shared HTTP connection loop.

Lean I/O: the listener and the client sockets are plain non-blocking `_socket.socket` objects, not gevent's
socket wrappers. A recv or send is tried first; only when it would block does the connection create (once) a
libev io watcher for its fd and wait on the hub. So a keep-alive request costs one recv and one send, a new
connection accept4 + ioctl(FIONBIO) + recv + send + close, and nothing else: no getsockopt(SO_SNDBUF) per send
and no getsockname/fcntl per accept as gevent's socket does, no watcher objects for a connection that never
waits.

Timeouts are not timers per wait: a waiting connection records its deadline, and a sweeper greenlet (every
`period` seconds, a quarter of the shortest timeout, at most 0.5 s) throws TimeoutError into connections whose
deadline has passed, from a hub callback, and only if they still wait on the same waiter. A timeout thus fires
up to `period` late, which no client can tell from network jitter.

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
from time import monotonic
from typing import TYPE_CHECKING, Any

from forkserve.http.body import ClientDisconnected
from forkserve.http.connection import STOP_IDLE_GRACE, Connection
from forkserve.http.context import base_environ, connection_environ
from forkserve.workers.gevent_patch import patch, patch_ssl_if_imported
from forkserve.workers.worker import EXIT_OK, TICK_SECONDS, log

if TYPE_CHECKING:
    from forkserve.http.context import Context
    from forkserve.workers.worker import Worker

READ = 1  # libev EV_READ
WRITE = 2  # libev EV_WRITE
ACCEPT_BATCH = 8  # connections accepted in a row before the accept loop lets the hub run
PARKED_HANDLERS = 32  # idle handler greenlets kept for the next connections


def before_import() -> None:
    """Monkey-patch, once per process tree, before the app is imported (see `gevent_patch.patch`)."""
    patch()


def after_fork() -> None:
    """In a worker forked from the (patched) preload process: a fresh hub and loop for this process."""
    import gevent

    gevent.reinit()


def serve(worker: Worker) -> int:
    patch_ssl_if_imported()
    return GeventServer(worker).run()


class GeventConnection(Connection):
    """A connection on a raw non-blocking socket; waits on lazily created libev watchers."""

    __slots__ = ("deadline", "reader", "server", "waiter", "writer")
    # all set by handle() right after construction (gevent ships no type information: watchers are Any)
    deadline: float  # monotonic time at which the current wait times out (0.0: never)
    server: GeventServer  # the worker's: its hub and Waiter class
    reader: Any | None  # libev io watchers, created on the first wait that needs one
    writer: Any | None
    waiter: Any  # the gevent Waiter of the current wait, or None when not waiting

    def _wait(self, events: int, timeout: float) -> None:
        server = self.server
        if events == READ:
            watcher = self.reader
            if watcher is None:
                watcher = self.reader = server.loop.io(self.sock.fileno(), READ)
        else:
            watcher = self.writer
            if watcher is None:
                watcher = self.writer = server.loop.io(self.sock.fileno(), WRITE)
        waiter = server.waiter_class(server.hub)
        watcher.start(waiter.switch, None)
        self.deadline = monotonic() + timeout if timeout > 0 else 0.0
        self.waiter = waiter
        try:
            waiter.get()
        finally:
            watcher.stop()
            self.waiter = None

    def expire(self, waiter: Any) -> None:
        """Hub callback of the sweeper: time out the wait if it is still the same one."""
        if self.waiter is waiter:
            waiter.throw(TimeoutError("timed out"))

    def _recv(self, n: int, timeout: float) -> bytes:
        sock = self.sock
        if not self.waiting:  # between two requests the client is usually still reading our answer: wait first
            try:
                return sock.recv(n)
            except BlockingIOError:
                pass
        while True:
            self._wait(READ, timeout)
            try:
                return sock.recv(n)
            except BlockingIOError:
                continue

    def _sendall(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._wait(WRITE, self.ctx.timeout)
            try:
                sent = sock.send(view)
            except BlockingIOError:
                continue
            view = view[sent:]

    def _sendfile(self, fd: int, offset: int, count: int) -> None:
        out = self.sock.fileno()
        while count > 0:
            try:
                sent = os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                self._wait(WRITE, self.ctx.timeout)
                continue
            if sent == 0:
                raise ClientDisconnected("sendfile: no progress (file truncated?)")
            offset += sent
            count -= sent

    def close(self) -> None:
        try:
            super().close()
        finally:
            # stopped watchers (every wait stops its own); drop them before the fd number can be reused
            if self.reader is not None:
                self.reader.close()
                self.reader = None
            if self.writer is not None:
                self.writer.close()
                self.writer = None


def sweep_period(ctx: Any) -> float:
    timeouts = [t for t in (ctx.timeout, ctx.keepalive) if t > 0]
    return min(0.5, max(0.02, min(timeouts) / 4)) if timeouts else 0.5


class GeventServer:
    """One worker's serving state: the hub, the connections (greenlet -> connection), the parked handler
    greenlets, the accept loops; its methods run as greenlets or hub callbacks."""

    def __init__(self, worker: Worker) -> None:
        import gevent
        import gevent.event
        from gevent.hub import Waiter
        from gevent.lock import Semaphore

        assert worker.ctx is not None
        self.worker = worker
        self.ctx: Context = worker.ctx
        self.gevent = gevent
        self.hub = gevent.get_hub()
        self.loop = self.hub.loop
        self.waiter_class = Waiter
        self.active: dict[Any, GeventConnection] = {}  # greenlet -> its connection
        self.slots = Semaphore(worker.spec.worker_connections)
        self.parked: list[Any] = []  # handler greenlets waiting for their next connection
        self.done = gevent.event.Event()
        self.acceptors: list[Any] = []
        self.listeners: list[socket.socket] = []

    def run(self) -> int:
        gevent = self.gevent
        worker = self.worker
        for listener in worker.listeners:
            if listener.family in (socket.AF_INET, socket.AF_INET6):
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
            listener.setblocking(False)
            self.listeners.append(listener)
            self.acceptors.append(gevent.spawn(self.accept_loop, listener, base_environ(listener, worker.errors)))
        gevent.signal_handler(signal.SIGTERM, self.graceful)
        gevent.signal_handler(signal.SIGINT, worker.exit, EXIT_OK)
        gevent.signal_handler(signal.SIGQUIT, worker.exit, EXIT_OK)
        gevent.signal_handler(signal.SIGUSR1, self.reopen)
        gevent.spawn(self.heartbeat)
        gevent.spawn(self.sweeper)
        self.done.wait()
        return EXIT_OK

    def handle(self, sock: Any, env: dict[str, Any]) -> None:
        """Serve a connection, then park and wait for the next one: a greenlet (and its Python frame stack, an
        mmap'ed chunk on 3.11+) is reused rather than created and freed per connection."""
        ctx, hub, active, slots, parked = self.ctx, self.hub, self.active, self.slots, self.parked
        me = self.gevent.getcurrent()
        while True:
            conn = GeventConnection(ctx, sock, env)
            conn.server = self
            conn.reader = conn.writer = conn.waiter = None
            conn.deadline = 0.0
            active[me] = conn
            try:
                conn.serve()
            finally:
                del active[me]
                slots.release()
            conn = sock = env = None  # type: ignore[assignment]
            if ctx.stopping or len(parked) >= PARKED_HANDLERS:
                return
            parked.append(me)
            sock, env = hub.switch()  # the accept loop hands over (sock, env) from a hub callback

    def accept_loop(self, listener: socket.socket, base: dict[str, Any]) -> None:
        ctx, hub, slots, parked = self.ctx, self.hub, self.slots, self.parked
        gevent = self.gevent
        run_callback = self.loop.run_callback
        spawn_raw, handle = gevent.spawn_raw, self.handle
        accept = listener._accept  # type: ignore[attr-defined]
        family, proto, sock_type, raw_socket = listener.family, listener.proto, socket.SOCK_STREAM, _socket.socket
        watcher = self.loop.io(listener.fileno(), READ)
        batch = 0
        try:
            slots.acquire()
            # `stopping` is checked right before every accept, so after every wait (for a slot, for the listener,
            # in a sleep), during which a TERM may have come: a stopping worker takes no more connections from
            # the shared listener (the other workers serve them), so every connection it hands over was handed
            # over before graceful() queued shutdown() (see shutdown for why that matters)
            while not ctx.stopping:
                try:
                    fd, address = accept()
                except BlockingIOError:
                    batch = 0
                    hub.wait(watcher)
                    continue
                except OSError as exc:
                    log.warning("accept failed: %s", exc)
                    gevent.sleep(0.05)
                    continue
                sock = raw_socket(family, sock_type, proto, fd)
                sock.settimeout(0.0)
                env = connection_environ(base, address)
                if parked:
                    run_callback(parked.pop().switch, sock, env)
                else:
                    spawn_raw(handle, sock, env)
                batch += 1
                if batch >= ACCEPT_BATCH:  # let the accepted connections (and the other workers) get going
                    batch = 0
                    gevent.sleep(0)
                slots.acquire()
            slots.release()
        finally:
            watcher.stop()

    def heartbeat(self) -> None:
        while True:
            self.worker.tick()
            self.gevent.sleep(TICK_SECONDS)

    def sweeper(self) -> None:
        period = sweep_period(self.ctx)
        while True:
            self.gevent.sleep(period)
            now = monotonic()
            for conn in list(self.active.values()):
                waiter = conn.waiter
                if waiter is not None and 0.0 < conn.deadline <= now:
                    self.loop.run_callback(conn.expire, waiter)

    def graceful(self) -> None:
        if self.ctx.stopping:
            return
        self.ctx.stopping = True
        self.gevent.spawn(self.shutdown)

    def shutdown(self) -> None:
        gevent, loop, active = self.gevent, self.loop, self.active
        gevent.killall(self.acceptors, block=True)  # returns at once, without yielding, if they have returned
        for listener in self.listeners:
            listener.close()
        # A connection an acceptor has just accepted is handed over by a hub callback (a parked handler's switch,
        # or the start of a spawn_raw greenlet) and is in `active` only once that callback has run: until then
        # `active` may be empty and we would exit with the connection accepted and never answered (the client
        # sees a close or a reset). Callbacks run in the order they were queued and no acceptor is left to queue
        # another, so once this sleep's callback has run, every hand-off has, and its handler is in `active`.
        gevent.sleep(0)
        deadline = loop.now() + self.worker.spec.graceful_timeout
        while active and loop.now() < deadline:
            last_call = monotonic() + STOP_IDLE_GRACE
            for conn in list(active.values()):
                if conn.waiting and not 0.0 < conn.deadline <= last_call:
                    # idle keep-alive: a last moment to send a request (answered with Connection: close), then
                    # the sweeper times it out; killing it now would drop a request already on its way
                    conn.deadline = last_call
            gevent.sleep(0.05)
        if active:
            log.warning("graceful timeout: %d connections still busy; exiting", len(active))
        self.done.set()

    def reopen(self) -> None:
        self.worker.reopen_requested = True
