"""Response pieces that are computed once and reused: status lines, the Date/Server tail, wsgi.file_wrapper."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

SERVER = "forkserve"
SERVER_LINE = f"Server: {SERVER}\r\n"

_STATUS: dict[str, tuple[str, int]] = {}  # app status string -> ("HTTP/1.1 200 OK\r\n", 200); bounded


def status_entry(status: str) -> tuple[str, int]:
    """Validate the app's status string once; cache "HTTP/1.1 <status>\\r\\n" and the numeric code."""
    entry = _STATUS.get(status)
    if entry is not None:
        return entry
    if type(status) is not str:
        raise TypeError(f"status must be str, not {type(status).__name__}")
    code_text = status[:3]
    if (len(status) < 4 or status[3] != " " or not code_text.isdigit() or not code_text.isascii()
            or int(code_text) < 100 or "\r" in status or "\n" in status):
        raise ValueError(f"invalid status {status!r}: want '<3 digits> <reason>'")
    entry = (f"HTTP/1.1 {status}\r\n", int(code_text))
    if len(_STATUS) < 512:
        _STATUS[status] = entry
    return entry


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(second: int) -> str:
    """IMF-fixdate (RFC 9110), "Sun, 06 Nov 1994 08:49:37 GMT"; English names whatever the locale. Written out
    here rather than email.utils.formatdate: that import costs a sync worker ~30 modules and ~2 MB."""
    t = time.gmtime(second)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


class _Clock:
    """Date header and access-log timestamp, formatted at most once per second."""

    __slots__ = ("blank_end", "date", "date_end", "end", "second", "server_end", "stamp", "tail")

    def __init__(self) -> None:
        self.second = -1
        self.date = self.tail = self.stamp = ""
        # the end of a header block as bytes: Date and/or Server (unless the app set them), blank line
        self.end = self.date_end = b""
        self.server_end = f"{SERVER_LINE}\r\n".encode("latin-1")
        self.blank_end = b"\r\n"

    def update(self, now: float) -> None:
        second = int(now)
        self.second = second
        self.date = f"Date: {http_date(second)}\r\n"
        self.tail = self.date + SERVER_LINE
        self.end = f"{self.tail}\r\n".encode("latin-1")
        self.date_end = f"{self.date}\r\n".encode("latin-1")
        self.stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))


CLOCK = _Clock()


def date_tail() -> str:
    """"Date: ...\\r\\nServer: forkserve\\r\\n" for the current second."""
    now = time.time()
    if int(now) != CLOCK.second:
        CLOCK.update(now)
    return CLOCK.tail


def error_response(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{date_tail()}\r\n{body}").encode("latin-1")


class FileWrapper:
    """wsgi.file_wrapper. When `filelike` is a regular file with a fileno, the connection sends it with
    sendfile(2) from its current position; otherwise it is iterated in `blksize` blocks."""

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
