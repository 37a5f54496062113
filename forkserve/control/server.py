"""The control socket, served from the master loop: non-blocking, no threads. OS calls.

`attach(master)` is the one call the master makes at start-up: it opens the control socket (and the metrics
endpoint when `[server] metrics` is set), registers their fds with the master's selector, adds a per-wake hook
(idle connections, sd_notify READY/STATUS/STOPPING, metrics bookkeeping) and returns a `ControlPlane` whose
`close()` the master calls at shutdown.

Safety:
- the socket's directory is created 0700 if missing (an existing default directory must be ours and private);
  the socket is bound under umask 0177, so it is 0600 from its first instant (never chmod-ed after);
- every accepted caller's uid (SO_PEERCRED) must be the master's or root's, or it gets an error and is closed;
- per-connection input and output buffers; a frame larger than `protocol.MAX_FRAME`, a malformed frame or an
  unknown command gets an error reply, then the connection closes; the master is never disturbed;
- sends never block (what does not fit stays buffered for the next writable event); a connection idle for
  `IDLE_TIMEOUT` seconds is dropped, and at most `MAX_CONNECTIONS` are open at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from typing import Any

from forkserve.control import protocol
from forkserve.control.loop import LoopConnections
from forkserve.control.protocol import ProtocolError, Request
from forkserve.sockets import remove_stale_unix_socket

IDLE_TIMEOUT = 5.0
MAX_CONNECTIONS = 32
READS_PER_WAKE = 16
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

log = logging.getLogger("forkserve")

Reply = Callable[[dict[str, Any] | Exception], None]
# A command gets the request and a `respond` callable; it calls `respond(result)` once, at once or later (a
# reload or a plan waiting for a validating child), so no command ever blocks the loop. `respond(exc)` sends an
# error reply (a command that fails later, outside `handle`, still answers).
Dispatch = Callable[[Request, Reply], None]


class ControlSocketError(Exception):
    """The control socket cannot be opened (the master serves on without it, and says so)."""


class ControlSocketInUse(ControlSocketError):
    """Another live process listens on the socket: most likely a second master of the same site (fatal)."""


def prepare_directory(path: str) -> None:
    """Create the socket's directory 0700 when missing; refuse a default-style directory that is not private."""
    directory = os.path.dirname(path) or "."
    try:
        os.mkdir(directory, 0o700)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlSocketError(f"cannot create {directory}: {exc.strerror}") from None
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ControlSocketError(f"{directory} is not a directory")
    if os.path.basename(directory).startswith("forkserve") and (st.st_uid != os.getuid() or st.st_mode & 0o077):
        raise ControlSocketError(f"{directory} must be a directory owned by uid {os.getuid()} with mode 0700 "
                                 f"(found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")


def peer_uid(sock: socket.socket) -> int:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(data)[1]


