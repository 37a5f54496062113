"""The worker object: one per worker process (its spec, listeners, channel to the master, logs, request context),
and the exit codes. The steps that use it (boot, serve, exit) are in `forkserve.workers.base`.

Apart from `base` so that the worker classes and the registry can name `Worker` without importing `base`
(which loads the registry): no import cycle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import time
from typing import Any, NoReturn

from forkserve.channel import WorkerEnd
from forkserve.http.accesslog import AccessLog
from forkserve.http.context import Context
from forkserve.http.proxy import TrustedPeers
from forkserve.http.response import Clock
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
            on_max_requests=self.max_requests_reached, clock=self.clock, text=self.channel.text,
            starts=self.channel.starts, limit_body=spec.limit_request_body,
            peers=TrustedPeers(spec.forwarded_allow_ips))

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
