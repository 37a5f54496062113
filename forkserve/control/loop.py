"""Client connections served from the master loop (control socket, metrics endpoint): the shared bookkeeping.

Each server keeps its connections by fd, registered in the master's selector; a connection idle for
`idle_timeout` seconds is dropped on the next tick, so a slow or silent client never holds anything for long.
A connection whose reply is still owed (`waiting`: a reload or plan whose file validates in a child) is not idle:
it waits at most for the validation's own deadline.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from typing import Any, Protocol


class _Client(Protocol):
    sock: socket.socket
    last: float


class LoopConnections:
    idle_timeout = 5.0

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self.connections: dict[int, Any] = {}

    def forget(self, connection: _Client) -> None:
        fd = connection.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(connection.sock)
            self.connections.pop(fd, None)
        connection.sock.close()

    def tick(self, now: float) -> None:
        for connection in list(self.connections.values()):
            if now - connection.last > self.idle_timeout and not getattr(connection, "waiting", False):
                self.forget(connection)

    def forget_all(self) -> None:
        for connection in list(self.connections.values()):
            self.forget(connection)
