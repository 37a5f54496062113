"""Writing one response: start_response, the header block, the body (list, iterable, file), and the socket I/O.

Split from `connection` (which reads requests and runs the keep-alive loop) because writing is the larger half
and has rules of its own. `ResponseWriter` is the base class of `Connection`: it holds the per-response state
in slots and the I/O primitives the worker classes override (`_recv`, `_sendall`, `_sendfile`).

Hot-path rules kept here: one sendall per response when the app returns a list (header block and body joined;
bodies of 64 KiB or more go in a second send rather than being copied), the header block built as one str and
encoded once and cached per (status, headers) in the worker's `HeadCache`, the Date/Server tail from the
worker's `Clock`, no per-request syscalls besides send.

Response framing: the app's Content-Length when given (a longer body is cut, a shorter one closes the
connection); else, when the app returned a list, we compute Content-Length; else chunked on HTTP/1.1 and
close-delimited on HTTP/1.0. HEAD, 1xx, 204 and 304 responses never carry a body. Every response after which we
close carries `Connection: close`.
"""

from __future__ import annotations

import io
import os
import stat
from time import time as _time
from typing import TYPE_CHECKING, Any

from forkserve.http.body import ClientDisconnected
from forkserve.http.response import FileWrapper

if TYPE_CHECKING:
    import _socket

    from forkserve.http.context import Context

SMALL_BODY = 65536  # below this the body is copied behind the header block: one send


class ResponseWriter:
    __slots__ = ("bodyless", "broken", "chunked", "code", "ctx", "head", "headers", "http10", "keep", "nbytes",
                 "remaining", "sent", "sock", "status", "stream")

    ctx: Context
    sock: _socket.socket
    status: str | None
    headers: Any
    sent: bool  # the header block went out
    keep: bool  # the connection may carry another request after this response
    chunked: bool
    head: bool  # a HEAD request
    http10: bool
    bodyless: bool  # 1xx, 204, 304
    broken: bool  # a socket error happened under the app: no 500, just close
    code: int
    nbytes: int
    remaining: int  # body bytes still allowed by the app's Content-Length (-1: no limit)
    stream: Any  # wsgi.input of the request being answered

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
        ctx = self.ctx
        prefix, code, declared, keep_ok, ends, bodyless = ctx.heads.head(status, self.headers)
        self.code = code
        self.bodyless = bodyless
        keep = self.keep and keep_ok and not ctx.stopping
        if keep and self.stream.expect and not self.stream.complete:
            keep = False  # we never asked for the body ("100 Continue"): the client may or may not send it
        clock = ctx.clock
        now = _time()
        if int(now) != clock.second:
            clock.update(now)
        if declared >= 0 and keep and not self.http10:  # the common case: the app gave Content-Length
            self.remaining = declared
            self.keep = True
            return prefix + getattr(clock, ends)
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
        parts.append(getattr(clock, ends))
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

    def write(self, data: bytes) -> None:
        """The write() callable of start_response, and each item of a streamed response."""
        if type(data) is not bytes:
            data = b"".join((data,))
        if self.sent:
            if self.head or self.bodyless:
                return
            head = b""
        else:
            head = self.build_head(None)
            self.sent = True
            if self.head or self.bodyless:
                self.sendall(head)
                return
        if not data:
            if head:
                self.sendall(head)
        elif self.chunked:
            self._write_chunk(head, data)
        else:
            self._write_plain(head, data)

    def _write_chunk(self, head: bytes, data: bytes) -> None:
        frame = b"%x\r\n" % len(data)
        if len(data) < SMALL_BODY:
            self.sendall(b"".join((head, frame, data, b"\r\n")))
        else:
            self.sendall(head + frame)
            self.sendall(data)
            self.sendall(b"\r\n")
        self.nbytes += len(data)

    def _write_plain(self, head: bytes, data: bytes) -> None:
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
