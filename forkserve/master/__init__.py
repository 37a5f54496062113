"""The master process: a single-threaded loop over small parts (see `loop.py` and docs/architecture.md)."""

from __future__ import annotations

import sys

from forkserve.config.validate import Validated, Validation
from forkserve.master.loop import Master, StartupError

__all__ = ["Master", "StartupError", "run_site"]


def run_site(site_path: str, early: Validated | Validation | None = None) -> int:
    """`forkserve up SITE`: exit 0 after a stop, 3 when the site cannot start, 1 after a loop failure."""
    master = Master(site_path)
    try:
        master.start(early)
    except StartupError as exc:
        print(f"forkserve: cannot start: {exc}", file=sys.stderr)
        return 3
    try:
        return master.run()
    finally:
        master.shutdown()
