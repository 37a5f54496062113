"""The link between the master and one worker: a shared-memory slot plus an event pipe.

Created by the master *before* fork; both sides keep their half.

Shared slot (anonymous MAP_SHARED mmap, 8-byte unsigned ints, the worker is the only writer):
    HEARTBEAT   time.monotonic_ns() of the worker's last sign of life (CLOCK_MONOTONIC is system-wide)
    REQUESTS    requests answered
    STATUS_1XX .. STATUS_5XX  responses by status class
    IN_FLIGHT   requests being handled right now (busy when > 0)
    CONNECTIONS open client connections
    DURATION_US total request time in microseconds (for a mean; histogram buckets follow)
    BUCKETS     request-duration histogram: per-bucket (not cumulative) counts for DURATION_BUCKETS, +Inf last
    REQUEST_START  time.monotonic() at which the request being served started, as a double (a float store
                   costs less than an int's); 0.0: none
    REQUEST_LEN    length in bytes of that request's "METHOD target" (may exceed TEXT_BYTES: then truncated)
followed by TEXT_BYTES (256) bytes: "METHOD target" of that request, UTF-8 of the text as decoded (latin-1) from
the wire, cut at TEXT_BYTES.
Writing a counter is a memory store: nothing on the request path makes a syscall to the master, and reading a
slot never wakes the worker.

What a worker is serving is written by the request path (`http/connection.py`) before it calls the app: the text
(only when it differs from the text already there: a keep-alive client asking for the same URL again costs two
identity checks; the start is set to 0.0 while the text changes), its length, then the start time; when the
request ends, the start goes back to 0.0 if it is still this request's. A gevent worker serves many requests at
once: the slot names the one *started last* (O(1) per request; the oldest would need a structure of the requests
in flight). A worker that segfaults in a request's own
code does so while that request runs, usually before it yields to another greenlet; the master's crash line says
how many were in flight. So when a ready worker dies, the master reads its slot once more (it is shared memory: it
outlives the process) and logs what it was serving. A live worker's slot can be read mid-write: `serving()`
re-reads the start time and gives nothing when it moved.

Event pipe (worker -> master), one JSON object per line, only for rare events that must wake the master:
    {"event": "ready"}                     app imported, listening; may receive traffic
    {"event": "recycle"}                   max_requests reached: please start my replacement, then retire me
    {"event": "boot_error", "text": "..."} import failed; the text is the tail of the traceback
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time
from dataclasses import dataclass, field

HEARTBEAT, REQUESTS = 0, 1
STATUS_BASE = 2  # 2..6 for 1xx..5xx
IN_FLIGHT, CONNECTIONS, DURATION_US = 7, 8, 9
BUCKET_BASE = 10
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOTS = BUCKET_BASE + len(DURATION_BUCKETS) + 1  # the counters
REQUEST_START, REQUEST_LEN = SLOTS, SLOTS + 1
WORDS = SLOTS + 2
TEXT_OFFSET = 8 * WORDS
TEXT_BYTES = 256  # "METHOD target" of the request being served, truncated
SLOT_BYTES = TEXT_OFFSET + TEXT_BYTES
_MAX_EVENT = 3500  # below PIPE_BUF (4096) so each event is written atomically


@dataclass
class Counters:
    """A snapshot of one worker's slot, read by the master."""

    heartbeat_ns: int
    requests: int
    by_status_class: tuple[int, int, int, int, int]
    in_flight: int
    connections: int
    duration_us: int
    buckets: tuple[int, ...]


@dataclass(frozen=True)
class Serving:
    """The request a worker was serving (read from its slot)."""

    text: str  # "GET /report?id=7", printable ASCII (escaped), "..." appended when truncated
    started: float  # monotonic seconds


def _printable(raw: bytes, full_length: int) -> str:
    """The client's bytes, safe for a log line: what is not printable ASCII is escaped (\\xNN, as received)."""
    text = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" if ord(c) < 256 else "?"
                   for c in raw.decode("utf-8", "replace"))
    return text + "..." if full_length > len(raw) else text


