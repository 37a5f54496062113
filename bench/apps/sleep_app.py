"""WSGI app that waits 10 ms per request, standing in for a database or upstream call.

time.sleep blocks a sync worker (or one gthread thread) for the whole wait; gevent workers monkey-patch it into a
cooperative sleep. SLEEP_MS in the environment changes the wait.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

SLEEP_S = float(os.environ.get("SLEEP_MS", "10")) / 1000.0
BODY = b"slept"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    time.sleep(SLEEP_S)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