class _Connection:
    """One client. Once `closing`, further input is read and discarded (closing a socket with unread input
    would reset it and lose our last reply), the reply is flushed, our side shut down, and the connection
    closed at the peer's EOF or after IDLE_TIMEOUT."""

    def __init__(self, server: ControlServer, sock: socket.socket, now: float) -> None:
        self.server = server
        self.sock = sock
        self.decoder = protocol.Decoder()
        self.out = bytearray()
        self.last = now
        self.closing = False
        self.eof = False
        self.shut = False
        self.registered_events = selectors.EVENT_READ
        self.waiting = False  # a reply is owed: later requests wait in `queued`, answered in order
        self.queued: list[dict[str, Any]] = []

    def on_event(self) -> None:
        self.last = time.monotonic()
        self._read()
        if self.sock.fileno() >= 0:
            self._flush()

    def _read(self) -> None:
        for _ in range(READS_PER_WAKE):  # a flooding client cannot keep the loop here
            if self.eof:
                return
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not data:
                self.eof = self.closing = True
                return
            if self.closing:
                continue
            try:
                messages = self.decoder.feed(data)
            except ProtocolError as exc:
                self.reply(protocol.error(str(exc)))
                self.closing = True
                continue
            for message in messages:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if self.waiting:
            self.queued.append(message)
            return
        self.waiting = True
        self.server.handle(message, self._answer)

    def _answer(self, message: dict[str, Any]) -> None:
        """The reply to the request being handled; then the requests that waited behind it."""
        if self.sock.fileno() < 0:
            return  # the client went away while its command ran
        self.waiting = False
        self.reply(message)
        while self.queued and not self.waiting:
            self._handle(self.queued.pop(0))
        self._flush()

    def reply(self, message: dict[str, Any]) -> None:
        try:
            self.out += protocol.encode(message)
        except (ProtocolError, ValueError, TypeError) as exc:
            self.out += protocol.encode(protocol.error(f"reply could not be encoded: {exc}"))

    def _flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self.out[:sent]
        if self.closing and not self.out and not self.waiting:  # a half-closed client still gets its late reply
            if self.eof:
                self.close()
                return
            if not self.shut:
                self.shut = True
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self.close()
                    return
        # after EOF the socket stays readable: watching it would spin the loop while a reply is owed
        wanted = (0 if self.eof else selectors.EVENT_READ) | (selectors.EVENT_WRITE if self.out else 0)
        if wanted != self.registered_events:
            selector = self.server.selector
            if not wanted:
                selector.unregister(self.sock)
            elif not self.registered_events:
                selector.register(self.sock, wanted, self.on_event)
            else:
                selector.modify(self.sock, wanted, self.on_event)
            self.registered_events = wanted

    def close(self) -> None:
        self.server.forget(self)


class ControlServer(LoopConnections):
    idle_timeout = IDLE_TIMEOUT

    def __init__(self, path: str, dispatch: Dispatch, selector: selectors.BaseSelector) -> None:
        super().__init__(selector)
        self.path = path
        self.dispatch = dispatch
        self.sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None

    def open(self) -> None:
        prepare_directory(self.path)
        problem = remove_stale_unix_socket(self.path)
        if problem:  # most likely another master of the same site file
            raise (ControlSocketInUse if "already listening" in problem else ControlSocketError)(problem)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600 from the moment the file exists
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(f"cannot bind the control socket {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        sock.listen(16)
        sock.setblocking(False)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        assert self.sock is not None
        now = time.monotonic()
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("control socket: cannot accept: %s", exc.strerror)
                return
            conn.setblocking(False)
            try:
                uid = peer_uid(conn)
            except OSError:
                conn.close()
                continue
            if len(self.connections) >= MAX_CONNECTIONS:
                conn.close()
                continue
            connection = _Connection(self, conn, now)
            self.connections[conn.fileno()] = connection
            self.selector.register(conn, selectors.EVENT_READ, connection.on_event)
            if uid not in (os.getuid(), 0):
                log.warning("control socket: refused a caller with uid %d", uid)
                connection.reply(protocol.error(f"permission denied: uid {uid} may not control this master"))
                connection.closing = True  # its requests are read and dropped, never handled
                connection.on_event()

    def handle(self, message: dict[str, Any], respond: Callable[[dict[str, Any]], None]) -> None:
        try:
            request = protocol.parse_request(message)
        except ProtocolError as exc:
            respond(protocol.error(str(exc)))
            return
        answered = False

        def ok(result: dict[str, Any] | Exception) -> None:
            nonlocal answered
            answered = True
            if isinstance(result, Exception):
                respond(protocol.error(f"{request.command} failed in the master: {result}"))
            else:
                respond(protocol.ok(result))

        try:
            self.dispatch(request, ok)
        except Exception as exc:  # a bug in a command must not take the master down
            log.exception("control command %s failed", request.command)
            if not answered:
                respond(protocol.error(f"{request.command} failed in the master: {exc}"))

    def close(self) -> None:
        self.forget_all()
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:  # never remove a successor's socket
                    os.unlink(self.path)