@dataclass
class MasterEnd:
    """The master's half: read counters, drain events."""

    slot: memoryview
    read_fd: int
    text: memoryview | None = None  # the slot's TEXT_BYTES
    starts: memoryview[float] | None = None  # the slot's words as doubles (REQUEST_START)
    _buffer: bytes = field(default=b"")

    def heartbeat(self) -> float:
        """Monotonic seconds of the worker's last sign of life (one memory read: the master does it every wake)."""
        return self.slot[HEARTBEAT] / 1e9

    def counters(self) -> Counters:
        s = self.slot
        return Counters(
            heartbeat_ns=s[HEARTBEAT],
            requests=s[REQUESTS],
            by_status_class=(s[2], s[3], s[4], s[5], s[6]),
            in_flight=s[IN_FLIGHT],
            connections=s[CONNECTIONS],
            duration_us=s[DURATION_US],
            buckets=tuple(s[BUCKET_BASE:SLOTS]),
        )

    def serving(self) -> Serving | None:
        """What the worker is (or was, when it died) serving; None when idle or caught mid-write."""
        if self.text is None or self.starts is None:
            return None
        start = self.starts[REQUEST_START]
        if start == 0.0:
            return None
        length = self.slot[REQUEST_LEN]
        raw = bytes(self.text[: min(length, TEXT_BYTES)])
        if self.starts[REQUEST_START] != start:
            return None
        return Serving(_printable(raw, length), start)

    def read_events(self) -> tuple[list[dict[str, str]], bool]:
        """Drain the pipe without blocking. Returns (events, closed): closed once the worker's end is gone."""
        closed = False
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a worker is not trusted to write well-formed events; ignore garbage
            if isinstance(message, dict) and isinstance(message.get("event"), str):
                events.append(message)
        return events, closed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.read_fd)
        self.read_fd = -1


@dataclass
class WorkerEnd:
    """The worker's half. `slot` is a memoryview of 8-byte ints: `end.slot[REQUESTS] += 1` is the hot path;
    `text` the slot's bytes of "METHOD target" (written by `http.context.Context.show`), `starts` its words as
    doubles (`starts[REQUEST_START] = monotonic()`)."""

    slot: memoryview
    write_fd: int
    text: memoryview | bytearray = field(default_factory=lambda: bytearray(TEXT_BYTES))
    starts: memoryview[float] | list[float] = field(default_factory=lambda: [0.0] * WORDS)

    def heartbeat(self) -> None:
        self.slot[HEARTBEAT] = time.monotonic_ns()

    def send(self, event: str, **fields: str) -> None:
        data = json.dumps({"event": event, **fields}).encode()
        if len(data) > _MAX_EVENT:
            data = json.dumps({"event": event, **{k: v[-2000:] for k, v in fields.items()}}).encode()
        with contextlib.suppress(OSError):  # master gone: the worker notices through its parent check and exits
            os.write(self.write_fd, data + b"\n")

    def record(self, status: int, duration_s: float) -> None:
        """Count one answered request (called once per response)."""
        s = self.slot
        s[REQUESTS] += 1
        cls = status // 100
        if 1 <= cls <= 5:
            s[STATUS_BASE + cls - 1] += 1
        s[DURATION_US] += int(duration_s * 1_000_000)
        i = BUCKET_BASE
        for bound in DURATION_BUCKETS:
            if duration_s <= bound:
                break
            i += 1
        s[i] += 1


def create_for_zygote() -> tuple[MasterEnd, int, int]:
    """A channel for a worker that a preload zygote forks: the slot lives in a memfd (the zygote was forked
    before this slot existed, so an anonymous mapping could not reach it). Returns the master's end and the
    two fds (memfd, event pipe write end) to pass to the zygote; the caller closes them once passed."""
    memfd = os.memfd_create("forkserve-worker-slot", os.MFD_CLOEXEC)
    os.ftruncate(memfd, SLOT_BYTES)
    slot, text, starts = _views(mmap.mmap(memfd, SLOT_BYTES))
    slot[HEARTBEAT] = time.monotonic_ns()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    return MasterEnd(slot, read_fd, text, starts), memfd, write_fd


def _views(region: mmap.mmap) -> tuple[memoryview[int], memoryview[int], memoryview[float]]:
    """The slot's words (8-byte unsigned ints), its text bytes, and its words as doubles."""
    whole = memoryview(region)
    return whole[:TEXT_OFFSET].cast("Q"), whole[TEXT_OFFSET:SLOT_BYTES], whole[:TEXT_OFFSET].cast("d")


def worker_end_from_fds(memfd: int, write_fd: int) -> WorkerEnd:
    """The worker's end of a `create_for_zygote` channel, in the forked worker."""
    slot, text, starts = _views(mmap.mmap(memfd, SLOT_BYTES))
    os.close(memfd)
    return WorkerEnd(slot, write_fd, text, starts)


def create() -> tuple[MasterEnd, WorkerEnd, mmap.mmap]:
    """Make both ends before fork. The caller closes the other side's fd after fork."""
    region = mmap.mmap(-1, SLOT_BYTES)  # anonymous + MAP_SHARED: both processes see the same page
    slot, text, starts = _views(region)
    slot[HEARTBEAT] = time.monotonic_ns()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    return MasterEnd(slot, read_fd, text, starts), WorkerEnd(slot, write_fd, text, starts), region
