"""One client connection: read requests, answer each through the app; repeat while keep-alive allows.

`Connection` runs the loop (pipelined requests in order, keep-alive, a graceful stop's last call, errors),
answers one request (`handle`: call the app, count it, decide whether the connection lives on), feeds request
bodies to wsgi.input, and closes (with a short linger). Writing the response is `forkserve.http.writer`'s
`ResponseWriter`, its base class; the per-worker constants and caches come from `forkserve.http.context`.

Unread request bodies: drained (up to 1 MiB) to keep the connection, else the connection is closed; a request
that asked for `100-continue` but was answered without reading its body closes the connection (the client may
or may not send the body).

Subclasses (per worker class) provide `_recv(n, timeout)` and may override `_sendall` and `_sendfile`.
"""

from __future__ import annotations

import socket
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

from forkserve.channel import CONNECTIONS, IN_FLIGHT, REQUEST_START
from forkserve.http.body import EMPTY, ClientDisconnected
from forkserve.http.parse import REASONS, ParseError, RequestParser
from forkserve.http.response import FileWrapper, error_response
from forkserve.http.writer import ResponseWriter

if TYPE_CHECKING:
    import _socket

    from httptools import HttpRequestParser

    from forkserve.http.context import Context

RECV_SIZE = 65536
DRAIN_LIMIT = 1 << 20  # unread request body we read and drop to keep a connection alive
LINGER_BYTES = 1 << 18
LINGER_SECONDS = 1.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
STOP_IDLE_GRACE = 1.0  # seconds an idle keep-alive connection of a stopping worker may still send a request
# What close() leaves in RequestParser._parser to break the parser <-> callbacks cycle. A closed connection's
# parser is never fed again, so the attribute keeps the live parser's type: no None check per feed().
_NO_PARSER = cast("HttpRequestParser", None)


