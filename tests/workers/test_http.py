"""The request path through real worker processes: both worker classes, TCP and unix listeners."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from forkserve.channel import CONNECTIONS, IN_FLIGHT
from tests.workers.conftest import closed_by_peer, read_responses, request, wait_until

CLASSES = ["sync", "gevent"]
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize("unix", [False, True])
def test_hello(start_worker, worker_class, unix):
    worker = start_worker(worker_class=worker_class)
    response = request(worker, GET, unix=unix)
    assert response.status == 200
    assert response.body == b"hello"
    assert response.headers["server"] == "forkserve"
    assert response.headers["date"].endswith(" GMT")
    if worker_class == "sync":
        assert response.headers["connection"] == "close"
    else:
        assert "connection" not in response.headers


@pytest.mark.parametrize("worker_class", CLASSES)
def test_environ(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:environ_app")
    raw = (b"GET /a%20b/c%2Fd?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
           b"X_Smuggle: no\r\nContent-Type: text/x\r\n\r\n")
    env = dict(line.split("=", 1) for line in request(worker, raw).body.decode("latin-1").splitlines())
    assert env["PATH_INFO"] == "/a b/c/d"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["RAW_URI"] == "/a%20b/c%2Fd?x=1&y=%20"
    assert env["SCRIPT_NAME"] == ""
    assert env["HTTP_X_DUP"] == "1,2"
    assert "HTTP_X_SMUGGLE" not in env
    assert env["CONTENT_TYPE"] == "text/x"
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["HTTP_HOST"] == "example"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(worker.address[1])
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_wsgiref_validator_is_happy(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:validated")
    for raw in (GET, b"POST /p?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"):
        response = request(worker, raw)
        assert response.status == 200, response.body
        assert response.body.startswith(b"valid:")
    assert worker.alive()
    wait_until(lambda: worker.end.counters().requests == 3, what="three responses counted")
    assert worker.end.counters().by_status_class[4] == 0  # no 500 anywhere


def test_keepalive_and_pipelining(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:echo")
    with worker.connect() as sock:
        for i in range(3):  # sequential keep-alive
            sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            (response,) = read_responses(sock)
            assert response.body == b"GET /k%d  0:" % i
        # pipelined: three requests in one send (one with a body), answered in order
        sock.sendall(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"POST /p2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /p3?z HTTP/1.1\r\nHost: t\r\n\r\n")
        responses = read_responses(sock, 3)
        assert [r.body for r in responses] == [b"GET /p1  0:", b"POST /p2  5:hello", b"GET /p3 z 0:"]
    counters = wait_until(lambda: (c := worker.end.counters()).connections == 0 and c, what="connection closed")
    assert counters.requests == 6
    assert counters.by_status_class[1] == 6
    assert counters.in_flight == 0


def test_keepalive_idle_timeout(start_worker):
    worker = start_worker(worker_class="gevent", keepalive=0.3)
    with worker.connect() as sock:
        sock.sendall(GET)
        read_responses(sock)
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=5)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("worker_class", CLASSES)
def test_http10(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:generator")
    with worker.connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        (response,) = read_responses(sock)
        assert response.body == b"part0;part1;part2;"
        assert response.headers["connection"] == "close"
        assert "transfer-encoding" not in response.headers
        assert closed_by_peer(sock)


def test_http10_keepalive(start_worker):
    worker = start_worker(worker_class="gevent")
    with worker.connect() as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            (response,) = read_responses(sock)
            assert response.headers["connection"] == "keep-alive"
            assert response.body == b"hello"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_chunked_response_and_request(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:generator")
    response = request(worker, GET)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.body == b"part0;part1;part2;"
    worker2 = start_worker(worker_class=worker_class, module="wapps:echo")
    raw = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    assert request(worker2, raw).body == b"POST /c  11:hello world"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_readline_and_iteration(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:lines")
    body = b"first line\n" + b"x\n" * 1000 + b"tail"
    raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert request(worker, raw).body == b"11|first line|1001"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_expect_100_continue(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    with worker.connect() as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        (response,) = read_responses(sock)
        assert response.body == b"POST /e  4:body"


def test_expect_100_not_sent_when_body_unread(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:ignore_body")
    with worker.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        (response,) = read_responses(sock)
        assert response.status == 200
        assert response.body == b"ignored"
        assert response.headers["connection"] == "close"  # we never asked for the body: close


def test_unread_body_is_drained(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:ignore_body")
    with worker.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"z" * 100000 + GET)
        responses = read_responses(sock, 2)
        assert [r.body for r in responses] == [b"ignored", b"ignored"]


@pytest.mark.parametrize("worker_class", CLASSES)
def test_head(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class)
    with worker.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        (response,) = read_responses(sock, head=True)
        assert response.status == 200
        assert response.headers["content-length"] == "5"
        if worker_class == "gevent":  # the connection is still usable: no stray body bytes
            sock.sendall(GET)
            assert read_responses(sock)[0].body == b"hello"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_large_streamed_upload_bounded_memory(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:stream_upload")
    size = 8 * 1024 * 1024
    payload = os.urandom(1024) * (size // 1024)
    with worker.connect(timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        sock.sendall(payload)
        (response,) = read_responses(sock)
    total, digest, grew_kb = response.body.split()
    assert int(total) == size
    assert digest.decode() == hashlib.sha256(payload).hexdigest()
    assert int(grew_kb) < 2048, f"peak RSS grew by {int(grew_kb)} KiB while streaming 8 MiB"


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize("path", ["/file", "/bytesio"])
def test_file_wrapper(start_worker, tmp_path, worker_class, path):
    data = os.urandom(300_000)
    target = tmp_path / "blob.bin"
    target.write_bytes(data)
    worker = start_worker(worker_class=worker_class, module="wapps:files")
    response = request(worker, b"GET %s?%s HTTP/1.1\r\nHost: t\r\n\r\n" % (path.encode(), str(target).encode()))
    assert response.status == 200
    assert response.body == data
    if path == "/file":
        assert response.headers["content-length"] == str(len(data))


@pytest.mark.parametrize("worker_class", CLASSES)
def test_app_exception_gives_500_and_worker_lives(start_worker, tmp_path, worker_class):
    log = tmp_path / "error.log"
    worker = start_worker(worker_class=worker_class, module="wapps:fail", error_log=str(log))
    for _ in range(2):
        response = request(worker, GET)
        assert response.status == 500
        assert response.headers["connection"] == "close"
    assert worker.alive()
    wait_until(lambda: "RuntimeError: boom (on purpose)" in log.read_text(), what="traceback in the error log")
    assert "Traceback" in log.read_text()
    wait_until(lambda: worker.end.counters().by_status_class[4] == 2, what="two 5xx counted")


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: t\n\n", 400),
    (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
])
def test_malformed_and_limits(start_worker, worker_class, raw, status):
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    with worker.connect() as sock:
        sock.sendall(raw)
        (response,) = read_responses(sock)
        assert response.status == status, response.body
        assert response.headers["connection"] == "close"
        assert closed_by_peer(sock)
    assert request(worker, GET).status == 200  # still serving, on a new connection
    wait_until(lambda: worker.end.counters().requests == 2, what="both responses counted")
    assert worker.end.counters().by_status_class[1] == 1  # the app saw only the good request
    assert worker.end.counters().by_status_class[3] == 1


def test_malformed_after_good_pipelined_request(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:echo")
    with worker.connect() as sock:
        sock.sendall(GET + b"BROKEN\r\n\r\n")
        first, second = read_responses(sock, 2)
        assert first.status == 200
        assert second.status == 400


@pytest.mark.parametrize("worker_class", CLASSES)
def test_access_log(start_worker, tmp_path, worker_class):
    log = tmp_path / "access.log"
    worker = start_worker(worker_class=worker_class, access_log=str(log))
    request(worker, b'GET /x?y=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: te"st\r\n\r\n')
    line = wait_until(lambda: log.exists() and log.read_text(), what="an access log line")
    assert line.count("\n") == 1
    assert line.startswith('127.0.0.1 - - [')
    assert '] "GET /x?y=1 HTTP/1.1" 200 5 "-" "te\\"st" ' in line
    float(line.split()[-1])


@pytest.mark.parametrize("worker_class", CLASSES)
def test_counters_move(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:slow")
    with worker.connect() as sock:
        sock.sendall(b"GET /?0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until(lambda: worker.end.slot[IN_FLIGHT] == 1, what="in-flight 1")
        assert worker.end.slot[CONNECTIONS] == 1
        read_responses(sock)
    counters = wait_until(lambda: (c := worker.end.counters()).connections == 0 and c, what="connection closed")
    assert counters.requests == 1
    assert counters.in_flight == 0
    assert counters.duration_us >= 400_000


def test_worker_connections_many_clients(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:slow", worker_connections=50)
    socks = [worker.connect() for _ in range(20)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(b"GET /?0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    for sock in socks:
        assert read_responses(sock)[0].body == b"slow done"
        sock.close()
    assert time.monotonic() - started < 5  # concurrent, not 20 x 0.5 s


def test_socket_left_open_does_not_block_sync_worker(start_worker):
    worker = start_worker(worker_class="sync", timeout=1.0)
    idle = worker.connect()  # connects and never sends: the worker gives up after `timeout`
    try:
        time.sleep(0.1)
        assert request(worker, GET).status == 200
    finally:
        idle.close()


def test_tcp_nodelay_on_accepted_sockets(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:hello")
    with worker.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        for _ in range(20):
            sock.sendall(GET)
            read_responses(sock)
        assert time.monotonic() - started < 0.5  # no 40 ms delayed-ACK stall per response
