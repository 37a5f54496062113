"""RFC 9110 / 9112 rules on the request path, sent over real sockets to both worker classes.

Each row: the RFC section, the bytes, and the outcome: a status the server answers itself (the app never called,
`Connection: close`, the worker alive after), or what the app saw (`wapps:echo` answers "METHOD PATH QUERY N:body").
"""

from __future__ import annotations

import time

import pytest

from tests.workers.conftest import read_responses, request

CLASSES = ["sync", "gevent"]

REFUSED = [
    # (RFC section, request, status)
    ("RFC 9110 §5.3: Content-Type appears once",
     b"GET / HTTP/1.1\r\nHost: t\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n", 400),
    ("RFC 9112 §3.2: exactly one Host",
     b"GET / HTTP/1.1\r\nHost: t\r\nHost: evil.example\r\n\r\n", 400),
    ("RFC 9112 §3.2: HTTP/1.1 without Host",
     b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing",
     b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("RFC 9110 §6.5.1: Host in a trailer (routing field)",
     b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nHost: evil\r\n\r\n", 400),
    ("RFC 9110 §6.5.1: Content-Length in a trailer (framing field)",
     b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
     400),
    ("RFC 9112 §3.2.4: asterisk-form only with OPTIONS",
     b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("RFC 9112 §3.2.3: authority-form only with CONNECT",
     b"GET example.org:443 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("RFC 9110 §15.6.6 / 9112 §2.3: HTTP/2.0 on an HTTP/1 connection",
     b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ("RFC 9110 §15.6.6: HTTP/0.9 in a request line",
     b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    ("RFC 9110 §9.1 / §5.6.2: a method must be a token",
     b"BL\x01ARGH / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
]

ACCEPTED = [
    # (RFC section, request, what wapps:echo answers)
    ("RFC 9110 §9.1: any token is a method", b"BLARGH /foo HTTP/1.1\r\nHost: t\r\n\r\n", b"BLARGH /foo  0:"),
    ("RFC 9110 §9.1: a token may start with '-'", b"-BLARGH /foo HTTP/1.1\r\nHost: t\r\n\r\n", b"-BLARGH /foo  0:"),
    ("RFC 9110 §9.1: methods are case-sensitive tokens", b"get /x?q HTTP/1.1\r\nHost: t\r\n\r\n", b"get /x q 0:"),
    ("RFC 9110 §9.1: an unknown method with a body",
     b"PROPPATCHX / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", b"PROPPATCHX /  5:hello"),
    ("RFC 9112 §7.1.1: BWS before ';' in a chunk extension",
     b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 ;name=value\r\nhello\r\n0\r\n\r\n",
     b"POST /c  5:hello"),
    ("RFC 9110 §6.5.1: other trailer fields are accepted (and not passed to the app)",
     b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
     b"POST /c  5:hello"),
    ("RFC 9112 §3.2.4: OPTIONS * reaches the app with PATH_INFO '*'",
     b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", b"OPTIONS *  0:"),
    ("RFC 9112 §3.2.3 / RFC 9110 §9.3.6: CONNECT host:port reaches the app (no path)",
     b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", b"CONNECT   0:"),
    ("RFC 9112 §3.2: HTTP/1.0 needs no Host", b"GET /z HTTP/1.0\r\n\r\n", b"GET /z  0:"),
]


@pytest.mark.parametrize("worker_class", CLASSES)
def test_refused(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    for rule, raw, status in REFUSED:
        response = request(worker, raw)
        assert (response.status, response.headers.get("connection")) == (status, "close"), rule
        assert not response.body.startswith(raw.split(b" ", 1)[0] + b" "), f"the app was called: {rule}"
        assert worker.alive(), rule
    assert request(worker, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").body == b"GET /ok  0:"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_accepted(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    for rule, raw, body in ACCEPTED:
        response = request(worker, raw)
        assert (response.status, response.body) == (200, body), rule


@pytest.mark.parametrize("worker_class", CLASSES)
def test_connect_closes_after_the_answer(start_worker, worker_class):
    """RFC 9110 §9.3.6: after CONNECT the bytes are tunnel data, never another request: the connection closes."""
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    with worker.connect() as sock:
        sock.sendall(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("worker_class", ["gevent"])
def test_unknown_method_on_a_keepalive_connection(start_worker, worker_class):
    """RFC 9110 §9.1: the placeholder parse gives the real method to its request only; later requests are parsed
    as usual, known and unknown methods alike."""
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    with worker.connect() as sock:
        for method in (b"BLARGH", b"GET", b"MKFOO", b"POST"):
            sock.sendall(method + b" /k HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_responses(sock, 1)[0].body == method + b" /k  0:"


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize(("value_size", "status"), [(90, 200), (91, 200), (92, 431)])
def test_field_size_counts_the_line_with_its_crlf(start_worker, worker_class, value_size, status):
    """limit_request_field_size counts "name: value" + CRLF, as gunicorn does (its limit_request_field_size):
    X-L (3) + ": " (2) + value + CRLF (2) <= 98: 91 fits, 92 does not."""
    worker = start_worker(worker_class=worker_class, module="wapps:echo", limit_request_field_size=98)
    raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-L: " + b"v" * value_size + b"\r\n\r\n"
    assert request(worker, raw).status == status


@pytest.mark.parametrize("worker_class", CLASSES)
def test_unknown_method_cut_short(start_worker, worker_class):
    """RFC 9110 §9.1: a method llhttp does not know, arriving a few bytes at a time, is still a method."""
    worker = start_worker(worker_class=worker_class, module="wapps:echo")
    with worker.connect() as sock:
        for part in (b"BL", b"AR", b"GH /s HTTP/1.1\r\nHost: t\r\n\r\n"):
            sock.sendall(part)
            time.sleep(0.05)
        assert read_responses(sock, 1)[0].body == b"BLARGH /s  0:"


def test_unknown_method_split_behind_a_pipelined_request(start_worker):
    """An unknown method whose first bytes came in the read that ended the previous request: llhttp holds those
    bytes, so the method cannot be recovered whole; refused (400), never given to the app misnamed."""
    worker = start_worker(worker_class="gevent", module="wapps:echo")
    with worker.connect() as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nB")
        assert read_responses(sock, 1)[0].body == b"GET /a  0:"
        sock.sendall(b"LARGH /b HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_responses(sock, 1)[0].status == 400
