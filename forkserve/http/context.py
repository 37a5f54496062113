"""What the request path needs from its worker (`Context`) and the parts of the environ fixed per listener.

One `Context` per worker process, built after its app is imported; every connection of that worker reads it
on every request, so it is a plain object with attributes (no properties, no dict lookups). It also owns the
worker's request-path caches (parsed header names and targets, rendered header blocks) and its `Clock`: state
that used to be module globals, now created per worker and reached through the connection's `ctx`.

`show` writes what the worker is serving into its shared-memory slot (`forkserve.channel`): the master reads it
when a ready worker dies, to log the request that killed it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from forkserve.channel import REQUEST_LEN, REQUEST_START, TEXT_BYTES
from forkserve.http.parse import ParseCache
from forkserve.http.proxy import TrustedPeers
from forkserve.http.response import Clock, FileWrapper, HeadCache


class Context:
    """The worker's app, counters, limits, logs and caches, as plain attributes (read on every request)."""

    def __init__(self, app: Callable[..., Any], slot: Any, record: Callable[[int, float], None],
                 log: Any, *, keepalive: float, timeout: float, limit_line: int, limit_fields: int,
                 limit_field: int, access: Callable[..., None] | None, max_requests: int,
                 on_max_requests: Callable[[], None], clock: Clock | None = None, text: Any = None,
                 starts: Any = None, limit_body: int = 0, peers: TrustedPeers | None = None) -> None:
        self.app = app
        self.slot = slot
        self.starts = starts if starts is not None else slot  # the slot as doubles: starts[REQUEST_START]
        self.text = text if text is not None else bytearray(TEXT_BYTES)  # the slot's "METHOD target" bytes
        self.shown_method = ""  # what `text` holds: the same str objects as the environ's (the parse cache
        self.shown_uri = ""  # hands out one object per distinct method and target), so a check is `is`
        self.record = record
        self.log = log
        self.keepalive = keepalive  # 0: no keep-alive (the sync worker always uses 0)
        self.timeout = timeout  # first request and request bodies: most seconds a read may wait
        self.limit_line = limit_line
        self.limit_fields = limit_fields
        self.limit_field = limit_field
        self.limit_body = limit_body  # limit_request_body (0: none)
        self.peers = peers  # forwarded_allow_ips (None: no peer is trusted, forwarding headers are plain headers)
        self.access = access
        self.max_requests = max_requests if max_requests > 0 else -1
        self.on_max_requests = on_max_requests
        self.served = 0
        self.stopping = False  # graceful stop: finish the request in hand, then close
        self.clock = clock if clock is not None else Clock()  # shared with the access log when there is one
        self.heads = HeadCache()
        self.parse_cache = ParseCache()

    def show(self, method: str, uri: str) -> None:
        """Write "METHOD target" (cut at TEXT_BYTES) into the slot: a memory copy, no syscall. Called by the
        request path only when the text differs from the one already shown."""
        self.starts[REQUEST_START] = 0.0  # no request named while the text changes (a reader sees it move)
        data = f"{method} {uri}".encode()  # UTF-8: a copy for ASCII (the fastest encoder; channel.py decodes it)
        n = len(data)
        if n <= TEXT_BYTES:
            self.text[:n] = data
        else:
            self.text[:] = data[:TEXT_BYTES]
        self.slot[REQUEST_LEN] = n
        self.shown_method = method
        self.shown_uri = uri


def base_environ(listener: socket.socket, errors: Any) -> dict[str, Any]:
    """The part of the environ that is the same for every request on one listener."""
    if listener.family == socket.AF_UNIX:
        name, port = "localhost", ""
    else:
        address = listener.getsockname()
        name, port = address[0], str(address[1])
    return {
        "SERVER_NAME": name, "SERVER_PORT": port, "SCRIPT_NAME": "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": errors,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
    }


def connection_environ(base: dict[str, Any], address: Any) -> dict[str, Any]:
    env = base.copy()
    if isinstance(address, tuple):
        env["REMOTE_ADDR"] = address[0]
        env["REMOTE_PORT"] = str(address[1])
    else:
        env["REMOTE_ADDR"] = ""
        env["REMOTE_PORT"] = ""
    return env
