"""Worker classes by name (`worker_class` in a site file), imported only when asked for.

Why a registry: `base` runs every worker but must not import a worker class (that was an import cycle, and it
would load gevent's worker module into sync workers). It asks `load(name)` for the class's module, which is
imported with importlib on first use: in a gevent worker (or the master's `_import_worker_side`, which imports
`forkserve.workers.<name>` itself before forking). The modules import no gevent at import time, so loading
one never loads gevent either: that happens in `before_import()`, in the worker.

A worker class is a module with the three functions of `WorkerClass`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from forkserve.workers.worker import Worker

CLASSES: dict[str, str] = {  # name -> module; the names are those the config accepts
    "sync": "forkserve.workers.sync",
    "gevent": "forkserve.workers.gevent",
}


class WorkerClass(Protocol):
    def before_import(self) -> None:
        """Process-wide set-up before the app is imported (gevent: monkey-patch). Runs once per import of the
        app: in a worker that imports it, or in the preload process, never again in a worker forked from it."""

    def after_fork(self) -> None:
        """In a worker forked from a preload process, before anything else (gevent: reinit the hub)."""

    def serve(self, worker: Worker) -> int:
        """Serve `worker.listeners` until stopped; returns the exit code."""


def load(name: str) -> WorkerClass:
    try:
        module = CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown worker class {name!r} (known: {', '.join(sorted(CLASSES))})") from None
    return cast("WorkerClass", importlib.import_module(module))
