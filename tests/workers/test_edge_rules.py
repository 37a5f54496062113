"""Trusted proxy headers, limit_request_body and response header validation, over real sockets, both worker classes.

Trusted vs untrusted peers: the worker trusts ["127.0.0.1"]; a client connecting from 127.0.0.1 is trusted, one
bound to 127.0.0.2 as its source address is not; a unix-socket client is always trusted. `wapps:environ_app`
answers the environ's str values as "KEY=value" lines.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.workers.conftest import Worker, read_responses, request

CLASSES = ["sync", "gevent"]
TRUSTED = ("127.0.0.1",)


def untrusted_request(worker: Worker, raw: bytes) -> tuple[int, bytes]:
    with socket.create_connection(worker.address, timeout=10.0, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(raw)
        response = read_responses(sock, 1)[0]
    return response.status, response.body


def environ_of(body: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in body.decode("latin-1").splitlines())


def get(*headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET /p HTTP/{version}", "Host: app.internal:8000", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


PROXIED = [
    # (what, headers, the environ entries the app must see from a trusted peer)
    ("X-Forwarded-Proto https", ["X-Forwarded-Proto: https"], {"wsgi.url_scheme": "https"}),
    ("X-Forwarded-Proto is case-insensitive", ["X-Forwarded-Proto: HTTPS"], {"wsgi.url_scheme": "https"}),
    ("X-Forwarded-Proto: the rightmost value (set by the proxy in front of us)",
     ["X-Forwarded-Proto: http, https"], {"wsgi.url_scheme": "https"}),
    ("X-Forwarded-For: one hop", ["X-Forwarded-For: 203.0.113.7"],
     {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": ""}),
    ("X-Forwarded-For: the rightmost untrusted hop, not the spoofable first entry",
     ["X-Forwarded-For: 6.6.6.6, 203.0.113.7, 127.0.0.1"], {"REMOTE_ADDR": "203.0.113.7"}),
    ("X-Forwarded-For: every hop trusted -> the leftmost", ["X-Forwarded-For: 127.0.0.1, 127.0.0.1"],
     {"REMOTE_ADDR": "127.0.0.1"}),
    ("X-Forwarded-For: IPv6 hop", ["X-Forwarded-For: 2001:db8::1"], {"REMOTE_ADDR": "2001:db8::1"}),
    ("X-Forwarded-For: a hop that is not an address stops the walk: the peer stays",
     ["X-Forwarded-For: 203.0.113.7, unknown"], {"REMOTE_ADDR": "127.0.0.1"}),
    ("X-Forwarded-Host", ["X-Forwarded-Host: www.example.com"],
     {"HTTP_HOST": "www.example.com", "SERVER_NAME": "www.example.com", "SERVER_PORT": "80"}),
    ("X-Forwarded-Host with https: the default port is left out of HTTP_HOST",
     ["X-Forwarded-Proto: https", "X-Forwarded-Host: www.example.com:443"],
     {"HTTP_HOST": "www.example.com", "SERVER_NAME": "www.example.com", "SERVER_PORT": "443",
      "wsgi.url_scheme": "https"}),
    ("X-Forwarded-Host and X-Forwarded-Port", ["X-Forwarded-Host: www.example.com", "X-Forwarded-Port: 8443"],
     {"HTTP_HOST": "www.example.com:8443", "SERVER_NAME": "www.example.com", "SERVER_PORT": "8443"}),
    ("X-Forwarded-Port alone rewrites the port of the request's Host", ["X-Forwarded-Port: 9000"],
     {"HTTP_HOST": "app.internal:9000", "SERVER_NAME": "app.internal", "SERVER_PORT": "9000"}),
    ("Forwarded: for, proto, host", ['Forwarded: for=203.0.113.7;proto=https;host=www.example.com'],
     {"REMOTE_ADDR": "203.0.113.7", "wsgi.url_scheme": "https", "HTTP_HOST": "www.example.com",
      "SERVER_NAME": "www.example.com", "SERVER_PORT": "443"}),
    ("Forwarded: quoted IPv6 node with a port", ['Forwarded: for="[2001:db8::1]:4711"'],
     {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": "4711"}),
    ("Forwarded: the element of the rightmost untrusted hop gives proto and host",
     ['Forwarded: for=6.6.6.6;proto=http, for=203.0.113.7;proto=https;host=a.example, for=127.0.0.1;proto=http'],
     {"REMOTE_ADDR": "203.0.113.7", "wsgi.url_scheme": "https", "HTTP_HOST": "a.example"}),
    ("Forwarded and X-Forwarded-Proto that agree", ["Forwarded: proto=https", "X-Forwarded-Proto: https"],
     {"wsgi.url_scheme": "https"}),
    ("Forwarded wins over X-Forwarded-For", ["Forwarded: for=203.0.113.9", "X-Forwarded-For: 203.0.113.7"],
     {"REMOTE_ADDR": "203.0.113.9"}),
]

PROXY_REFUSED = [
    # (what, headers): 400 from a trusted peer, the app never called
    ("conflicting schemes", ["X-Forwarded-Proto: https", "Forwarded: proto=http"]),
    ("an unknown scheme", ["X-Forwarded-Proto: gopher"]),
    ("a malformed Forwarded pair", ["Forwarded: for"]),
    ("an invalid forwarded host", ["X-Forwarded-Host: a b/c"]),
    ("an invalid X-Forwarded-Port", ["X-Forwarded-Port: 99999"]),
    ("a non-numeric X-Forwarded-Port", ["X-Forwarded-Port: https"]),
]


@pytest.mark.parametrize("worker_class", CLASSES)
def test_trusted_peer_forwarding_headers(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=TRUSTED)
    for what, headers, expected in PROXIED:
        response = request(worker, get(*headers))
        assert response.status == 200, what
        env = environ_of(response.body)
        assert {key: env.get(key) for key in expected} == expected, what


@pytest.mark.parametrize("worker_class", CLASSES)
def test_untrusted_peer_headers_change_nothing(start_worker, worker_class):
    """From 127.0.0.2 (not in the allow list) every row, conflicts included, is plain headers: 200, nothing set."""
    worker = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=TRUSTED)
    rows = [(what, headers) for what, headers, _ in PROXIED] + PROXY_REFUSED
    for what, headers in rows:
        status, body = untrusted_request(worker, get(*headers))
        assert status == 200, what
        env = environ_of(body)
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"], env["SERVER_NAME"]) == (
            "127.0.0.2", "http", "app.internal:8000", "127.0.0.1"), what
        assert env["SERVER_PORT"] == str(worker.address[1]), what
        assert "HTTP_X_FORWARDED_PROTO" in env or "HTTP_FORWARDED" in env or "HTTP_X_FORWARDED_FOR" in env \
            or "HTTP_X_FORWARDED_HOST" in env or "HTTP_X_FORWARDED_PORT" in env, what  # still plain headers


@pytest.mark.parametrize("worker_class", CLASSES)
def test_trusted_peer_bad_forwarding_headers_get_400(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=TRUSTED)
    for what, headers in PROXY_REFUSED:
        response = request(worker, get(*headers))
        assert (response.status, response.headers.get("connection")) == (400, "close"), what
        assert b"REQUEST_METHOD" not in response.body, f"the app was called: {what}"
        assert worker.alive(), what


@pytest.mark.parametrize("worker_class", CLASSES)
def test_allow_list_forms(start_worker, worker_class):
    """"*" trusts every peer; a CIDR trusts its range; unix-socket peers are trusted whatever the list says."""
    headers = get("X-Forwarded-Proto: https", "X-Forwarded-For: 203.0.113.7")
    everyone = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=("*",))
    env = environ_of(untrusted_request(everyone, headers)[1])
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")
    cidr = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=("127.0.0.0/30",))
    env = environ_of(untrusted_request(cidr, headers)[1])
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")
    nobody = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=("10.0.0.1",))
    env = environ_of(request(nobody, headers).body)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    env = environ_of(request(nobody, headers, unix=True).body)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")


@pytest.mark.parametrize("worker_class", ["gevent"])
def test_forwarding_is_per_request_on_a_keepalive_connection(start_worker, worker_class):
    """The trust decision is the connection's; what the headers set is each request's own."""
    worker = start_worker(worker_class=worker_class, module="wapps:environ_app", forwarded_allow_ips=TRUSTED)
    with worker.connect() as sock:
        sock.sendall(get("X-Forwarded-Proto: https", "X-Forwarded-For: 203.0.113.7") + get())
        first, second = read_responses(sock, 2)
    assert environ_of(first.body)["wsgi.url_scheme"] == "https"
    env = environ_of(second.body)
    assert (env["wsgi.url_scheme"], env["REMOTE_ADDR"]) == ("http", "127.0.0.1")


# -- limit_request_body --

LIMIT = 100

BODIES = [
    # (what, request, status, what wapps:echo answers when 200)
    ("Content-Length at the limit", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"a" * 100,
     200, b"POST /  100:" + b"a" * 100),
    ("Content-Length above the limit, no body sent: 413 at once",
     b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n", 413, b""),
    ("a huge Content-Length", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n", 413, b""),
    ("Content-Length above the limit with Expect: 100-continue: 413, no 100",
     b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n", 413, b""),
    ("chunked at the limit",
     b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n" + b"b" * 50 + b"\r\n32\r\n"
     + b"b" * 50 + b"\r\n0\r\n\r\n", 200, b"POST /  100:" + b"b" * 100),
    ("chunked above the limit (in one read)",
     b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n" + b"b" * 50 + b"\r\n33\r\n"
     + b"b" * 51 + b"\r\n0\r\n\r\n", 413, b""),
]


@pytest.mark.parametrize("worker_class", CLASSES)
def test_limit_request_body(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:echo", limit_request_body=LIMIT)
    for what, raw, status, body in BODIES:
        response = request(worker, raw)
        assert response.status == status, what
        if status == 200:
            assert response.body == body, what
        else:
            assert response.headers.get("connection") == "close", what
            assert not response.body.startswith(b"POST"), f"the app was called: {what}"
        assert worker.alive(), what


@pytest.mark.parametrize("worker_class", CLASSES)
def test_chunked_body_cut_while_the_app_reads(start_worker, worker_class):
    """The app is reading when the chunk that passes the limit arrives: it gets an error, the client 413."""
    worker = start_worker(worker_class=worker_class, module="wapps:echo", limit_request_body=LIMIT)
    with worker.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n" + b"c" * 50 + b"\r\n")
        time.sleep(0.3)  # the app is called and waits for the rest
        sock.sendall(b"3c\r\n" + b"c" * 60 + b"\r\n0\r\n\r\n")
        response = read_responses(sock, 1)[0]
    assert (response.status, response.headers.get("connection")) == (413, "close")
    assert worker.alive()


@pytest.mark.parametrize("worker_class", CLASSES)
def test_no_body_limit_when_zero(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:echo", limit_request_body=0)
    body = b"d" * 300_000
    response = request(worker, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert (response.status, response.body) == (200, b"POST /  300000:" + body)


# -- response header validation --

REFUSED_HEADERS = ["nul", "cr", "lf", "colon", "space", "empty", "bytesname", "bytesvalue", "int"]


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize("module", ["wapps:bad_header", "wapps:bad_header_iter"])
def test_invalid_response_headers_become_500(start_worker, worker_class, module):
    worker = start_worker(worker_class=worker_class, module=module)
    for case in REFUSED_HEADERS:
        for _ in range(2):  # the second time too: a refused header list is never cached
            response = request(worker, f"GET /?{case} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert response.status == 500, case
            assert "x-a" not in response.headers and "x-injected" not in response.headers, case
            assert response.body != b"sent", case
    response = request(worker, b"GET /?ok HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (response.status, response.headers["x-a"], response.body) == (200, 'b, c; d="e"', b"sent")
    assert worker.alive()
