"""WSGI app that builds and serialises about 1 KB of JSON on every request (some real Python work per request)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

ITEMS = 10  # about 1,040 bytes of JSON


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    doc = {
        "path": environ.get("PATH_INFO", "/"),
        "method": environ.get("REQUEST_METHOD", "GET"),
        "items": [
            {"id": i, "name": f"item-{i:03d}", "price": i * 1.25, "tags": ["alpha", "beta", "gamma"],
             "in_stock": i % 2 == 0}
            for i in range(ITEMS)
        ],
    }
    body = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
