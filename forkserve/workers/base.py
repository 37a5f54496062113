"""The worker process: boot (import the app) -> ready -> serve -> heartbeat; exit codes.

`run(spec, listeners, channel, master_pid)` is called in the child right after fork and never returns. Steps:
1. `Worker.setup_process`: signals back to their defaults (SIGPIPE stays ignored: a vanished client must not
   kill the worker), process title `forkserve: worker [APP]`, the error log (the master's handlers are dropped:
   their files are closed in the child) and the access log.
2. `import_app`, once per app revision: chdir, or else the directory `forkserve up` was started in (either is
   put on sys.path, as gunicorn does), pythonpath (before it on sys.path): `spec.import_paths`, the rule
   `forkserve check --import` follows too; env (os.environ), the worker class's `before_import()` (gevent:
   `monkey.patch_all()` *before* the app is imported), then `import module` and `getattr` along the dotted
   attribute path (default attribute: `application`). Any failure: `boot_error` event with the last lines of
   the traceback, exit EXIT_BOOT_ERROR.
3. `Worker.start(app)`, once per worker: its request context (limits, counters, max_requests with jitter).
4. `ready` event, then the worker class serves (`forkserve.workers.registry` finds it by name).

Steps 2 and 3 are apart because of preload: the preload process (`forkserve.workers.zygote`) runs step 2 once
and the workers it forks run only 1, 3 and 4. Importing, and so patching, a second time in a forked worker was
a defect (a gevent MonkeyPatchWarning in every worker, one more ssl import hook, sys.path entries twice).

Signals while serving: TERM = graceful (stop accepting at once, finish in-flight requests within
graceful_timeout, close idle keep-alive connections, exit 0); INT and QUIT = exit now; USR1 = reopen the log
files (done at the next heartbeat tick, at a safe point).

Liveness: `tick()` runs at least every second while the worker is healthy: it writes the heartbeat into the
shared slot, exits (code 0) when the master is gone (getppid() changed), flushes the access log and reopens logs
when USR1 asked for it. A worker whose app blocks stops ticking, and the master kills it after `timeout`.

max_requests (+ a random 0..max_requests_jitter): when reached, the worker sends `recycle` once and keeps
serving; the master starts a replacement and then sends TERM.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
import warnings
from typing import Any, NoReturn

from forkserve.channel import WorkerEnd
from forkserve.spec import AppSpec, import_paths
from forkserve.workers.registry import WorkerClass, load
from forkserve.workers.worker import (  # noqa: F401 - the exit codes are part of this module's interface
    EXIT_BOOT_ERROR,
    EXIT_OK,
    EXIT_PARENT_GONE,
    EXIT_RECYCLE,
    EXIT_WORKER_ERROR,
    TICK_SECONDS,
    TRACEBACK_LINES,
    Worker,
    log,
)


def import_app(spec: AppSpec, worker_class: WorkerClass) -> Any:
    """Import the app, once per process tree: in a worker, or in the preload process whose workers inherit it.
    Changes process-wide state (cwd, sys.path, os.environ, the worker class's patching): never run it twice."""
    cwd, entries = import_paths(spec)  # the one rule; `forkserve check --import` follows it too
    if cwd:
        os.chdir(cwd)
    sys.path[0:0] = entries
    os.environ.update(dict(spec.env))
    worker_class.before_import()  # gevent: monkey-patch before the app's imports
    module_name, _, attribute = spec.module.partition(":")
    app: Any = importlib.import_module(module_name)
    for part in (attribute or "application").split("."):
        app = getattr(app, part)
    if not callable(app):
        raise TypeError(f"{spec.module} is not callable (it is {type(app).__name__})")
    return app


def boot_error(worker: Worker) -> NoReturn:
    """In an `except` block of the boot: log the traceback's tail, tell the master, exit EXIT_BOOT_ERROR."""
    text = "".join(traceback.format_exc()).rstrip().splitlines()[-TRACEBACK_LINES:]
    message = "\n".join(text)
    with contextlib.suppress(Exception):
        log.error("app %s: boot failed:\n%s", worker.spec.name, message)
    worker.channel.send("boot_error", text=message)
    worker.exit(EXIT_BOOT_ERROR)


def run(spec: AppSpec, listeners: list[Any], channel: WorkerEnd, master_pid: int) -> NoReturn:
    worker = Worker(spec, listeners, channel, master_pid)
    try:
        worker.setup_process()
        worker_class = load(spec.worker_class)
        with warnings.catch_warnings(record=True) as caught:  # a warning must never fail a boot
            warnings.simplefilter("always")
            app = import_app(spec, worker_class)
        for item in caught:
            log.debug("warning during boot: %s", warnings.formatwarning(item.message, item.category, item.filename,
                                                                        item.lineno, item.line).strip())
        worker.start(app)
    except BaseException:
        boot_error(worker)
    serve_then_exit(worker, worker_class)


def serve_then_exit(worker: Worker, worker_class: WorkerClass) -> NoReturn:
    """Tell the master we are ready, serve until stopped, exit with the worker class's code."""
    code = EXIT_WORKER_ERROR
    try:
        worker.channel.send("ready")
        worker.tick()
        code = worker_class.serve(worker)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_WORKER_ERROR
    except BaseException:
        with contextlib.suppress(Exception):
            log.exception("worker %d failed", os.getpid())
    worker.exit(code)
