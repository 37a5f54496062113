"""The request path while the worker is stopping, driven directly on a socket pair (no process, no timing)."""

from __future__ import annotations

import socket
import sys

from forkserve.http.connection import Connection
from forkserve.http.context import Context

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class PlainConnection(Connection):
    __slots__ = ()

    def _recv(self, n: int, timeout: float) -> bytes:
        self.sock.settimeout(timeout or None)
        return self.sock.recv(n)

    def _sendall(self, data: bytes) -> None:
        self.sock.sendall(data)


def hello(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def stopping_context(keepalive: float) -> Context:
    ctx = Context(hello, [0] * 32, lambda status, duration: None, None, keepalive=keepalive, timeout=5.0,
                  limit_line=8190, limit_fields=100, limit_field=8190, access=None, max_requests=0,
                  on_max_requests=lambda: None)
    ctx.stopping = True
    return ctx


def env() -> dict[str, object]:
    return {"SERVER_NAME": "x", "SERVER_PORT": "1", "SCRIPT_NAME": "", "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "REMOTE_ADDR": "", "REMOTE_PORT": ""}


def test_a_fresh_connection_on_a_stopping_worker_is_still_answered() -> None:
    """Regression: a connection accepted just before TERM looked idle and was closed unanswered."""
    server, client = socket.socketpair()
    with client:
        client.sendall(GET)  # arrives after the worker decided to stop
        PlainConnection(stopping_context(keepalive=2.0), server, env()).serve()
        reply = client.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in reply.lower()
