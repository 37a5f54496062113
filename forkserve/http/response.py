"""Response pieces computed once and reused: status lines, header blocks, the Date/Server tail, file_wrapper.

Why caches at all: rendering and validating an app's status and header list is most of the Python a small
response costs, and an app answers with the same few (status, headers) values over and over. Why owned objects
rather than module globals: a `Clock` and a `HeadCache` are created per worker (by its `Context`) and reached
through it, so nothing on the request path mutates module state, a test can build a fresh one, and what a
worker caches is visible from the object that owns it. Both are bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

SERVER = "forkserve"
SERVER_LINE = f"Server: {SERVER}\r\n"
STATUS_CACHE = 512  # distinct status strings whose validated status line is kept
HEADS_CACHE = 512  # distinct (status, headers) pairs whose rendered header block is kept

# render_head's result: (status line + the app's headers, code, the app's Content-Length or -1, keep-alive
# allowed by the app, the Clock attribute that ends the block, bodyless status)
Head = tuple[bytes, int, int, bool, str, bool]

# RFC 9110 §5.1 / §5.6.2: a field name is a token
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(second: int) -> str:
    """IMF-fixdate (RFC 9110), "Sun, 06 Nov 1994 08:49:37 GMT"; English names whatever the locale. Written out
    here rather than email.utils.formatdate: that import costs a sync worker ~30 modules and ~2 MB."""
    t = time.gmtime(second)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


class Clock:
    """Date header and access-log timestamp, formatted at most once per second (one per worker)."""

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

    def date_tail(self) -> str:
        """"Date: ...\\r\\nServer: forkserve\\r\\n" for the current second."""
        now = time.time()
        if int(now) != self.second:
            self.update(now)
        return self.tail


def error_response(status: int, reason: str, clock: Clock) -> bytes:
    body = f"{status} {reason}\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{clock.date_tail()}\r\n{body}").encode("latin-1")


def status_line(status: str) -> tuple[str, int]:
    """Validate the app's status string: ("HTTP/1.1 <status>\\r\\n", numeric code)."""
    if type(status) is not str:
        raise TypeError(f"status must be str, not {type(status).__name__}")
    code_text = status[:3]
    if (len(status) < 4 or status[3] != " " or not code_text.isdigit() or not code_text.isascii()
            or int(code_text) < 100 or "\r" in status or "\n" in status):
        raise ValueError(f"invalid status {status!r}: want '<3 digits> <reason>'")
    return f"HTTP/1.1 {status}\r\n", int(code_text)


def check_header(name: Any, value: Any) -> None:
    """A response header's name is a `str` token, its value a `str` (NUL, CR and LF: see render_head)."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"response header {name!r}: name and value must be str, not "
                        f"{type(name).__name__} and {type(value).__name__}")
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"response header name {name!r} is not a token (RFC 9110 §5.1)")


def render_head(line: str, code: int, headers: Any) -> Head:
    """Validate and render the app's headers once, behind its status line (see `Head`). A name that is not a
    `str` token (RFC 9110 §5.1) or a value that is not a `str` free of NUL, CR and LF raises (-> 500): the
    result is cached per (status, headers), so the checks run once per distinct header list, not per request."""
    declared = -1
    keep_ok = server = date = True
    parts = []
    for name, value in headers:
        check_header(name, value)
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
    if text.count("\n") != len(parts) or text.count("\r") != len(parts) or "\0" in text:
        raise ValueError("NUL, CR or LF inside a response header value")
    bodyless = code < 200 or code == 204 or code == 304
    if bodyless:
        declared = -1
    ends = ("end" if server else "date_end") if date else ("server_end" if server else "blank_end")
    return (line + text).encode("latin-1"), code, declared, keep_ok, ends, bodyless


class HeadCache:
    """Validated status lines and rendered header blocks of one worker, keyed by value (bounded)."""

    __slots__ = ("heads", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[str, tuple[str, int]] = {}
        self.heads: dict[Any, Head] = {}

    def status(self, status: str) -> tuple[str, int]:
        entry = self.statuses.get(status)
        if entry is None:
            entry = status_line(status)
            if len(self.statuses) < STATUS_CACHE:
                self.statuses[status] = entry
        return entry

    def head(self, status: str, headers: Any) -> Head:
        """render_head's result for this status and these headers; cached when they are hashable."""
        items = tuple(headers)
        key = (status, items)
        heads = self.heads
        try:
            entry = heads.get(key)
        except TypeError:  # a list or another unhashable thing among the headers: no caching
            return render_head(*self.status(status), items)
        if entry is None:
            entry = render_head(*self.status(status), items)
            if len(heads) >= HEADS_CACHE:
                heads.clear()
            heads[key] = entry
        return entry


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
