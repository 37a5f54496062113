"""WSGI app whose import takes seconds (SLOW_IMPORT_S, default 2), standing in for a large framework boot.

A server that stops its old workers before the new ones have imported this module stalls for that long.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

time.sleep(float(os.environ.get("SLOW_IMPORT_S", "2")))

BODY = b"slow to import, fast to serve"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]
