"""The access log: one line per response, buffered (64 KiB), flushed about once a second by the worker.

Format (Apache "combined" plus the duration in seconds):

    REMOTE_ADDR - - [DD/Mon/YYYY:HH:MM:SS +0000] "METHOD RAW_URI PROTOCOL" STATUS BYTES "REFERER" "USER_AGENT" SECS

    127.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 12 "-" "curl/8.1" 0.000153

BYTES is the body bytes sent ("-" for none); REMOTE_ADDR is "-" on a unix socket. Time is UTC. Quotes in the
referer and user agent are escaped as \\". Disabled (access_log unset), nothing is formatted at all. The
timestamp comes from the worker's `Clock` (passed in), which the response path already keeps current.
"""

from __future__ import annotations

from typing import IO, Any

from forkserve.http.response import Clock


class AccessLog:
    __slots__ = ("clock", "stream", "target", "write")

    def __init__(self, target: str, clock: Clock) -> None:
        self.target = target
        self.clock = clock
        self.stream: IO[str] | None = None
        self.open()

    def open(self) -> None:
        if self.target == "-":
            self.stream = open(1, "w", buffering=65536, encoding="latin-1", errors="backslashreplace",  # noqa: SIM115
                               closefd=False)
        else:
            self.stream = open(self.target, "a", buffering=65536, encoding="latin-1",  # noqa: SIM115
                               errors="backslashreplace")
        self.write = self.stream.write

    def flush(self) -> None:
        try:
            self.stream.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass

    def reopen(self) -> None:
        """SIGUSR1 (log rotation): flush, close, open the path again."""
        self.flush()
        if self.target != "-":
            try:
                self.stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self.open()

    def __call__(self, env: dict[str, Any], code: int, nbytes: int, duration: float) -> None:
        referer = env.get("HTTP_REFERER", "-")
        agent = env.get("HTTP_USER_AGENT", "-")
        if '"' in referer:
            referer = referer.replace('"', '\\"')
        if '"' in agent:
            agent = agent.replace('"', '\\"')
        self.write(f'{env.get("REMOTE_ADDR") or "-"} - - [{self.clock.stamp}] "{env["REQUEST_METHOD"]} '
                   f'{env["RAW_URI"]} {env["SERVER_PROTOCOL"]}" {code} {nbytes or "-"} "{referer}" "{agent}" '
                   f'{duration:.6f}\n')
