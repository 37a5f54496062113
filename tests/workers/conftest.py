"""Worker fixtures: a worker forked straight from the test (no master), real listeners, bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httptools
import pytest

from forkserve import channel
from forkserve.config.binds import parse_bind
from forkserve.spec import AppSpec
from tests.helpers import wait_until

APPS = Path(__file__).parent / "apps"


def make_spec(**overrides: Any) -> AppSpec:
    base = AppSpec(
        name="t", revision="r1", module="wapps:hello", binds=(parse_bind("127.0.0.1:0"),), workers=1,
        worker_class="sync", worker_connections=100, timeout=10.0, boot_timeout=10.0, graceful_timeout=5.0,
        max_requests=0, max_requests_jitter=0, max_surge=1, max_unavailable=0, keepalive=2.0, backlog=64,
        unix_socket_mode=0o660, chdir=None, pythonpath=(str(APPS),), env=(), limit_request_line=4094,
        limit_request_fields=100, limit_request_field_size=8190, access_log=None, error_log="-",
        log_level="info")
    return replace(base, **overrides)


@dataclass
class Worker:
    pid: int
    end: channel.MasterEnd
    address: tuple[str, int]
    unix_path: str
    events: list[dict[str, str]] = field(default_factory=list)
    status: int | None = None

    def poll_events(self) -> list[dict[str, str]]:
        new, _closed = self.end.read_events()
        self.events.extend(new)
        return self.events

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, str]:
        return wait_until(lambda: next((e for e in self.poll_events() if e["event"] == name), None), timeout,
                          what=f"event {name!r}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        def done() -> bool:
            if self.status is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = status
            return self.status is not None
        wait_until(done, timeout, what=f"worker {self.pid} to exit")
        assert self.status is not None
        return os.waitstatus_to_exitcode(self.status)

    def alive(self) -> bool:
        if self.status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.status = status
            return False
        return True

    def connect(self, unix: bool = False, timeout: float = 10.0) -> socket.socket:
        if unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.unix_path)
        else:
            sock = socket.create_connection(self.address, timeout=timeout)
        return sock

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _pid, self.status = os.waitpid(self.pid, 0)
        self.end.close()


def fork_worker(spec: AppSpec, listeners: list[socket.socket], master_pid: int | None = None
                ) -> tuple[int, channel.MasterEnd]:
    master_end, worker_end, _region = channel.create()
    pid = os.fork()
    if pid == 0:
        try:
            from forkserve.workers.base import run

            run(spec, listeners, worker_end, master_pid if master_pid is not None else os.getppid())
        finally:
            os._exit(70)
    os.close(worker_end.write_fd)
    return pid, master_end


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []
    sockets: list[socket.socket] = []

    def start(wait_ready: bool = True, **overrides: Any) -> Worker:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(64)
        unix_path = str(tmp_path / f"w{len(started)}.sock")
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(unix_path)
        unix.listen(64)
        sockets.extend((tcp, unix))
        pid, end = fork_worker(make_spec(**overrides), [tcp, unix])
        worker = Worker(pid, end, tcp.getsockname(), unix_path)
        started.append(worker)
        if wait_ready:
            worker.wait_event("ready")
        return worker

    yield start
    for worker in started:
        worker.kill()
    for sock in sockets:
        sock.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[str, str]]


class _Collector:
    def __init__(self) -> None:
        self.done: list[Response] = []
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.open = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = bytearray()
        self.open = True

    def on_headers_complete(self) -> None:
        self.open = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.open = False
        self.done.append(Response(self.parser.get_status_code(), dict(self.headers), bytes(self.body),
                                  self.headers))


def _read_head(sock: socket.socket) -> Response:
    """A response to HEAD has no body whatever its headers say: read the header block only."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise AssertionError("connection closed before the response to HEAD")
        buffer += data
    block, rest = buffer.split(b"\r\n\r\n", 1)
    assert rest == b"", f"bytes after the header block of a HEAD response: {rest!r}"
    lines = block.decode("latin-1").split("\r\n")
    pairs = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])]
    return Response(int(lines[0].split()[1]), dict(pairs), b"", pairs)


def read_responses(sock: socket.socket, count: int = 1, head: bool = False) -> list[Response]:
    """Read `count` complete responses with httptools' response parser (pipelined ones too)."""
    if head:
        return [_read_head(sock) for _ in range(count)]
    collector = _Collector()
    while len(collector.done) < count:
        data = sock.recv(65536)
        if not data:
            if collector.open and "content-length" not in dict(collector.headers):
                collector.on_message_complete()  # a close-delimited body ends here
            if len(collector.done) < count:
                raise AssertionError(f"connection closed after {len(collector.done)} responses")
            break
        collector.parser.feed_data(data)
    return collector.done[:count]


def request(worker: Worker, raw: bytes, unix: bool = False, head: bool = False) -> Response:
    with worker.connect(unix=unix) as sock:
        sock.sendall(raw)
        return read_responses(sock, 1, head=head)[0]


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
