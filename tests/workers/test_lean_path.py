"""The caches and shortcuts of the lean request path keep the exact behaviour of the slow path."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from email.utils import formatdate

from forkserve.http.response import http_date
from tests.workers.conftest import closed_by_peer, read_responses, request
from tests.workers.test_stopping_connection import PlainConnection, env, stopping_context

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def test_http_date_is_imf_fixdate() -> None:
    seconds = [0, 784111777, 951782400, 2**31 - 1] + [random.randint(0, 4 * 10**9) for _ in range(2000)]
    for second in seconds:
        assert http_date(second) == formatdate(second, usegmt=True)


def lean_context(app):  # type: ignore[no-untyped-def]
    """One worker's context: its caches live as long as it, across connections."""
    ctx = stopping_context(keepalive=2.0)
    ctx.stopping = False
    ctx.app = app
    ctx.log = logging.getLogger("tests.lean_path")
    return ctx


def serve_once(ctx, raw: bytes) -> bytes:  # type: ignore[no-untyped-def]
    server, client = socket.socketpair()
    with client:
        client.sendall(raw)
        client.shutdown(socket.SHUT_WR)
        PlainConnection(ctx, server, env()).serve()
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    return data


def test_cached_header_block_follows_a_mutated_headers_list() -> None:
    headers = [("Content-Length", "2"), ("X-A", "1")]

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", headers)
        return [b"ok"]

    ctx = lean_context(app)
    first = serve_once(ctx, GET)
    headers[1] = ("X-A", "2")  # the same list object, changed in place
    headers.append(("X-B", "3"))
    second = serve_once(ctx, GET)
    assert b"\r\nX-A: 1\r\n" in first and b"X-B" not in first
    assert b"\r\nX-A: 2\r\n" in second and b"\r\nX-B: 3\r\n" in second


def test_bad_header_after_a_cached_good_one_is_still_rejected() -> None:
    value = ["fine"]

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Length", "2"), ("X-V", value[0])])
        return [b"ok"]

    ctx = lean_context(app)
    assert serve_once(ctx, GET).startswith(b"HTTP/1.1 200")
    value[0] = "evil\r\nSet-Cookie: x=1"
    reply = serve_once(ctx, GET)
    assert reply.startswith(b"HTTP/1.1 500")
    assert b"Set-Cookie" not in reply


def test_headers_given_as_lists_or_a_generator() -> None:
    def lists(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [["Content-Length", "2"], ["X-L", "1"]])  # unhashable: not cached
        return [b"ok"]

    def generator(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", (pair for pair in [("Content-Length", "2"), ("X-G", "1")]))
        return [b"ok"]

    with_lists, with_generator = lean_context(lists), lean_context(generator)
    for _ in range(2):
        assert b"\r\nX-L: 1\r\n" in serve_once(with_lists, GET)
        assert b"\r\nX-G: 1\r\n" in serve_once(with_generator, GET)


def test_same_headers_different_framing() -> None:
    """One cached entry serves HTTP/1.1, HTTP/1.0 and HEAD, each with its own framing."""
    headers = [("Content-Type", "text/plain")]

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", headers)
        return [b"hello"]

    ctx = lean_context(app)
    http11 = serve_once(ctx, GET)
    http10 = serve_once(ctx, b"GET / HTTP/1.0\r\n\r\n")
    head = serve_once(ctx, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"\r\nContent-Length: 5\r\n" in http11 and http11.endswith(b"\r\n\r\nhello")
    assert b"\r\nContent-Length: 5\r\n" in http10 and b"Connection: close" in http10
    assert b"Content-Length" not in head and head.endswith(b"\r\n\r\n")


def test_gevent_many_connections_reuse_handlers(start_worker) -> None:  # type: ignore[no-untyped-def]
    """More connections than parked handler greenlets, sequential and concurrent, keep-alive and close."""
    worker = start_worker(worker_class="gevent")
    for _ in range(60):
        assert request(worker, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").status == 200
    failures: list[BaseException] = []

    def client() -> None:
        try:
            with worker.connect() as sock:
                for _ in range(5):
                    sock.sendall(GET)
                    assert read_responses(sock)[0].body == b"hello"
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert worker.alive()


def test_gevent_first_request_timeout(start_worker) -> None:  # type: ignore[no-untyped-def]
    """A client that connects and sends nothing is closed after `timeout` (the sweeper, not a timer per wait)."""
    worker = start_worker(worker_class="gevent", timeout=1.0, keepalive=0.3)
    with worker.connect() as sock:
        started = time.monotonic()
        assert closed_by_peer(sock, timeout=5)
        assert 0.9 <= time.monotonic() - started < 3.0
