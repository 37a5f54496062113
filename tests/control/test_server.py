"""The control server in a hand-driven selector loop: modes, bad input, idle and foreign callers."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forkserve.control import protocol
from forkserve.control.protocol import Request
from forkserve.control.server import IDLE_TIMEOUT, ControlServer, ControlSocketError

LATER: list[Callable[[dict[str, object] | Exception], None]] = []  # replies owed by the "plan" command of the fixture


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    selector = selectors.DefaultSelector()
    LATER.clear()

    def dispatch(request: Request, respond: Callable[[dict[str, object] | Exception], None]) -> None:
        if request.command == "reload":
            raise RuntimeError("broken on purpose")
        if request.command == "plan":  # answered later, as a plan whose file validates in a child
            LATER.append(respond)
            return
        respond({"command": request.command, "fast": request.fast})

    srv = ControlServer(str(tmp_path / "run" / "control.sock"), dispatch, selector)
    srv.open()
    yield srv
    srv.close()
    selector.close()


def pump(srv: ControlServer, until: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out pumping the selector"
        for key, _ in srv.selector.select(0.02):
            key.data()


def exchange(srv: ControlServer, data: bytes) -> list[dict[str, object]]:
    """Send raw bytes, pump the loop, return every reply frame until the server closes or one arrives."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(srv.path)
    client.setblocking(False)
    client.sendall(data)
    decoder = protocol.Decoder()
    replies: list[dict[str, object]] = []
    closed = []

    def got() -> bool:
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            return False
        if not chunk:
            closed.append(True)
            return True
        replies.extend(decoder.feed(chunk))
        return bool(replies)

    try:
        pump(srv, got)
    finally:
        client.close()
    return replies


def test_modes(server: ControlServer) -> None:
    assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) == 0o700
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    path = server.path
    server.close()
    assert not os.path.exists(path)


def test_commands_and_errors_keep_the_server_serving(server: ControlServer) -> None:
    assert exchange(server, protocol.encode({"command": "stop", "fast": True})) == [
        {"ok": True, "result": {"command": "stop", "fast": True}}]
    bad = exchange(server, struct.pack(">I", protocol.MAX_FRAME + 1))
    assert bad[0]["ok"] is False and "exceeds" in str(bad[0]["error"])
    assert "not UTF-8 JSON" in str(exchange(server, struct.pack(">I", 3) + b"{{{")[0]["error"])
    assert "unknown command" in str(exchange(server, protocol.encode({"command": "__init__"}))[0]["error"])
    assert "broken on purpose" in str(exchange(server, protocol.encode({"command": "reload"}))[0]["error"])
    assert exchange(server, protocol.encode({"command": "status"}))[0]["ok"] is True
    pump(server, lambda: not server.connections)


def test_a_deferred_reply_keeps_order_and_the_connection_is_not_idle(server: ControlServer) -> None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(server.path)
    client.setblocking(False)
    client.sendall(protocol.encode({"command": "plan", "path": "/x.toml", "text": ""})
                   + protocol.encode({"command": "status"}))
    pump(server, lambda: LATER)
    assert exchange(server, protocol.encode({"command": "status"}))[0]["ok"] is True  # others are served
    server.tick(time.monotonic() + IDLE_TIMEOUT + 1)  # owed a reply: not idle
    assert len(server.connections) == 1
    with pytest.raises(BlockingIOError):
        client.recv(65536)  # the status asked after the plan waits for it
    LATER.pop()({"planned": True})
    decoder = protocol.Decoder()
    replies: list[dict[str, object]] = []

    def got() -> bool:
        with contextlib.suppress(BlockingIOError):
            replies.extend(decoder.feed(client.recv(65536)))
        return len(replies) == 2

    pump(server, got)
    assert replies[0] == {"ok": True, "result": {"planned": True}}
    assert replies[1]["ok"] is True and replies[1]["result"] == {"command": "status", "fast": False}
    client.close()


