"""WSGI apps for the worker tests (imported by the forked worker through spec.pythonpath)."""

import hashlib
import io
import os
import resource
import time
from wsgiref.validate import validator


def hello(environ, start_response):
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    """Answers with what it saw: method, path, query and the body (read with read())."""
    data = environ["wsgi.input"].read()
    body = b"%s %s %s %d:" % (environ["REQUEST_METHOD"].encode(), environ["PATH_INFO"].encode("latin-1"),
                             environ["QUERY_STRING"].encode("latin-1"), len(data)) + data
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def environ_app(environ, start_response):
    keys = sorted(k for k, v in environ.items() if isinstance(v, str))
    body = "\n".join(f"{k}={environ[k]}" for k in keys).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def stream_upload(environ, start_response):
    """Reads the body in 64 KiB pieces; answers length, sha256 and how much the peak RSS grew meanwhile."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest = hashlib.sha256()
    total = 0
    read = environ["wsgi.input"].read
    while True:
        chunk = read(65536)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    body = f"{total} {digest.hexdigest()} {grew}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def lines(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = list(stream)
    body = b"%d|%s|%d" % (len(first), first.strip(), len(rest))
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def ignore_body(environ, start_response):
    body = b"ignored"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def generator(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(3):
        yield b"part%d;" % i


def fail(environ, start_response):
    raise RuntimeError("boom (on purpose)")


def slow(environ, start_response):
    mark = environ.get("HTTP_X_MARK")
    if mark:
        with open(mark, "w"):
            pass
    time.sleep(float(environ.get("QUERY_STRING") or "1"))
    body = b"slow done"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def files(environ, start_response):
    path = environ["QUERY_STRING"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if environ["PATH_INFO"] == "/bytesio":
        with open(path, "rb") as f:
            return environ["wsgi.file_wrapper"](io.BytesIO(f.read()), 4096)
    return environ["wsgi.file_wrapper"](open(path, "rb"))  # closed by the server


def pid(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def _validated(environ, start_response):
    data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.errors"].write("")
    body = b"valid:" + data
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


validated = validator(_validated)


class Nested:
    class Inner:
        app = staticmethod(hello)


not_callable = 42


def hang(environ, start_response):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # blocks the event loop: no heartbeat
        pass
    start_response("200 OK", [])
    return [b""]


def osenv(environ, start_response):
    body = f"{os.environ.get('FORKSERVE_TEST_VAR')} {os.getcwd()}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def ssl_patched(environ, start_response):
    """Imports ssl at request time (a gevent worker defers patching it until then): is it gevent's?"""
    import ssl

    from gevent import monkey

    body = f"{monkey.is_module_patched('ssl')} {ssl.SSLContext.__module__.startswith('gevent')}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


BAD_HEADERS = {
    "nul": ("X-A", "b\0c"),
    "cr": ("X-A", "b\rc"),
    "lf": ("X-A", "b\nX-Injected: 1"),
    "colon": ("X-A: b", "c"),
    "space": ("X A", "b"),
    "empty": ("", "b"),
    "bytesname": (b"X-A", "b"),
    "bytesvalue": ("X-A", b"b"),
    "int": ("X-A", 1),
    "ok": ("X-A", "b, c; d=\"e\""),
}


def bad_header(environ, start_response):
    """Answers with the response header BAD_HEADERS[QUERY_STRING] (from a list: the cached path)."""
    name, value = BAD_HEADERS[environ["QUERY_STRING"]]
    start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
    return [b"sent"]


def bad_header_iter(environ, start_response):
    """The same from a generator (the streaming path)."""
    name, value = BAD_HEADERS[environ["QUERY_STRING"]]
    start_response("200 OK", [(name, value)])
    yield b"sent"
