"""One client connection: parse, call the app, write the response; repeat while keep-alive allows.

Hot-path rules kept here: one sendall per response when the app returns a list (header block and body joined;
bodies of 64 KiB or more go in a second send rather than being copied), the header block built as one str and
encoded once, status lines and the Date/Server tail cached, no per-request syscalls besides recv/send, and the
counters in the shared slot updated with plain memory stores.

Response framing: the app's Content-Length when given (a longer body is cut, a shorter one closes the
connection); else, when the app returned a list, we compute Content-Length; else chunked on HTTP/1.1 and
close-delimited on HTTP/1.0. HEAD, 1xx, 204 and 304 responses never carry a body. Every response after which we
close carries `Connection: close`.

Unread request bodies: drained (up to 1 MiB) to keep the connection, else the connection is closed; a request
that asked for `100-continue` but was answered without reading its body closes the connection (the client may
or may not send the body).

Subclasses (per worker class) provide `_recv(n, timeout)` and may override `_sendall` and `_sendfile`.
"""

from __future__ import annotations

import io
import os
import socket
import stat
from collections.abc import Callable
from time import perf_counter
from time import time as _time
from typing import TYPE_CHECKING, Any, cast

from forkserve.channel import CONNECTIONS, IN_FLIGHT
from forkserve.http.body import EMPTY, ClientDisconnected
from forkserve.http.parse import REASONS, ParseError, RequestParser
from forkserve.http.response import CLOCK, FileWrapper, error_response, status_entry

if TYPE_CHECKING:
    import _socket

    from httptools import HttpRequestParser

RECV_SIZE = 65536
SMALL_BODY = 65536  # below this the body is copied behind the header block: one send
DRAIN_LIMIT = 1 << 20  # unread request body we read and drop to keep a connection alive
LINGER_BYTES = 1 << 18
LINGER_SECONDS = 1.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
STOP_IDLE_GRACE = 1.0  # seconds an idle keep-alive connection of a stopping worker may still send a request
# What close() leaves in RequestParser._parser to break the parser <-> callbacks cycle. A closed connection's
# parser is never fed again, so the attribute keeps the live parser's type: no None check per feed().
_NO_PARSER = cast("HttpRequestParser", None)


HEADS_CACHE = 512  # distinct (status, headers) pairs whose rendered header block is kept
_HEADS: dict[Any, tuple[bytes, int, int, bool, str, bool]] = {}


def head_entry(status: str, headers: Any) -> tuple[bytes, int, int, bool, str, bool]:
    """render_head's result, cached per (status, headers) value."""
    items = tuple(headers)
    key = (status, items)
    try:
        entry = _HEADS.get(key)
    except TypeError:  # a list or another unhashable thing among the headers: no caching
        return render_head(status, items)
    if entry is None:
        entry = render_head(status, items)
        if len(_HEADS) >= HEADS_CACHE:
            _HEADS.clear()
        _HEADS[key] = entry
    return entry


def render_head(status: str, headers: Any) -> tuple[bytes, int, int, bool, str, bool]:
    """Validate and render the app's status and headers once:
    (status line + the app's headers, code, the app's Content-Length or -1, keep-alive allowed by the app,
    the CLOCK attribute that ends the block, bodyless status)."""
    line, code = status_entry(status)
    declared = -1
    keep_ok = server = date = True
    parts = []
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            declared = int(value)
            if declared < 0:
                raise ValueError(f"negative Content-Length {value!r}")
        elif lower == "connection":
            if "close" in value.lower():
                keep_ok = False
            continue
        elif lower == "transfer-encoding" or lower == "keep-alive":
            continue  # hop-by-hop: the framing is ours
        elif lower == "server":
            server = False
        elif lower == "date":
            date = False
        parts.append(f"{name}: {value}\r\n")
    text = "".join(parts)
    if text.count("\n") != len(parts) or text.count("\r") != len(parts):
        raise ValueError("CR or LF inside a response header name or value")
    bodyless = code < 200 or code == 204 or code == 304
    if bodyless:
        declared = -1
    ends = ("end" if server else "date_end") if date else ("server_end" if server else "blank_end")
    return (line + text).encode("latin-1"), code, declared, keep_ok, ends, bodyless


class Context:
    """What the request path needs from its worker, as plain attributes (read on every request)."""

    def __init__(self, app: Callable[..., Any], slot: Any, record: Callable[[int, float], None],
                 log: Any, *, keepalive: float, timeout: float, limit_line: int, limit_fields: int,
                 limit_field: int, access: Callable[..., None] | None, max_requests: int,
                 on_max_requests: Callable[[], None]) -> None:
        self.app = app
        self.slot = slot
        self.record = record
        self.log = log
        self.keepalive = keepalive  # 0: no keep-alive (the sync worker always uses 0)
        self.timeout = timeout  # first request and request bodies: most seconds a read may wait
        self.limit_line = limit_line
        self.limit_fields = limit_fields
        self.limit_field = limit_field
        self.access = access
        self.max_requests = max_requests if max_requests > 0 else -1
        self.on_max_requests = on_max_requests
        self.served = 0
        self.stopping = False  # graceful stop: finish the request in hand, then close


