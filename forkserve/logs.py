"""Log plumbing shared by the master and the workers."""

from __future__ import annotations

import logging
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from forkserve.spec import ServerSettings


def reopen_file_handler(handler: logging.Handler | None) -> None:
    """SIGUSR1 after log rotation: the file was moved away; open the path again (no-op for streams)."""
    if not isinstance(handler, logging.FileHandler):
        return
    handler.acquire()
    try:
        handler.close()
        handler.stream = handler._open()
    finally:
        handler.release()


class ErrorLog:
    """The master's error log handler, owned by the master (`[server] error_log`: a path, or "-" for stderr)."""

    FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
    DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

    def __init__(self, name: str = "forkserve") -> None:
        self.logger = logging.getLogger(name)
        self.handler: logging.Handler | None = None

    def setup(self, server: ServerSettings) -> None:
        target = server.error_log
        handler: logging.Handler = (logging.StreamHandler(sys.stderr) if target == "-"
                                    else logging.FileHandler(target, encoding="utf-8"))
        handler.setFormatter(logging.Formatter(self.FORMAT, self.DATE_FORMAT))
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.handler.close()
        self.logger.addHandler(handler)
        self.logger.setLevel(server.log_level.upper())
        self.logger.propagate = False
        self.handler = handler

    def reopen(self) -> None:
        """SIGUSR1: log rotation moved our file away; open the path again."""
        reopen_file_handler(self.handler)
