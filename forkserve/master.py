"""The master: one thread, one loop. Everything that happens only wakes it; every wake re-plans.

    wait (selector: wake-up pipe for signals and the file watcher, worker event pipes, control socket)
    -> note signals -> read worker events -> reap children -> read heartbeats -> reload the site file if needed
    -> plan(desired, observed, now) -> execute the actions -> wait again

Nothing in the loop blocks on a worker: retiring sends TERM and records a deadline; the plan kills the worker
when the deadline has passed. The master never imports app code or gevent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import selectors
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from forkserve import backoff, process
from forkserve.changes import RESTART_ONLY, summary
from forkserve.channel import MasterEnd
from forkserve.config.binds import BindAddress
from forkserve.config.errors import ConfigError
from forkserve.config.isolated import Validation, Vouched, load_site, read_site, signature
from forkserve.logs import reopen_file_handler
from forkserve.plan import Action, CloseListener, Kill, OpenListener, Retire, Spawn, plan
from forkserve.preload import Preloads
from forkserve.sockets import BindError, Listener, close_listener, open_listener, systemd_fds
from forkserve.spec import AppSpec, DesiredState, LoadedSite, ServerSettings
from forkserve.state import Backoff, Observed, Phase, WorkerView

TYPE_CHECKING = False
if TYPE_CHECKING:  # imported once the first workers are forked: off the start-up critical path
    from forkserve.control.plane import ControlPlane
    from forkserve.watch import SiteWatcher

TICK = 0.25  # seconds between timer wake-ups (deadlines, heartbeats, the file's stat signature)
DEBOUNCE = 0.2  # seconds of quiet after a file event before the file is read
BIND_RETRY = 5.0  # seconds before retrying a listener that failed to open after start-up

log = logging.getLogger("forkserve")


class StartupError(Exception):
    """forkserve up cannot start: nothing is left running."""


@dataclass
class WorkerRecord:
    view: WorkerView
    end: MasterEnd
    spec: AppSpec
    boot_error: str = ""


@dataclass
class SiteFile:
    """The last valid site file the master applied, and the outcome of the last attempt to read one."""

    path: str
    server: ServerSettings | None = None  # None until the first valid file is applied
    digest: str = ""  # sha256 of the bytes applied
    revision: str = ""
    signature: tuple[int, int, int, int] | None = None
    errors: tuple[str, ...] = ()  # diagnostics of the current (invalid) file; empty when it applied
    last_result: str = ""
    missing: bool = False


class Master:
    def __init__(self, site_path: str) -> None:
        self.site = SiteFile(os.path.abspath(site_path))
        self.desired = DesiredState()
        self.workers: dict[int, WorkerRecord] = {}
        self.listeners: dict[BindAddress, Listener] = {}
        self.backoff: dict[tuple[str, str], Backoff] = {}
        self.proven: dict[str, AppSpec] = {}  # app -> spec of the desired revision, once one of its workers was
        # healthy (ready for backoff.HEALTHY_AFTER): what the plan falls back to while a newer one cannot boot
        self.bind_retry_at: dict[BindAddress, float] = {}
        self.bind_errors: dict[BindAddress, str] = {}
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.converged: dict[str, str] = {}  # app -> revision it last fully converged to (for the log)
        self.pending_signals: list[int] = []
        self.reload_requested = False
        self.file_event_at: float | None = None
        self.selector = selectors.DefaultSelector()
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.inherited_fds = systemd_fds()
        self.watcher: SiteWatcher | None = None
        self.watching = False  # [server] watch: file events, or the timer's stat check alone if the watcher failed
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.preloads = Preloads(self)
        self.on_loop: list[Callable[[float], None]] = []  # extra per-wake hooks (control plane, metrics)
        # around every reload: before(explicit) and after(explicit, result line); sd_notify and metrics use them
        self.before_reload: list[Callable[[bool], None]] = []
        self.after_reload: list[Callable[[bool, str], None]] = []
        self.control: ControlPlane | None = None  # control socket, metrics, sd_notify (forkserve.control.plane)

    # ---- start-up and shutdown ------------------------------------------------------------------------

    def start(self, early: Validation | Vouched | None = None) -> None:
        """Load the file, bind every listener, fork the first workers, then open the control socket, write the
        pidfile and start the watcher. Raises StartupError leaving nothing running.
        `early`: the validation of the file, started before the master's modules were imported."""
        self.site.signature = signature(self.site.path)
        data = early.data if early else read_site(self.site.path)
        if data is None:
            raise StartupError(f"{self.site.path}: cannot read the site file")
        if isinstance(early, Validation):
            _import_worker_side(("sync", "gevent"))  # while the child validates: the master would only be waiting
        try:
            loaded = early.result() if early else load_site(data, self.site.path)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if not isinstance(early, Validation):
            _import_worker_side({spec.worker_class for spec in loaded.desired.apps.values()})
        setup_logging(loaded.server)
        self._apply(loaded, data)
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)  # for forkserve only: apps must not adopt these sockets again
        now = time.monotonic()
        for action in plan(self.desired, self.observed(), now):
            if isinstance(action, OpenListener):
                try:
                    self._open(action, now, at_startup=True)
                except BindError as exc:
                    self.close_all_listeners()
                    raise StartupError(f"app {action.app!r}: cannot bind {exc}") from None
        self._install_signals()
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._drain_wake_pipe)
        _set_title(f"forkserve: master [{self.site.path}]")  # before the fork: workers find setproctitle loaded
        # The first workers are forked now: the time to a first response is the time to get here. The rest of
        # start-up (control socket, metrics, pidfile, watcher: ~30 ms, mostly imports) runs while they boot.
        now = time.monotonic()
        self.execute(plan(self.desired, self.observed(), now), now)
        try:
            self._start_services(loaded.server)
        except StartupError:
            self._abandon_children()
            raise
        log.info("forkserve master %d started for %s (site revision %s)", os.getpid(), self.site.path,
                 self.site.revision)

    def _start_services(self, server: ServerSettings) -> None:
        from forkserve.control.plane import attach
        from forkserve.control.server import ControlSocketError

        process.become_subreaper()  # orphans of a dead preload process come back to us to be reaped
        try:
            self.control = attach(self)
        except (ControlSocketError, BindError, ValueError) as exc:
            raise StartupError(str(exc)) from None
        try:
            self._write_pidfile()
        except OSError as exc:
            raise StartupError(f"cannot write the pidfile {server.pidfile}: {exc.strerror}") from None
        if server.watch:  # a change made before the watcher's thread exists is caught by the stat check
            self.watching = True
            self._start_watcher()

    def _abandon_children(self) -> None:
        """Start-up failed after the first fork: kill what was forked (it never served a known address for
        long) and close every listener, so that nothing is left running."""
        if self.control:
            self.control.close()
            self.control = None
        children = [*self.workers, *(r.zygote.pid for r in self.preloads.zygotes.values())]
        for pid in children:
            process.send_signal(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.workers.clear()
        self.preloads.zygotes.clear()
        self.close_all_listeners()

    def _start_watcher(self) -> None:
        from forkserve.watch import SiteWatcher

        watcher = SiteWatcher(self.site.path, self.wake_w)
        try:
            watcher.start()
        except OSError as exc:  # e.g. the inotify watch or instance limit: the stat check still sees edits
            log.warning("cannot watch %s for changes (%s); checking it every %.2gs instead", self.site.path, exc,
                        TICK)
            return
        self.watcher = watcher

    def close_all_listeners(self) -> None:
        for listener in self.listeners.values():
            close_listener(listener)
        self.listeners.clear()

    def shutdown(self) -> None:
        self.preloads.close()
        if self.watcher:
            self.watcher.stop()
        if self.control:
            self.control.close()
        self.close_all_listeners()
        pidfile = self.site.server.pidfile if self.site.server else None
        if pidfile:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
        log.info("forkserve master %d stopped", os.getpid())

    def _write_pidfile(self) -> None:
        pidfile = self.site.server.pidfile if self.site.server else None
        if pidfile:
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")

    # ---- the loop ----------------------------------------------------------------------------------------

    def run(self) -> int:
        wait = 0.0  # the first pass plans (and forks the workers) at once
        while True:
            for key, _ in self.selector.select(wait):
                key.data()
            wait = TICK
            now = time.monotonic()
            self._handle_signals()
            self._read_worker_events(now)
            self._reap(now)
            self._read_heartbeats()
            self._maybe_reload(now)
            self._note_healthy(now)
            self.preloads.tick(now)
            self.execute(plan(self.desired, self.observed(), now), now)
            self._log_convergence()
            for hook in self.on_loop:
                hook(now)
            if self.desired.stopping and not self.workers and not self.preloads.zygotes:
                return 0

    def observed(self) -> Observed:
        return Observed(
            workers={pid: r.view for pid, r in self.workers.items()},
            listeners=frozenset(self.listeners),
            backoff=dict(self.backoff),
            bind_retry_at=dict(self.bind_retry_at),
            proven=dict(self.proven),
        )

    # ---- wake-ups ----------------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)  # only note it: the loop acts

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.wake_r, 4096):
                if b"w" in data and self.file_event_at is None:  # the watcher (signals write their number)
                    # debounce from the first event of a burst: later events cannot postpone the read; a read
                    # that lands mid-burst is followed by another once the content changes again
                    self.file_event_at = time.monotonic()

    def _handle_signals(self) -> None:
        signals, self.pending_signals = self.pending_signals, []
        for sig in signals:
            if sig in (signal.SIGINT, signal.SIGQUIT) or (sig == signal.SIGTERM and self.desired.stopping):
                self.request_stop(fast=True)
            elif sig == signal.SIGTERM:
                self.request_stop(fast=False)
            elif sig == signal.SIGHUP:
                self.reload_requested = True
            elif sig == signal.SIGUSR1:
                reopen_logs()
                for pid in self.workers:
                    process.send_signal(pid, signal.SIGUSR1)

    def request_stop(self, fast: bool) -> None:
        if self.desired.stopping and (self.desired.fast or not fast):
            return
        log.info("%s stop requested", "fast" if fast else "graceful")
        self.desired = self.desired.stopped(fast=fast)

    # ---- workers -----------------------------------------------------------------------------------------

    def _read_worker_events(self, now: float) -> None:
        for record in list(self.workers.values()):
            self._events_of(record, now)

    def _events_of(self, record: WorkerRecord, now: float) -> None:
        if record.end.read_fd < 0:
            return
        events, closed = record.end.read_events()
        for event in events:
            kind = event.get("event")
            if kind == "ready" and record.view.phase is Phase.BOOTING:
                record.view = dataclasses.replace(record.view, phase=Phase.READY, ready_at=now, heartbeat=now)
                log.debug("worker %d of %s ready", record.view.pid, record.view.app)
            elif kind == "recycle":
                record.view = dataclasses.replace(record.view, recycle=True)
            elif kind == "boot_error":
                record.boot_error = str(event.get("text", ""))
        if closed:
            self.selector.unregister(record.end.read_fd)
            record.end.close()

    def _reap(self, now: float) -> None:
        for pid, status in process.reap():
            if not self.preloads.reaped(pid, status, now):
                self.worker_exited(pid, status, now)

    def worker_exited(self, pid: int, status: int, now: float) -> None:
        """A worker is gone: reaped by the master, or reported by the preload process that forked it."""
        record = self.workers.pop(pid, None)
        if record is None:
            return
        self._events_of(record, now)  # a boot error written just before exit
        if record.end.read_fd >= 0:
            self.selector.unregister(record.end.read_fd)
            record.end.close()
        self._after_exit(record, status, now)

    def _after_exit(self, record: WorkerRecord, status: int, now: float) -> None:
        view = record.view
        if view.phase is Phase.DRAINING or self.desired.stopping:  # retired, or stopping (TERM may reach the
            # whole process group from systemd or a shell, so workers can be quicker than our own retire)
            log.debug("worker %d of %s exited (%s)", view.pid, view.app, process.describe_exit(status))
            return
        how = process.describe_exit(status)
        if view.ready_at is None:
            error = record.boot_error.strip() or f"worker exited during boot ({how})"
            log.error("app %s (revision %s): worker %d failed to boot (%s):\n%s", view.app, view.revision,
                      view.pid, how, _indent(error))
        else:
            error = f"worker {view.pid} died ({how})"
            if view.phase is not Phase.KILLED:
                self.restarts[(view.app, "crash")] += 1
                log.warning("app %s: worker %d died unexpectedly (%s); replacing it", view.app, view.pid, how)
        if backoff.is_failure(view, now):
            key = (view.app, view.revision)
            self.backoff[key] = backoff.after_failure(self.backoff.get(key), now, error)
            wait = self.backoff[key].retry_at - now
            if self.backoff[key].failures > 1:
                log.warning("app %s: %d failures in a row; next try in %.0fs", view.app, self.backoff[key].failures,
                            wait)

    def _read_heartbeats(self) -> None:
        for record in self.workers.values():
            beat = record.end.heartbeat()
            if beat > record.view.heartbeat:
                record.view = dataclasses.replace(record.view, heartbeat=beat)

    def _note_healthy(self, now: float) -> None:
        """A revision with a healthy worker is out of backoff, and, when desired, the app's proven revision.
        Healthy rather than merely ready: code that crashes seconds after boot is not something to fall back on."""
        healthy = {(r.view.app, r.view.revision) for r in self.workers.values() if backoff.healthy(r.view, now)}
        for key in [k for k in self.backoff if k in healthy]:
            del self.backoff[key]
        for name, spec in self.desired.apps.items():
            if (name, spec.revision) in healthy:
                self.proven[name] = spec

    # ---- executing a plan --------------------------------------------------------------------------------

    def execute(self, actions: tuple[Action, ...], now: float) -> None:
        for action in actions:
            if isinstance(action, OpenListener):
                with contextlib.suppress(BindError):
                    self._open(action, now, at_startup=False)
            elif isinstance(action, Spawn):
                self._spawn(action, now)
            elif isinstance(action, Retire):
                self._retire(action, now)
            elif isinstance(action, Kill):
                self._kill(action, now)
            elif isinstance(action, CloseListener):
                listener = self.listeners.pop(action.bind)
                close_listener(listener)
                log.info("closed listener %s", listener.address)

    def _open(self, action: OpenListener, now: float, at_startup: bool) -> None:
        spec = self.desired.apps[action.app]
        try:
            listener = open_listener(action.bind, spec.backlog, spec.unix_socket_mode, self.inherited_fds)
        except BindError as exc:
            if not at_startup:
                self.bind_errors[action.bind] = str(exc)
                self.bind_retry_at[action.bind] = now + BIND_RETRY
                log.error("app %s: cannot bind %s; retrying in %.0fs", action.app, exc, BIND_RETRY)
            raise
        self.listeners[action.bind] = listener
        self.bind_errors.pop(action.bind, None)
        self.bind_retry_at.pop(action.bind, None)
        log.info("listening on %s (app %s)", listener.address, action.app)

    def _spawn(self, action: Spawn, now: float) -> None:
        spec = self.desired.apps[action.app]
        if action.revision != spec.revision:  # the plan holds on to the proven revision (see plan._hold)
            spec = self.proven[action.app]
        if any(b not in self.listeners for b in spec.binds):
            return  # a listener failed to open in this same plan; the plan retries after BIND_RETRY
        sockets = [self.listeners[b].sock for b in spec.binds]
        try:
            if spec.preload:
                preloaded = self.preloads.spawn(spec, sockets, now)
                if preloaded is None:
                    return  # its preload process is starting: the plan asks again on a later wake-up
                spawned = preloaded
            else:
                spawned = process.spawn(spec, sockets)
        except OSError as exc:
            key = (spec.name, spec.revision)
            self.backoff[key] = backoff.after_failure(self.backoff.get(key), now, f"fork failed: {exc}")
            log.error("app %s: fork failed: %s", spec.name, exc)
            return
        view = WorkerView(pid=spawned.pid, app=spec.name, revision=spec.revision, binds=frozenset(spec.binds),
                          phase=Phase.BOOTING, started=now, heartbeat=now, timeout=spec.timeout,
                          boot_timeout=spec.boot_timeout)
        self.workers[spawned.pid] = WorkerRecord(view, spawned.end, spec)
        self.selector.register(spawned.end.read_fd, selectors.EVENT_READ, lambda: None)
        log.debug("spawned worker %d of %s (revision %s)", spawned.pid, spec.name, spec.revision)

    def _retire(self, action: Retire, now: float) -> None:
        record = self.workers[action.pid]
        spec = self.desired.apps.get(record.view.app, record.spec)
        record.view = dataclasses.replace(record.view, phase=Phase.DRAINING,
                                          drain_deadline=now + spec.graceful_timeout)
        if action.reason in ("rolled", "recycle"):
            self.restarts[(record.view.app, "max_requests" if action.reason == "recycle" else "rolled")] += 1
        process.send_signal(action.pid, signal.SIGTERM)
        log.debug("retiring worker %d of %s (%s)", action.pid, record.view.app, action.reason)

    def _kill(self, action: Kill, now: float) -> None:
        record = self.workers[action.pid]
        first = record.view.killed_at if record.view.phase is Phase.KILLED else now
        record.view = dataclasses.replace(record.view, phase=Phase.KILLED, kill_signal=action.signal,
                                          killed_at=first)
        if action.reason in ("timeout", "boot_timeout"):
            self.restarts[(record.view.app, action.reason)] += 1
            limit = record.view.timeout if action.reason == "timeout" else record.view.boot_timeout
            log.error("app %s: worker %d %s (%.0fs); sending %s", record.view.app, action.pid,
                      "silent too long" if action.reason == "timeout" else "not ready in time", limit,
                      signal.Signals(action.signal).name)
        elif action.reason == "drain_timeout":
            log.warning("app %s: worker %d still busy after graceful_timeout; killing it", record.view.app,
                        action.pid)
        process.send_signal(action.pid, action.signal)

    def _log_convergence(self) -> None:
        for name in [n for n in self.converged if n not in self.desired.apps]:
            if not any(r.view.app == name for r in self.workers.values()):
                del self.converged[name]
                log.info("app %s: removed (all workers gone)", name)
        for name, spec in self.desired.apps.items():
            mine = [r.view for r in self.workers.values() if r.view.app == name and r.view.live]
            done = (len(mine) == spec.workers and all(w.phase is Phase.READY and w.revision == spec.revision
                                                      for w in mine))
            if done and self.converged.get(name) != f"{spec.revision}/{spec.workers}":
                self.converged[name] = f"{spec.revision}/{spec.workers}"
                log.info("app %s: %d/%d workers ready (revision %s)", name, len(mine), spec.workers, spec.revision)

    # ---- the site file -----------------------------------------------------------------------------------

    def _maybe_reload(self, now: float) -> None:
        if self.desired.stopping:
            return
        explicit, self.reload_requested = self.reload_requested, False
        changed = self.watching and signature(self.site.path) != self.site.signature
        if changed and self.file_event_at is None:
            self.file_event_at = now  # seen by the timer's stat check: debounce like a watcher event
        if not explicit and (self.file_event_at is None or now - self.file_event_at < DEBOUNCE):
            return
        self.file_event_at = None
        self.reload(explicit)

    def reload(self, explicit: bool) -> str:
        """Re-read the site file and apply it if valid. Returns the result line (also logged)."""
        for hook in self.before_reload:
            hook(explicit)
        result = self._reload(explicit)
        for done in self.after_reload:
            done(explicit, result)
        return result

    def _reload(self, explicit: bool) -> str:
        sig = signature(self.site.path)
        data = read_site(self.site.path)
        if data is None:
            self.site.signature = sig
            if not self.site.missing:
                log.warning("site file %s is gone or unreadable; the running site (revision %s) keeps running",
                            self.site.path, self.site.revision)
            self.site.missing = True
            self.site.last_result = "site file missing: keeping the running site"
            return self.site.last_result
        self.site.missing = False
        digest = hashlib.sha256(data).hexdigest()
        self.site.signature = sig
        if digest == self.site.digest and not explicit:
            if self.site.errors:  # back to the content that is running: the error is gone
                self.site.errors = ()
                self.site.last_result = f"site file is back to revision {self.site.revision}: no changes"
                log.info("%s", self.site.last_result)
            return "unchanged"
        try:
            loaded = load_site(data, self.site.path)
        except ConfigError as exc:
            self.site.errors = tuple(d.format() for d in exc.diagnostics)
            self.site.last_result = f"invalid: {len(exc.diagnostics)} problem(s); still running revision " \
                                    f"{self.site.revision}"
            log.error("site file is invalid; nothing changed, revision %s keeps running:\n%s", self.site.revision,
                      _indent(str(exc)))
            return self.site.last_result
        if explicit:
            self.backoff.clear()  # the operator asked: try broken apps again now
        return self._apply(loaded, data)

    def _apply(self, loaded: LoadedSite, data: bytes) -> str:
        new, server = loaded.desired, loaded.server
        old_server = self.site.server
        text = summary(self.desired, new, old_server, server)
        first = old_server is None
        if old_server is not None:  # settings the master cannot change live stay as they were
            server = dataclasses.replace(server, **{k: getattr(old_server, k) for k in RESTART_ONLY})
            if server.log_level != old_server.log_level:
                logging.getLogger("forkserve").setLevel(server.log_level.upper())
        self.site.server = server
        self.site.digest = hashlib.sha256(data).hexdigest()
        self.site.errors = ()
        self.site.revision = new.revision
        self.desired = new
        self.proven = {app: spec for app, spec in self.proven.items() if app in new.apps}
        self.site.last_result = f"site revision {new.revision} applied: {text}"
        if not first:
            log.info("%s", self.site.last_result)
        return self.site.last_result


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:  # optional: ps shows "python -m forkserve up ..." instead
        return
    setproctitle.setproctitle(title)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


