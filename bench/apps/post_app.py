"""WSGI app that consumes the whole request body (bench/post.lua sends 64 KB) and answers with its length."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

CHUNK = 65536


def _consume(environ: dict[str, Any]) -> int:
    stream = environ["wsgi.input"]
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        remaining = 0
    total = 0
    if remaining == 0 and environ.get("wsgi.input_terminated"):  # chunked body: read to the end
        while data := stream.read(CHUNK):
            total += len(data)
        return total
    while remaining > 0:
        data = stream.read(min(CHUNK, remaining))
        if not data:
            break
        total += len(data)
        remaining -= len(data)
    return total


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = str(_consume(environ)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
