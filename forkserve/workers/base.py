"""The worker process: boot (import the app) -> ready -> serve -> heartbeat; exit codes.

`run(spec, listeners, channel, master_pid)` is called in the child right after fork and never returns. Steps:
1. Signals back to their defaults (SIGPIPE stays ignored: a vanished client must not kill the worker), process
   title `forkserve: worker [APP]`, the error log (the master's handlers are dropped: their files are closed in
   the child) and the access log.
2. chdir (also put on sys.path, as gunicorn does), pythonpath (prepended to sys.path), env (os.environ), for
   gevent `monkey.patch_all()` *before* the app is imported, then `import module` and `getattr` along the
   dotted attribute path (default attribute: `application`). Any failure: `boot_error` event with the last
   lines of the traceback, exit EXIT_BOOT_ERROR.
3. `ready` event, then the worker class serves (forkserve.workers.sync / .gevent).

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
from forkserve.http.connection import Context
from forkserve.logs import reopen_file_handler
from forkserve.spec import AppSpec

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
_inherited_handlers: list[logging.Handler] = []  # kept alive: their streams' fds must never be closed by GC

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
    """State shared by both worker classes."""

    def __init__(self, spec: AppSpec, listeners: list[Any], channel: WorkerEnd, master_pid: int) -> None:
        self.spec = spec
        self.listeners = listeners
        self.channel = channel
        self.master_pid = master_pid
        self.app: Any = None
        self.ctx: Context | None = None
        self.access: AccessLog | None = None
        self.handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
        self.errors: ErrorStream | None = None
        self.reopen_requested = False
        self.recycle_sent = False
        self.next_check = 0.0

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
            _inherited_handlers.append(old)
        handler: logging.StreamHandler = (  # type: ignore[type-arg]
            logging.StreamHandler(sys.stderr) if spec.error_log == "-"
            else logging.FileHandler(spec.error_log, encoding="utf-8"))
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
        root.addHandler(handler)
        root.setLevel(spec.log_level.upper())
        root.propagate = False
        self.handler = handler
        self.errors = ErrorStream(handler)
        self.access = AccessLog(spec.access_log) if spec.access_log else None

    def load_app(self) -> Any:
        spec = self.spec
        if spec.chdir:
            os.chdir(spec.chdir)
            path = os.getcwd()
            if path not in sys.path:
                sys.path.insert(0, path)
        for entry in reversed(spec.pythonpath):
            sys.path.insert(0, entry)
        os.environ.update(dict(spec.env))
        if spec.worker_class == "gevent":
            from forkserve.workers import gevent as worker_class
        else:
            from forkserve.workers import sync as worker_class  # type: ignore[no-redef]
        worker_class.prepare()  # gevent: monkey-patch before the app's imports
        module_name, _, attribute = spec.module.partition(":")
        app: Any = importlib.import_module(module_name)
        for part in (attribute or "application").split("."):
            app = getattr(app, part)
        if not callable(app):
            raise TypeError(f"{spec.module} is not callable (it is {type(app).__name__})")
        self.app = app
        jitter = random.randint(0, spec.max_requests_jitter) if spec.max_requests > 0 else 0
        self.ctx = Context(
            app, self.channel.slot, self.channel.record, log,
            keepalive=spec.keepalive if spec.worker_class == "gevent" else 0.0,
            timeout=spec.timeout, limit_line=spec.limit_request_line, limit_fields=spec.limit_request_fields,
            limit_field=spec.limit_request_field_size, access=self.access,
            max_requests=spec.max_requests + jitter if spec.max_requests > 0 else 0,
            on_max_requests=self.max_requests_reached)
        return worker_class

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


def _boot_error(worker: Worker) -> NoReturn:
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
        with warnings.catch_warnings(record=True) as caught:  # a warning must never fail a boot
            warnings.simplefilter("always")
            worker_class = worker.load_app()
        for item in caught:
            log.debug("warning during boot: %s", warnings.formatwarning(item.message, item.category, item.filename,
                                                                        item.lineno, item.line).strip())
    except BaseException:
        _boot_error(worker)
    serve_then_exit(worker, worker_class)


def serve_then_exit(worker: Worker, worker_class: Any) -> NoReturn:
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