def test_a_client_that_half_closes_still_gets_its_late_reply(server: ControlServer) -> None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(server.path)
    client.sendall(protocol.encode({"command": "plan", "path": "/x.toml", "text": ""}))
    client.shutdown(socket.SHUT_WR)  # as `nc -N` and socat do
    pump(server, lambda: LATER)
    for key, _ in server.selector.select(0.05):  # the EOF is seen; the connection must not spin or close
        key.data()
    assert len(server.connections) == 1
    LATER.pop()({"planned": True})
    client.settimeout(5)
    data = b""
    while chunk := client.recv(65536):
        data += chunk
        pump(server, lambda: True)
    assert protocol.Decoder().feed(data) == [{"ok": True, "result": {"planned": True}}]
    pump(server, lambda: not server.connections)
    client.close()


def test_a_command_that_fails_later_answers_with_the_error(server: ControlServer) -> None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(server.path)
    client.sendall(protocol.encode({"command": "plan", "path": "/x.toml", "text": ""}))
    pump(server, lambda: LATER)
    LATER.pop()(RuntimeError("the validation went wrong"))
    client.settimeout(5)
    reply = protocol.Decoder().feed(client.recv(65536))[0]
    assert reply == {"ok": False, "error": "plan failed in the master: the validation went wrong"}
    client.close()


def test_silent_and_half_sent_clients_are_dropped(server: ControlServer) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(server.path)
    partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial.connect(server.path)
    partial.sendall(protocol.encode({"command": "status"})[:7])
    pump(server, lambda: len(server.connections) == 2)
    server.tick(time.monotonic() + IDLE_TIMEOUT / 2)
    assert len(server.connections) == 2
    server.tick(time.monotonic() + IDLE_TIMEOUT + 1)
    assert not server.connections
    assert exchange(server, protocol.encode({"command": "status"}))[0]["ok"] is True
    silent.close()
    partial.close()


def test_a_second_master_on_the_same_socket_is_refused(server: ControlServer) -> None:
    other = ControlServer(server.path, lambda r, respond: respond({}), server.selector)
    with pytest.raises(ControlSocketError, match="already listening"):
        other.open()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    selector = selectors.DefaultSelector()
    srv = ControlServer(str(path), lambda r: {}, selector)
    srv.open()
    srv.close()
    selector.close()


def test_a_shared_default_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "forkserve-0"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    selector = selectors.DefaultSelector()
    with pytest.raises(ControlSocketError, match="mode 0700"):
        ControlServer(str(shared / "x.sock"), lambda r: {}, selector).open()
    selector.close()


@pytest.fixture
def open_server() -> Iterator[ControlServer]:
    """A server in a directory anyone can traverse (pytest's tmp_path is private to root)."""
    base = tempfile.mkdtemp(prefix="forkserve-peercred-")
    os.chmod(base, 0o755)
    selector = selectors.DefaultSelector()
    srv = ControlServer(os.path.join(base, "run", "control.sock"), lambda r: {"obeyed": True}, selector)
    srv.open()
    yield srv
    srv.close()
    selector.close()
    shutil.rmtree(base)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a child as another uid")
def test_a_caller_with_another_uid_is_refused(open_server: ControlServer) -> None:
    server = open_server
    # The 0700 directory and the 0600 socket already keep other users out; open them up (test only) to reach
    # the second line of defence: the SO_PEERCRED check.
    os.chmod(os.path.dirname(server.path), 0o755)
    os.chmod(server.path, 0o666)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody
        code = 1
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            client.connect(server.path)
            client.sendall(protocol.encode({"command": "stop"}))
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            os.write(write_fd, data or b"<closed>")
            code = 0
        except BaseException as exc:
            os.write(write_fd, f"child error: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    reaped: list[int] = []

    def child_gone_and_forgotten() -> bool:
        # The server half-closes after its refusal; the client's own close reaches it on a later pass of the
        # loop, so the connection is forgotten a little after the child exits, not at once.
        if not reaped and os.waitpid(pid, os.WNOHANG)[0] == pid:
            reaped.append(pid)
        return bool(reaped) and not server.connections

    try:
        pump(server, child_gone_and_forgotten)
        answer = os.read(read_fd, 65536)
    finally:
        os.close(read_fd)
    replies = protocol.Decoder().feed(answer)
    assert replies and replies[0]["ok"] is False, answer
    assert "permission denied: uid 65534" in str(replies[0]["error"])
