"""wsgi.input: the request body, read from the socket only as the app reads it.

The parser appends decoded body bytes (chunked framing already removed by llhttp) to `buf`. When the app asks
for more than is buffered, `_fill` asks the connection for one more recv() (at most 64 KiB), which the parser
decodes into this stream (and possibly into the next pipelined request). So memory stays bounded by what the app
asks for: `read(65536)` in a loop over an 8 MB upload never holds more than about two recv buffers.

`read()` with no size, `readlines()` without a hint and `readline()` on a body without newlines read the whole
body, as the app asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class ClientDisconnected(OSError):
    """The client closed the connection before sending the whole request body."""


class InputStream:
    __slots__ = ("buf", "complete", "conn", "discard", "expect")

    def __init__(self, conn: Any, expect: bool) -> None:
        self.buf = bytearray()
        self.complete = False  # the parser has seen the end of this request's body
        self.conn = conn  # the Connection that can recv more; None once the response is done
        self.discard = False  # after the response: the parser drops further body bytes
        self.expect = expect  # "Expect: 100-continue" and no "100 Continue" sent yet

    def _fill(self) -> bool:
        """One more recv into the parser. False when no more body will come."""
        if self.complete or self.conn is None:
            return False
        self.conn.pull_body(self)
        return True

    def _take(self, n: int) -> bytes:
        buf = self.buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
            return data
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self.buf))
        while len(self.buf) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        start = 0
        while True:
            buf = self.buf
            i = buf.find(b"\n", start)
            if i >= 0:
                end = i + 1
                return self._take(end if size < 0 or end < size else size)
            if 0 <= size <= len(buf):
                return self._take(size)
            start = len(buf)
            if not self._fill():
                return self._take(len(self.buf))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class EmptyInput:
    """wsgi.input of a request without a body: one shared, stateless instance."""

    __slots__ = ()
    complete = True
    discard = False
    expect = False
    conn = None

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


EMPTY = EmptyInput()
