"""The worker process: boot (import the app) -> ready -> serve -> heartbeat; exit codes.

`run(spec, listeners, channel, master_pid)` is called in the child right after fork and never returns. Steps:
1. `Worker.setup_process`: signals back to their defaults (SIGPIPE stays ignored: a vanished client must not
   kill the worker), process title `forkserve: worker [APP]`, the error log (the master's handlers are dropped:
   their files are closed in the child) and the access log.
2. `import_app`, once per app revision: chdir (also put on sys.path, as gunicorn does), pythonpath (prepended
   to sys.path), env (os.environ), the worker class's `before_import()` (gevent: `monkey.patch_all()` *before*
   the app is imported), then `import module` and `getattr` along the dotted attribute path (default attribute:
   `application`). Any failure: `boot_error` event with the last lines of the traceback, exit EXIT_BOOT_ERROR.
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
import logging
import os
import random
import signal
import sys
import time
import traceback
import warnings
from typing import Any, NoReturn

from forkserve.channel import WorkerEnd
from forkserve.http.accesslog import AccessLog
from forkserve.http.context import Context
from forkserve.http.response import Clock
from forkserve.logs import reopen_file_handler
from forkserve.spec import AppSpec
from forkserve.workers.registry import WorkerClass, load

EXIT_OK = 0
EXIT_RECYCLE = 0  # retired after max_requests: a normal exit
EXIT_PARENT_GONE = 0  # the master died: we leave quietly
EXIT_WORKER_ERROR = 1  # forkserve itself failed after boot (a bug): logged
EXIT_BOOT_ERROR = 3  # the app could not be imported; the master backs off

TRACEBACK_LINES = 30
TICK_SECONDS = 0.5  # heartbeat period (the brief: at least once a second)
LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S %z"
_RESET = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGTTIN", "SIGTTOU",
          "SIGALRM", "SIGWINCH")
log = logging.getLogger("forkserve.worker")


class ErrorStream:
    """wsgi.errors: text written by the app goes to the worker's error log stream (followed across USR1)."""

    def __init__(self, handler: logging.StreamHandler) -> None:  # type: ignore[type-arg]
        self._handler = handler

    def write(self, text: str) -> int:
        return self._handler.stream.write(text)

    def writelines(self, lines: Any) -> None:
        self._handler.stream.writelines(lines)

    def flush(self) -> None:
        self._handler.stream.flush()


class Worker:
    """One worker process (or the preload process): its channel, logs and, once started, request context.
    State shared by both worker classes; what a worker class needs at run time it reaches through here."""

    def __init__(self, spec: AppSpec, listeners: list[Any], channel: WorkerEnd, master_pid: int,
                 retired_handlers: list[logging.Handler] | None = None) -> None:
        self.spec = spec
        self.listeners = listeners
        self.channel = channel
        self.master_pid = master_pid
        self.app: Any = None
        self.ctx: Context | None = None
        self.clock = Clock()  # Date header and access-log timestamps of this process
        self.access: AccessLog | None = None
        self.handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
        self.errors: ErrorStream | None = None
        # the handlers of the parent process (master, or preload process), kept alive: their streams' fds were
        # closed at fork and may be reused, so garbage collection must never close them
        self.retired_handlers: list[logging.Handler] = [] if retired_handlers is None else retired_handlers
        self.reopen_requested = False
        self.recycle_sent = False
        self.next_check = 0.0

    def forked(self, channel: WorkerEnd) -> Worker:
        """A worker forked from this (preload) process: new channel, counters and logs; its parent is us."""
        return Worker(self.spec, self.listeners, channel, os.getppid(), self.retired_handlers)

    # -- boot --

    def setup_process(self) -> None:
        signal.set_wakeup_fd(-1)
        for name in _RESET:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            import setproctitle
        except ImportError:
            pass
        else:
            setproctitle.setproctitle(f"forkserve: worker [{self.spec.name}]")
        self.setup_logs()

    def setup_logs(self) -> None:
        spec = self.spec
        root = logging.getLogger("forkserve")
        for old in list(root.handlers):
            root.removeHandler(old)
            self.retired_handlers.append(old)
        handler: logging.StreamHandler = (  # type: ignore[type-arg]
            logging.StreamHandler(sys.stderr) if spec.error_log == "-"
            else logging.FileHandler(spec.error_log, encoding="utf-8"))
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
        root.addHandler(handler)
        root.setLevel(spec.log_level.upper())
        root.propagate = False
        self.handler = handler
        self.errors = ErrorStream(handler)
        self.access = AccessLog(spec.access_log, self.clock) if spec.access_log else None

    def start(self, app: Any) -> None:
        """This worker's request context for the imported `app` (per worker: counters, jitter, caches)."""
        spec = self.spec
        self.app = app
        jitter = random.randint(0, spec.max_requests_jitter) if spec.max_requests > 0 else 0
        self.ctx = Context(
            app, self.channel.slot, self.channel.record, log,
            keepalive=spec.keepalive if spec.worker_class == "gevent" else 0.0,
            timeout=spec.timeout, limit_line=spec.limit_request_line, limit_fields=spec.limit_request_fields,
            limit_field=spec.limit_request_field_size, access=self.access,
            max_requests=spec.max_requests + jitter if spec.max_requests > 0 else 0,
            on_max_requests=self.max_requests_reached, clock=self.clock)

    # -- serving helpers --

    def tick(self) -> None:
        """Heartbeat; once a second also: is the master alive, flush the access log, reopen logs."""
        self.channel.heartbeat()
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + 1.0
        if os.getppid() != self.master_pid:
            log.warning("master %d is gone: exiting", self.master_pid)
            self.exit(EXIT_PARENT_GONE)
        if self.access is not None:
            self.access.flush()
        if self.reopen_requested:
            self.reopen_requested = False
            self.reopen_logs()

    def reopen_logs(self) -> None:
        reopen_file_handler(self.handler)
        if self.access is not None:
            self.access.reopen()

    def max_requests_reached(self) -> None:
        if not self.recycle_sent:
            self.recycle_sent = True
            log.info("worker %d: max_requests reached; asking the master for a replacement", os.getpid())
            self.channel.send("recycle")

    def flush_logs(self) -> None:
        if self.access is not None:
            self.access.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        if self.handler is not None:
            with contextlib.suppress(Exception):
                self.handler.flush()

    def exit(self, code: int) -> NoReturn:
        self.flush_logs()
        os._exit(code)


def import_app(spec: AppSpec, worker_class: WorkerClass) -> Any:
    """Import the app, once per process tree: in a worker, or in the preload process whose workers inherit it.
    Changes process-wide state (cwd, sys.path, os.environ, the worker class's patching): never run it twice."""
    if spec.chdir:
        os.chdir(spec.chdir)
        path = os.getcwd()
        if path not in sys.path:
            sys.path.insert(0, path)
    for entry in reversed(spec.pythonpath):
        sys.path.insert(0, entry)
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