class Connection(ResponseWriter):
    __slots__ = ("parser", "waiting")

    def __init__(self, ctx: Context, sock: _socket.socket, env: dict[str, Any]) -> None:
        self.ctx = ctx
        self.sock = sock
        self.parser = RequestParser(self, env, ctx.limit_line, ctx.limit_fields, ctx.limit_field, ctx.parse_cache,
                                    ctx.limit_body, ctx.peers)
        # idle between two requests of a keep-alive connection: a graceful stop may close it. Never true before
        # the first request: a connection just accepted carries a request the client expects an answer to.
        self.waiting = False
        self.broken = False  # a socket error happened under the app: no 500, just close
        self.status = None
        self.headers = None
        self.sent = False
        self.keep = False
        self.chunked = False
        self.head = False
        self.http10 = False
        self.bodyless = False
        self.code = 0
        self.nbytes = 0
        self.remaining = -1
        self.stream = None

    # -- the loop --

    def has_pending_data(self) -> bool:
        """A request already sent by the client (in the socket buffer): serve it rather than drop it."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # BlockingIOError included: nothing there
            return False

    def serve(self) -> None:
        slot = self.ctx.slot
        slot[CONNECTIONS] += 1
        try:
            self._serve()
        except OSError:
            pass  # reset, timeout, client gone: nothing to answer
        except Exception:
            self.ctx.log.exception("error in connection handler")
        finally:
            slot[CONNECTIONS] -= 1
            self.close()

    def _serve(self) -> None:
        ctx = self.ctx
        parser = self.parser
        requests = parser.requests
        timeout = ctx.timeout
        served = False
        while True:
            if requests:
                env, keep, stream = requests.popleft()
                if stream is parser.failed_stream:  # its body was malformed before the app could see it
                    self.send_error(parser.error.status)  # type: ignore[union-attr]
                    return
                if not self.handle(env, keep, stream):
                    return
                timeout = ctx.keepalive
                served = True
                continue
            if parser.error is not None:
                self.send_error(parser.error.status)
                return
            idle = parser.idle
            between = idle and served  # served one request already, waiting for the next
            if parser.upgraded:
                return
            if ctx.stopping and between:
                # The client may be sending its next request on this connection right now: closing would drop
                # it. Wait a moment for it (answered with Connection: close); close only if none comes.
                timeout = min(timeout, STOP_IDLE_GRACE) if timeout > 0 else STOP_IDLE_GRACE
            self.waiting = between
            try:
                data = self._recv(RECV_SIZE, timeout if idle else ctx.timeout)
            finally:
                self.waiting = False
            if not data:
                return
            parser.feed(data)

    def handle(self, env: dict[str, Any], keep: bool, stream: Any) -> bool:
        """Answer one request. True: the connection may carry another one."""
        ctx = self.ctx
        slot = ctx.slot
        starts = ctx.starts
        start = monotonic()
        method = env["REQUEST_METHOD"]
        uri = env["RAW_URI"]
        if uri is not ctx.shown_uri or method is not ctx.shown_method:  # what the slot shows (for a crash)
            ctx.show(method, uri)
        starts[REQUEST_START] = start
        slot[IN_FLIGHT] += 1
        self.status = None
        self.headers = None
        self.sent = False
        self.chunked = False
        self.nbytes = 0
        self.remaining = -1
        self.stream = stream
        self.keep = keep and ctx.keepalive > 0
        self.head = method == "HEAD"
        self.http10 = env["SERVER_PROTOCOL"] != "HTTP/1.1"
        result = None
        try:
            result = ctx.app(env, self.start_response)
            if self.sent:
                self.write_iter(result)
            elif type(result) is list:
                self.write_list(result)
            elif type(result) is FileWrapper:
                self.write_file(result)
            else:
                self.write_iter(result)
        except Exception as exc:
            self.app_failed(env, exc)
        finally:
            slot[IN_FLIGHT] -= 1
            if starts[REQUEST_START] == start:  # still the latest started (gevent: others may have started since)
                starts[REQUEST_START] = 0.0
            if result is not None and type(result) is not list:
                self.close_result(result)
            if stream is not EMPTY:
                stream.conn = None
        duration = monotonic() - start
        ctx.record(self.code, duration)
        if ctx.access is not None:
            ctx.access(env, self.code, self.nbytes, duration)
        ctx.served += 1
        if ctx.served == ctx.max_requests:
            ctx.on_max_requests()
        if not self.keep or ctx.stopping:
            return False
        return stream is EMPTY or stream.complete or self.drain(stream)

    def app_failed(self, env: dict[str, Any], exc: Exception) -> None:
        """The app (or writing its response) raised: answer 400/500 when nothing was sent yet, log, close."""
        self.keep = False
        error = self.parser.error
        ctx = self.ctx
        if error is not None and not self.sent:  # a malformed body, met while the app read it
            self.code = error.status
            self._send_quietly(error_response(error.status, REASONS[error.status], ctx.clock))
        elif self.broken or isinstance(exc, ClientDisconnected):
            if not self.sent:
                self.code = 499  # nginx's "client closed request"
        elif not self.sent:
            ctx.log.exception("error handling %s %s", env["REQUEST_METHOD"], env["RAW_URI"])
            self.code = 500
            self._send_quietly(error_response(500, REASONS[500], ctx.clock))
        else:
            ctx.log.exception("error after the response started: %s %s", env["REQUEST_METHOD"], env["RAW_URI"])

    def close_result(self, result: Any) -> None:
        """PEP 3333: call the app's iterable's close(), whatever happened."""
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                self.ctx.log.exception("error closing the app's response iterable")

    def _send_quietly(self, data: bytes) -> None:
        try:
            self._sendall(data)
            self.sent = True
        except OSError:
            self.broken = True

    # -- request bodies --

    def pull_body(self, stream: Any) -> None:
        """wsgi.input needs more bytes: one recv into the parser (after "100 Continue" when it is owed)."""
        if stream.expect:
            stream.expect = False
            if not self.sent:
                self.sendall(CONTINUE)
        try:
            data = self._recv(RECV_SIZE, self.ctx.timeout)
        except OSError as exc:
            self.broken = True
            raise ClientDisconnected(f"reading the request body: {exc}") from exc
        if not data:
            self.broken = True
            raise ClientDisconnected("the client closed the connection before the end of the request body")
        self.parser.feed(data)
        if self.parser.error is not None:
            raise ClientDisconnected(f"malformed request body: {self.parser.error}")

    def drain(self, stream: Any) -> bool:
        """Read and drop what the app left of the body. False: close instead."""
        stream.discard = True
        stream.buf.clear()
        if stream.expect:
            return False  # we never asked for the body; the client may or may not send it
        parser = self.parser
        budget = DRAIN_LIMIT
        while not stream.complete:
            if budget <= 0:
                return False
            try:
                data = self._recv(RECV_SIZE, self.ctx.timeout)
            except OSError:
                return False
            if not data:
                return False
            budget -= len(data)
            parser.feed(data)
            if parser.error is not None:
                return False
        return True

    # -- errors and close --

    def send_error(self, status: int) -> None:
        self.code = status
        self._send_quietly(error_response(status, REASONS.get(status, "Error"), self.ctx.clock))
        self.ctx.record(status, 0.0)

    def close(self) -> None:
        parser = self.parser
        sock = self.sock
        try:
            if not self.broken and (parser.upgraded or parser.error is not None or not parser.idle):
                self._linger(sock)
        finally:
            parser.conn = None
            parser._parser = _NO_PARSER  # break the parser <-> callbacks cycle: no GC work per connection
            parser.requests.clear()
            try:
                sock.close()
            except OSError:
                pass

    def _linger(self, sock: _socket.socket) -> None:
        """Close the write side, then read (and drop) what the client still sends for a moment, so that the
        kernel does not answer its unread data with a RST that could destroy our last response."""
        try:
            sock.shutdown(socket.SHUT_WR)
            budget = LINGER_BYTES
            while budget > 0:
                data = self._recv(RECV_SIZE, LINGER_SECONDS)
                if not data:
                    return
                budget -= len(data)
        except (OSError, ParseError):
            pass
