"""Log plumbing shared by the master and the workers."""

from __future__ import annotations

import logging


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
