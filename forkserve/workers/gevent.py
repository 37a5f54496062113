"""The gevent worker: one greenlet per connection, keep-alive, up to worker_connections at once.

Imported only in gevent worker processes (never in the master): `prepare()` monkey-patches before the app is
imported. Per listener an accept-loop greenlet (hand-written rather than gevent's StreamServer: fewer layers on
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
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from functools import reduce
from time import monotonic
from types import ModuleType
from typing import TYPE_CHECKING, Any

from forkserve.http.body import ClientDisconnected
from forkserve.http.connection import STOP_IDLE_GRACE, Connection, base_environ, connection_environ
from forkserve.workers.base import EXIT_OK, TICK_SECONDS, log

if TYPE_CHECKING:
    from gevent.hub import Hub

    from forkserve.workers.base import Worker

READ = 1  # libev EV_READ
WRITE = 2  # libev EV_WRITE
ACCEPT_BATCH = 8  # connections accepted in a row before the accept loop lets the hub run
PARKED_HANDLERS = 32  # idle handler greenlets kept for the next connections


def prepare() -> None:
    """`monkey.patch_all()`, as gunicorn's gevent worker does, without two imports that most workers never need.

    A gunicorn worker inherits gevent, ssl and the rest from its master, which imported them; ours import them
    after fork, so every page they touch counts in the worker's RSS. Two of them are not needed to patch (figures
    from bench/worker_memory.py, hello app, one worker's RSS):
    * importlib.metadata (with email, zipfile, csv, ...; about 1.7 MB): gevent looks up its plugins' entry
      points at every patch event. We read the few entry_points.txt files ourselves (`plugin_entry_points`)
      and call the same plugins, falling back to gevent's lookup when the path holds anything but directories.
    * ssl (with libssl, _ssl and OpenSSL's initialisation; about 2.5 MB): patched the moment something first
      imports it (`_PatchSslOnImport`), before the importer sees the module, which is what gevent requires.
      An app that never uses TLS never loads it.
    """
    from gevent import events, monkey

    plugins = plugin_entry_points(sys.path)
    if plugins is not None and hasattr(events, "notify_and_call_entry_points"):
        events.notify_and_call_entry_points = _PluginNotifier(events, plugins)
    if "ssl" in sys.modules:  # too late to defer: patch it now, with gevent's own warnings
        monkey.patch_all()
        return
    monkey.patch_all(ssl=False)
    # record ssl as patched, so that an app's own patch_all() stays the no-op it is after a full patch_all()
    # instead of warning "Patching more than once" and patching ssl behind our hook's back
    settings = monkey.saved.get("_gevent_saved_patch_all_module_settings")
    if isinstance(settings, dict) and settings.get("ssl") is False:
        settings["ssl"] = True
    sys.meta_path.insert(0, _PatchSslOnImport())


def patch_ssl_if_imported() -> None:
    """Patch ssl if it was imported without our hook seeing it (an app that imported gevent.ssl first)."""
    if "ssl" in sys.modules:
        _patch_ssl_once()


def _patch_ssl_once() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("ssl"):
        monkey.patch_ssl()


_ENTRY_POINT = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")
_PLUGIN_GROUP = "gevent.plugins."


def plugin_entry_points(path: Sequence[str]) -> dict[str, list[str]] | None:
    """gevent's plugins, {group: [entry point value, ...]}, read from the entry_points.txt of the distributions
    on `path` the way importlib.metadata finds them (*.dist-info and *.egg-info directories, the first
    distribution of a name wins, in path order). None when only importlib.metadata can tell: a path entry that
    is a file (zip, egg) or an .egg directory, or a meta path finder that serves distributions of its own."""
    for finder in sys.meta_path:
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_distributions"):
            return None
    seen: set[str] = set()
    plugins: dict[str, list[str]] = {}
    for entry in path:
        root = entry or "."
        if root.endswith(".egg") or os.path.isfile(root):
            return None
        try:
            names = os.listdir(root)
        except OSError:
            continue  # a missing directory holds no distribution (importlib.metadata skips it too)
        for name in names:
            low = name.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            dist = re.sub(r"[-_.]+", "_", low.rpartition(".")[0].partition("-")[0])
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(root, name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue  # no entry points (or an egg-info file rather than a directory)
            if _PLUGIN_GROUP in text:
                _parse_plugins(text, plugins)
    return plugins


def _parse_plugins(text: str, into: dict[str, list[str]]) -> None:
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group.startswith(_PLUGIN_GROUP) and "=" in line:
            into.setdefault(group, []).append(line.partition("=")[2].strip())


def load_entry_point(value: str) -> Any:
    """What importlib.metadata.EntryPoint(value=...).load() returns."""
    match = _ENTRY_POINT.match(value)
    if match is None:
        raise ValueError(f"malformed entry point: {value!r}")
    module = importlib.import_module(match["module"])
    return reduce(getattr, filter(None, (match["attr"] or "").split(".")), module)


class _PluginNotifier:
    """Stands in for gevent.events.notify_and_call_entry_points: the subscribers, then the plugins of the event's
    group, as gevent does, with the plugins read by `plugin_entry_points` instead of importlib.metadata."""

    def __init__(self, events: ModuleType, plugins: dict[str, list[str]]) -> None:
        self.events = events
        self.plugins = plugins

    def __call__(self, event: Any) -> None:
        self.events.notify(event)
        for value in self.plugins.get(getattr(event, "ENTRY_POINT_NAME", ""), ()):
            load_entry_point(value)(event)


class _PatchSslOnImport(importlib.abc.MetaPathFinder):
    """Finds ssl once (then leaves sys.meta_path): the stdlib module, whose loader patches it right after it ran,
    while the import that asked for it still waits, so no caller ever holds an unpatched ssl."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ssl":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("ssl")
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchAfterExec(spec.loader)
        return spec


class _PatchAfterExec(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        # gevent.ssl being imported means gevent is patching ssl already (or the app imported gevent.ssl
        # first: then serve() patches it before the first request)
        if "gevent.ssl" not in sys.modules:
            _patch_ssl_once()

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self.loader, name)


class GeventConnection(Connection):
    """A connection on a raw non-blocking socket; waits on lazily created libev watchers."""

    __slots__ = ("deadline", "hub", "reader", "waiter", "writer")
    # all set by handle() right after construction (gevent ships no type information: watchers are Any)
    deadline: float  # monotonic time at which the current wait times out (0.0: never)
    hub: Hub
    reader: Any | None  # libev io watchers, created on the first wait that needs one
    writer: Any | None
    waiter: Any  # the gevent Waiter of the current wait, or None when not waiting

    def _wait(self, events: int, timeout: float) -> None:
        if events == READ:
            watcher = self.reader
            if watcher is None:
                watcher = self.reader = self.hub.loop.io(self.sock.fileno(), READ)
        else:
            watcher = self.writer
            if watcher is None:
                watcher = self.writer = self.hub.loop.io(self.sock.fileno(), WRITE)
        waiter = _Waiter(self.hub)
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


_Waiter: Any = None


def sweep_period(ctx: Any) -> float:
    timeouts = [t for t in (ctx.timeout, ctx.keepalive) if t > 0]
    return min(0.5, max(0.02, min(timeouts) / 4)) if timeouts else 0.5


def serve(worker: Worker) -> int:  # noqa: C901
    global _Waiter
    import gevent
    import gevent.event
    from gevent.hub import Waiter
    from gevent.lock import Semaphore

    _Waiter = Waiter
    patch_ssl_if_imported()
    ctx = worker.ctx
    assert ctx is not None
    hub = gevent.get_hub()
    loop = hub.loop
    active: dict[Any, GeventConnection] = {}  # greenlet -> its connection
    slots = Semaphore(worker.spec.worker_connections)
    getcurrent = gevent.getcurrent
    spawn_raw = gevent.spawn_raw
    run_callback = loop.run_callback
    done = gevent.event.Event()
    sock_type = socket.SOCK_STREAM
    raw_socket = _socket.socket

    parked: list[Any] = []  # handler greenlets waiting for their next connection

    def handle(sock: Any, env: dict[str, Any]) -> None:
        """Serve a connection, then park and wait for the next one: a greenlet (and its Python frame stack, an
        mmap'ed chunk on 3.11+) is reused rather than created and freed per connection."""
        me = getcurrent()
        while True:
            conn = GeventConnection(ctx, sock, env)
            conn.hub = hub
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

    def start(sock: Any, env: dict[str, Any]) -> None:
        if parked:
            run_callback(parked.pop().switch, sock, env)
        else:
            spawn_raw(handle, sock, env)

    def accept_loop(listener: socket.socket, base: dict[str, Any]) -> None:
        accept = listener._accept  # type: ignore[attr-defined]
        family, proto = listener.family, listener.proto
        watcher = loop.io(listener.fileno(), READ)
        batch = 0
        try:
            while not ctx.stopping:
                slots.acquire()
                while True:
                    try:
                        fd, address = accept()
                        break
                    except BlockingIOError:
                        batch = 0
                        hub.wait(watcher)
                    except OSError as exc:
                        if ctx.stopping:
                            slots.release()
                            return
                        log.warning("accept failed: %s", exc)
                        gevent.sleep(0.05)
                sock = raw_socket(family, sock_type, proto, fd)
                sock.settimeout(0.0)
                start(sock, connection_environ(base, address))
                batch += 1
                if batch >= ACCEPT_BATCH:  # let the accepted connections (and the other workers) get going
                    batch = 0
                    gevent.sleep(0)
        finally:
            watcher.stop()

    def heartbeat() -> None:
        while True:
            worker.tick()
            gevent.sleep(TICK_SECONDS)

    def sweeper() -> None:
        period = sweep_period(ctx)
        while True:
            gevent.sleep(period)
            now = monotonic()
            for conn in list(active.values()):
                waiter = conn.waiter
                if waiter is not None and 0.0 < conn.deadline <= now:
                    loop.run_callback(conn.expire, waiter)

    acceptors = []
    listeners = []
    for listener in worker.listeners:
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
        listener.setblocking(False)
        listeners.append(listener)
        acceptors.append(gevent.spawn(accept_loop, listener, base_environ(listener, worker.errors)))

    def graceful() -> None:
        if ctx.stopping:
            return
        ctx.stopping = True
        gevent.spawn(shutdown)

    def shutdown() -> None:
        gevent.killall(acceptors, block=True)
        for listener in listeners:
            listener.close()
        deadline = loop.now() + worker.spec.graceful_timeout
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
        done.set()

    def reopen() -> None:
        worker.reopen_requested = True

    gevent.signal_handler(signal.SIGTERM, graceful)
    gevent.signal_handler(signal.SIGINT, worker.exit, EXIT_OK)
    gevent.signal_handler(signal.SIGQUIT, worker.exit, EXIT_OK)
    gevent.signal_handler(signal.SIGUSR1, reopen)
    gevent.spawn(heartbeat)
    gevent.spawn(sweeper)
    done.wait()
    return EXIT_OK