_log_handler: logging.Handler | None = None


def setup_logging(server: ServerSettings) -> None:
    global _log_handler
    target = server.error_log
    handler: logging.Handler = (logging.StreamHandler(sys.stderr) if target == "-"
                                else logging.FileHandler(target, encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                                           "%Y-%m-%d %H:%M:%S %z"))
    root = logging.getLogger("forkserve")
    if _log_handler is not None:
        root.removeHandler(_log_handler)
        _log_handler.close()
    root.addHandler(handler)
    root.setLevel(server.log_level.upper())
    root.propagate = False
    _log_handler = handler


def reopen_logs() -> None:
    """SIGUSR1: log rotation moved our file away; open the path again."""
    reopen_file_handler(_log_handler)


def _import_worker_side(worker_classes: Iterable[str]) -> None:
    """Import the modules the workers of these classes need (the HTTP request path, httptools) into the master
    before the first fork: forked workers find them loaded and shared instead of each importing its own copy
    (~15 ms off every worker's boot, less private memory per worker). Never gevent or app code: those stay in
    the workers."""
    import importlib

    for name in sorted(worker_classes):
        importlib.import_module(f"forkserve.workers.{name}")


def run_site(site_path: str, early: Validation | Vouched | None = None) -> int:
    """`forkserve up SITE`: exit 0 after a stop, 3 when the site cannot start."""
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
