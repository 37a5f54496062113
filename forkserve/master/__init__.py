"""The master process: a single-threaded loop over small parts (see `loop.py` and docs/architecture.md)."""

from forkserve.master.loop import Master, StartupError, run_site

__all__ = ["Master", "StartupError", "run_site"]