def base_environ(listener: socket.socket, errors: Any) -> dict[str, Any]:
    """The part of the environ that is the same for every request on one listener."""
    if listener.family == socket.AF_UNIX:
        name, port = "localhost", ""
    else:
        address = listener.getsockname()
        name, port = address[0], str(address[1])
    return {
        "SERVER_NAME": name, "SERVER_PORT": port, "SCRIPT_NAME": "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": errors,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
    }


def connection_environ(base: dict[str, Any], address: Any) -> dict[str, Any]:
    env = base.copy()
    if isinstance(address, tuple):
        env["REMOTE_ADDR"] = address[0]
        env["REMOTE_PORT"] = str(address[1])
    else:
        env["REMOTE_ADDR"] = ""
        env["REMOTE_PORT"] = ""
    return env


class Connection:
    __slots__ = ("bodyless", "broken", "chunked", "code", "ctx", "head", "headers", "http10", "keep", "nbytes",
                 "parser", "remaining", "sent", "sock", "status", "stream", "waiting")

    def __init__(self, ctx: Context, sock: _socket.socket, env: dict[str, Any]) -> None:
        self.ctx = ctx
        self.sock = sock
        self.parser = RequestParser(self, env, ctx.limit_line, ctx.limit_fields, ctx.limit_field)
        # idle between two requests of a keep-alive connection: a graceful stop may close it. Never true before
        # the first request: a connection just accepted carries a request the client expects an answer to.
        self.waiting = False
        self.broken = False  # a socket error happened under the app: no 500, just close
        self.status: str | None = None
        self.headers: Any = None
        self.sent = False
        self.keep = False
        self.chunked = False
        self.head = False
        self.http10 = False
        self.bodyless = False
        self.code = 0
        self.nbytes = 0
        self.remaining = -1  # body bytes still allowed by the app's Content-Length (-1: no limit)
        self.stream: Any = None  # wsgi.input of the request being answered

    # -- I/O: the worker class decides how to wait --

    def _recv(self, n: int, timeout: float) -> bytes:
        raise NotImplementedError

    def _sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _sendfile(self, fd: int, offset: int, count: int) -> None:
        out = self.sock.fileno()
        while count > 0:
            sent = os.sendfile(out, fd, offset, count)
            if sent == 0:
                raise ClientDisconnected("sendfile: no progress (file truncated?)")
            offset += sent
            count -= sent

    def sendall(self, data: bytes) -> None:
        try:
            self._sendall(data)
        except OSError as exc:
            self.broken = True
            raise ClientDisconnected(f"send failed: {exc}") from exc

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

    def handle(self, env: dict[str, Any], keep: bool, stream: Any) -> bool:  # noqa: C901
        """Answer one request. True: the connection may carry another one."""
        ctx = self.ctx
        slot = ctx.slot
        start = perf_counter()
        slot[IN_FLIGHT] += 1
        self.status = None
        self.headers = None
        self.sent = False
        self.chunked = False
        self.nbytes = 0
        self.remaining = -1
        self.stream = stream
        self.keep = keep and ctx.keepalive > 0
        self.head = env["REQUEST_METHOD"] == "HEAD"
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
            self.keep = False
            error = self.parser.error
            if error is not None and not self.sent:  # a malformed body, met while the app read it
                self.code = error.status
                self._send_quietly(error_response(error.status, REASONS[error.status]))
            elif self.broken or isinstance(exc, ClientDisconnected):
                if not self.sent:
                    self.code = 499  # nginx's "client closed request"
            elif not self.sent:
                ctx.log.exception("error handling %s %s", env["REQUEST_METHOD"], env["RAW_URI"])
                self.code = 500
                self._send_quietly(error_response(500, REASONS[500]))
            else:
                ctx.log.exception("error after the response started: %s %s", env["REQUEST_METHOD"],
                                  env["RAW_URI"])
        finally:
            slot[IN_FLIGHT] -= 1
            if result is not None and type(result) is not list:
                close = getattr(result, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        ctx.log.exception("error closing the app's response iterable")
            if stream is not EMPTY:
                stream.conn = None
        duration = perf_counter() - start
        ctx.record(self.code, duration)
        if ctx.access is not None:
            ctx.access(env, self.code, self.nbytes, duration)
        ctx.served += 1
        if ctx.served == ctx.max_requests:
            ctx.on_max_requests()
        if not self.keep or ctx.stopping:
            return False
        if stream is not EMPTY and not stream.complete:
            return self.drain(stream)
        return True

    def _send_quietly(self, data: bytes) -> None:
        try:
            self._sendall(data)
            self.sent = True
        except OSError:
            self.broken = True

    # -- WSGI --

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def build_head(self, length: int | None) -> bytes:
        """The header block; `length` is the whole body's size when known (we then add Content-Length)."""
        status = self.status
        if status is None:
            raise AssertionError("the app did not call start_response")
        prefix, code, declared, keep_ok, ends, bodyless = head_entry(status, self.headers)
        self.code = code
        self.bodyless = bodyless
        keep = self.keep and keep_ok and not self.ctx.stopping
        if keep and self.stream.expect and not self.stream.complete:
            keep = False  # we never asked for the body ("100 Continue"): the client may or may not send it
        now = _time()
        if int(now) != CLOCK.second:
            CLOCK.update(now)
        if declared >= 0 and keep and not self.http10:  # the common case: the app gave Content-Length
            self.remaining = declared
            self.keep = True
            return prefix + getattr(CLOCK, ends)
        parts = [prefix]
        if bodyless:
            declared = -1
        elif declared < 0 and not self.head:
            if length is not None:
                declared = length
                parts.append(b"Content-Length: %d\r\n" % length)
            elif not self.http10:
                self.chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                keep = False  # HTTP/1.0 without a length: the end of the body is the close
        self.remaining = declared
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif self.http10:
            parts.append(b"Connection: keep-alive\r\n")
        self.keep = keep
        parts.append(getattr(CLOCK, ends))
        return b"".join(parts)

    def write_list(self, result: list[bytes]) -> None:
        body = result[0] if len(result) == 1 else b"".join(result)
        if type(body) is not bytes:
            body = b"".join((body,))  # bytes-like accepted; anything else raises TypeError
        head = self.build_head(None if self.head else len(body))
        self.sent = True
        if self.head or self.bodyless or not body:
            self.sendall(head)
            self.keep = self.keep and (self.remaining <= 0 or self.head or self.bodyless)
            return
        remaining = self.remaining
        if remaining >= 0 and len(body) != remaining:
            if len(body) > remaining:
                body = body[:remaining]
            else:
                self.keep = False
        self.nbytes = len(body)
        if len(body) < SMALL_BODY:
            self.sendall(head + body)
        else:
            self.sendall(head)
            self.sendall(body)

    def write(self, data: bytes) -> None:  # noqa: C901
        """The write() callable of start_response, and each item of a streamed response."""
        if type(data) is not bytes:
            data = b"".join((data,))
        if not self.sent:
            head = self.build_head(None)
            self.sent = True
            if self.head or self.bodyless:
                self.sendall(head)
                return
        elif self.head or self.bodyless:
            return
        else:
            head = b""
        if not data:
            if head:
                self.sendall(head)
            return
        if self.chunked:
            frame = b"%x\r\n" % len(data)
            if len(data) < SMALL_BODY:
                self.sendall(b"".join((head, frame, data, b"\r\n")))
            else:
                self.sendall(head + frame)
                self.sendall(data)
                self.sendall(b"\r\n")
            self.nbytes += len(data)
            return
        remaining = self.remaining
        if remaining >= 0:
            if len(data) > remaining:
                data = data[:remaining]
            self.remaining = remaining - len(data)
        self.nbytes += len(data)
        if head:
            if len(data) < SMALL_BODY:
                self.sendall(head + data)
                return
            self.sendall(head)
        if data:
            self.sendall(data)

    def write_iter(self, result: Any) -> None:
        write = self.write
        for data in result:
            if data:
                write(data)
        if not self.sent:
            self.sendall(self.build_head(None if self.head else 0))
            self.sent = True
        elif self.chunked and not self.head and not self.bodyless:
            self.sendall(b"0\r\n\r\n")
        elif self.remaining > 0 and not self.head and not self.bodyless:
            self.keep = False  # shorter than the app's Content-Length: the client would wait for more

    def write_file(self, wrapper: FileWrapper) -> None:
        filelike = wrapper.filelike
        try:
            fd = filelike.fileno()
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self.write_iter(wrapper)
            return
        size = max(0, info.st_size - offset)
        head = self.build_head(None if self.head else size)
        self.sent = True
        self.sendall(head)
        if self.head or self.bodyless:
            return
        count = size if self.remaining < 0 else min(size, self.remaining)
        if count < self.remaining:
            self.keep = False
        if count:
            try:
                self._sendfile(fd, offset, count)
            except OSError as exc:
                self.broken = True
                raise ClientDisconnected(f"sendfile failed: {exc}") from exc
            self.nbytes = count

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
        self._send_quietly(error_response(status, REASONS.get(status, "Error")))
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
