"""sd_notify: tell systemd (Type=notify) how the master is doing. A no-op without $NOTIFY_SOCKET.

Messages are `KEY=VALUE` lines in one datagram to the unix socket named by $NOTIFY_SOCKET (a path, or an
abstract-namespace name when it starts with "@"). The master sends READY=1 once every app has first converged,
RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload expects) before a reload and READY=1 after it,
STOPPING=1 when it starts to stop, and STATUS=<one line> whenever the summary changes. With `WatchdogSec=`
(systemd sets $WATCHDOG_USEC), WATCHDOG=1 is sent from the master loop every half period: a master whose loop is
wedged stops pinging and systemd restarts it. The variables are removed from the environment at start-up so that
workers and apps never talk to systemd in the master's name.
Sending never blocks and never raises: a lost notification must not disturb the master.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("forkserve")


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not supported


def _watchdog_interval(env: Mapping[str, str]) -> float:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, or 0 when the watchdog is off or meant for
    another process ($WATCHDOG_PID names it)."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 2e6


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None, unset: bool = True) -> None:
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        self.watchdog_interval = _watchdog_interval(env)
        self.exported = {v: env[v] for v in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID") if v in env}
        if unset and environ is None:
            for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(var, None)
        self.address = _address(value) if value else None
        self.sock: socket.socket | None = None
        self.last_status = ""
        self.next_watchdog = 0.0
        if self.address is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *lines: str) -> bool:
        if self.sock is None or self.address is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str = "") -> None:
        status = status.replace("\n", " ")
        if self.send("READY=1", *([f"STATUS={status}"] if status else [])) and status:
            self.last_status = status

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def watchdog(self, now: float) -> None:
        """WATCHDOG=1 when half the watchdog period has passed since the last one (called on every wake-up)."""
        if self.watchdog_interval and now >= self.next_watchdog and self.send("WATCHDOG=1"):
            self.next_watchdog = now + self.watchdog_interval

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        text = text.replace("\n", " ")
        if text != self.last_status and self.send(f"STATUS={text}"):
            self.last_status = text

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
