"""A small JSON API (the `api` app of examples/configs/site.*): GET /health, GET /items, POST /echo.

POST /echo reads the request body (bounded by CONTENT_LENGTH, as PEP 3333 requires) and returns it parsed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

MAX_BODY = 64 * 1024
ITEMS = [{"id": 1, "name": "teapot"}, {"id": 2, "name": "kettle"}]


def _respond(start_response: Callable[..., Any], status: str, payload: object) -> list[bytes]:
    body = json.dumps(payload).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(min(max(length, 0), MAX_BODY)) if length else b""


def _echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    try:
        data = json.loads(_read_body(environ) or b"null")
    except ValueError:
        return _respond(start_response, "400 Bad Request", {"error": "the body is not JSON"})
    return _respond(start_response, "200 OK", {"echo": data})


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if path == "/health" and method == "GET":
        return _respond(start_response, "200 OK", {"status": "ok", "pid": os.getpid()})
    if path == "/items" and method == "GET":
        return _respond(start_response, "200 OK", ITEMS)
    if path == "/echo" and method == "POST":
        return _echo(environ, start_response)
    return _respond(start_response, "404 Not Found", {"error": f"no route for {method} {path}"})
