"""The master: one thread, one loop over small parts. Everything that happens only wakes it; every wake re-plans.

(Over 400 lines: this is the wiring of every part below, and the narrow interfaces each part calls back
through: FdWatch, PreloadHost, DeploymentHost, UpgradeHost, the control plane's Commands. The decisions live in
the parts; splitting the wiring further would scatter one process's life cycle over several files.)

    wait (selector: the wake-up pipe for signals and the file watcher, worker event pipes, validating children,
          the control socket and metrics connections)
    -> note signals -> read worker events -> reap children -> read heartbeats -> reload the site file if needed
    -> plan(desired, records.observed(), now) -> executor applies the actions -> control plane tick -> wait again

The parts: `Records` (what runs), `Executor` (actions -> OS calls), `Reloads` + `Validations` (the site file,
validated in a child as a selector event), `Preloads` (preload processes, through narrow callbacks), and the
control plane, which sees the master only as a `Commands` interface and frozen `Snapshot`s.

Nothing in the loop blocks on a worker or a child: retiring sends TERM and records a deadline; the plan kills the
worker when the deadline has passed; a validation is a pipe in the selector. The master never imports app code,
gevent or pydantic.

A step that raises is logged with its traceback and counted (status `loop_errors`); the loop goes on and the next
wake-up re-plans from the records. The same step failing `MAX_STEP_FAILURES` times in a row stops the master by a
graceful drain of every worker (`graceful_timeout`, then KILL), never by abandoning them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import selectors
import signal
import time
import traceback
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from forkserve import process
from forkserve.config.binds import BindAddress
from forkserve.config.errors import ConfigError
from forkserve.config.validate import Validated, Validation, load_site, read_site, signature
from forkserve.deploy import RELEASE_CHECK
from forkserve.logs import ErrorLog
from forkserve.master.children import drain, import_worker_side, kill_now, set_title
from forkserve.master.deployment import Deployment
from forkserve.master.executor import Executor, ForkSpawner, Ports
from forkserve.master.records import Records, indent
from forkserve.master.sitefile import Reloads, SiteFile, Validations
from forkserve.master.upgrade import Handover, Upgrade
from forkserve.master.wakeup import Wakeup
from forkserve.outcomes import ReloadKind, ReloadOutcome
from forkserve.plan import OpenListener, plan
from forkserve.preload import Preloads
from forkserve.snapshot import Snapshot
from forkserve.sockets import BindError, Listener, close_listener, open_listener, systemd_fds
from forkserve.spec import DesiredState, LoadedSite, ServerSettings
from forkserve.state import Observed

if TYPE_CHECKING:  # imported once the first workers are forked: off the start-up critical path

    from forkserve.control.plane import ControlPlane
    from forkserve.watch import SiteWatcher

TICK = 0.25  # seconds between timer wake-ups (deadlines, heartbeats, the file's stat signature)
DEBOUNCE = 0.2  # seconds of quiet after a file event before the file is read
MAX_STEP_FAILURES = 5  # the same loop step raising this many times in a row: drain and stop

log = logging.getLogger("forkserve")


class StartupError(Exception):
    """forkserve up cannot start: nothing is left running."""


class Master:
    def __init__(self, site_path: str) -> None:
        self.site = SiteFile(os.path.abspath(site_path))
        self.desired = DesiredState()
        self.selector: selectors.BaseSelector = selectors.DefaultSelector()
        self.records = Records(self)
        self.preloads = Preloads(self)
        self.inherited_fds = systemd_fds()
        self.handover = Handover.from_env(os.environ)  # sockets and workers of the master we replaced (upgrade)
        self.upgrading: Upgrade | None = None
        self.executor = Executor(self.records, ForkSpawner(self.preloads), Ports(
            open_listener=lambda bind, spec: self.handover.take(bind) or open_listener(
                bind, spec.backlog, spec.unix_socket_mode, self.inherited_fds),
            close_listener=close_listener, send_signal=process.send_signal))
        self.validations = Validations(self.selector)
        self.deployment = Deployment(self.site, self.records, self)
        self.reloads = Reloads(self.site, self.validations, self.deployment)
        self.releases_checked_at = 0.0
        self.error_log = ErrorLog()
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.reload_requested = False
        self.watcher: SiteWatcher | None = None
        self.watching = False  # [server] watch: file events, or the timer's stat check alone if the watcher failed
        self.control: ControlPlane | None = None  # control socket, metrics, sd_notify (forkserve.control.plane)
        self.step_failures: dict[str, int] = {}  # step -> consecutive failures
        self.gave_up = False  # a step kept failing: the master stops (exit 1) and, if need be, drains by hand
        self.loop_errors = 0
        self.last_loop_error = ""
        self.wakeup = Wakeup()

    # ---- start-up and shutdown ------------------------------------------------------------------------

    def start(self, early: Validated | Validation | None = None) -> None:
        """Load the file, bind every listener, fork the first workers, then open the control socket, write the
        pidfile and start the watcher. Raises StartupError leaving nothing running.
        `early`: the validation of the file, started before the master's modules were imported."""
        self.site.signature = signature(self.site.path)
        data = early.data if early else read_site(self.site.path)
        if data is None:
            raise StartupError(f"{self.site.path}: cannot read the site file")
        if isinstance(early, Validation):
            import_worker_side(("sync", "gevent"))  # while the child validates: the master would only be waiting
        try:
            loaded = early.result() if early else load_site(data, self.site.path)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if not isinstance(early, Validation):
            import_worker_side({spec.worker_class for spec in loaded.desired.apps.values()})
        try:
            self.error_log.setup(loaded.server)
        except OSError as exc:
            raise StartupError(f"cannot open the error log {loaded.server.error_log}: {exc.strerror}") from None
        self.deployment.apply(loaded, data, explicit=False)
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)  # sd_listen_fds(unset_environment=1): apps must not adopt these sockets
        now = time.monotonic()
        for action in plan(self.desired, self.records.observed(), now):
            if isinstance(action, OpenListener):
                upgrade = self.handover.adopted  # the previous workers serve on: a bind error is a reload's
                try:
                    self.executor.open(action, self.desired.apps[action.app], now, at_startup=not upgrade)
                except BindError as exc:
                    if upgrade:
                        continue  # logged, retried after BIND_RETRY; never exit with the previous workers orphaned
                    self._close_all_listeners()
                    raise StartupError(f"app {action.app!r}: cannot bind {exc}") from None
        self.handover.leftovers()
        self.wakeup.install(self.selector)
        set_title(f"forkserve: master [{self.site.path}]")  # before the fork: workers find setproctitle loaded
        # The first workers are forked now: the time to a first response is the time to get here. The rest of
        # start-up (control socket, metrics, pidfile, watcher: ~30 ms, mostly imports) runs while they boot.
        now = time.monotonic()
        self.executor.execute(plan(self.desired, self.records.observed(), now), self.desired, now)
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
            self.control = attach(self, server, self.site.path, self.selector, self.inherited_fds)
        except (ControlSocketError, BindError, ValueError) as exc:
            raise StartupError(str(exc)) from None
        if server.pidfile:
            try:
                with open(server.pidfile, "w") as f:
                    f.write(f"{os.getpid()}\n")
            except OSError as exc:
                raise StartupError(f"cannot write the pidfile {server.pidfile}: {exc.strerror}") from None
        if server.watch:  # a change made before the watcher's thread exists is caught by the stat check
            from forkserve.watch import start_watcher

            self.watching = True
            self.watcher = start_watcher(self.site.path, self.wakeup.write_fd, TICK)

    def _abandon_children(self) -> None:
        """Start-up failed after the first fork: kill what was forked (it never served a known address for
        long) and close every listener, so that nothing is left running."""
        if self.control:
            self.control.close()
            self.control = None
        kill_now([*self.records.workers, *self.preloads.pids()])
        self.records.workers.clear()
        self.preloads.zygotes.clear()
        self._close_all_listeners()

    def _close_all_listeners(self) -> None:
        for listener in self.records.listeners.values():
            close_listener(listener)
        self.records.listeners.clear()

    def shutdown(self) -> None:
        if self.records.workers:  # the loop ended with workers left: never abandon them
            self._drain_all()
        self.validations.cancel_all()
        self.preloads.close()
        if self.watcher:
            self.watcher.stop()
        if self.control:
            self.control.close()
        self._close_all_listeners()
        pidfile = self.site.server.pidfile if self.site.server else None
        if pidfile:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
        log.info("forkserve master %d stopped", os.getpid())

    def _drain_all(self) -> None:
        """The last resort when the loop cannot go on (see `children.drain`)."""
        grace = self.site.server.graceful_timeout if self.site.server else 30.0
        drain({*self.records.workers, *self.preloads.pids()}, grace)
        self.records.close_ends()
        self.records.workers.clear()
        self.preloads.forget_all()  # reaped by the drain: never signalled again

    # ---- the loop ----------------------------------------------------------------------------------------

    def run(self) -> int:
        wait = 0.0  # the first pass plans (and forks the workers) at once
        while True:
            self.turn(wait)
            wait = TICK
            if self.desired.stopping and not (self.records.workers or self.preloads.zygotes or self.handover.adopted):
                return 1 if self.gave_up else 0

    def turn(self, wait: float) -> None:
        """One iteration: every step guarded on its own, so one that raises costs only itself."""
        for key, _ in self.selector.select(wait):
            self._guarded("event", key.data)
        now = time.monotonic()
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("signals", self._handle_signals),
            ("worker events", lambda: self.records.read_events(now)),
            ("reap", lambda: self._reap(now)),
            ("heartbeats", self.records.read_heartbeats),
            ("reload", lambda: self._maybe_reload(now)),
            ("health", lambda: self.records.note_healthy(self.desired, now)),
            ("outside", lambda: self._check_outside(now)),
            ("preload", lambda: self.preloads.tick(now)),
            ("plan", lambda: self.executor.execute(plan(self.desired, self.records.observed(), now), self.desired,
                                                   now)),
            ("convergence", lambda: self.records.log_convergence(self.desired)),
            ("control", lambda: self.control.tick(now) if self.control else None),
            ("handover", lambda: self.handover.tick(now, self.desired.stopping or self.records.converged_on(
                self.desired), self.site.server.graceful_timeout if self.site.server else 30.0,
                self.started_at + max((s.boot_timeout for s in self.desired.apps.values()), default=0.0))),
        )
        for name, step in steps:
            self._guarded(name, step)

    def _guarded(self, name: str, step: Callable[[], Any]) -> None:
        try:
            step()
        except Exception as exc:
            failures = self.step_failures[name] = self.step_failures.get(name, 0) + 1
            self.loop_errors += 1
            self.last_loop_error = f"{name}: {exc!r}"
            log.error("master loop step %r failed (%d in a row); the loop goes on:\n%s", name, failures,
                      indent(traceback.format_exc().rstrip()))
            if failures == MAX_STEP_FAILURES:
                log.critical("master loop step %r failed %d times in a row: stopping gracefully", name, failures)
                self.gave_up = True
                self.request_stop(fast=False)
            elif failures >= 2 * MAX_STEP_FAILURES and self.desired.stopping:
                self.gave_up = True
                self._drain_all()  # the stop itself cannot proceed: drain by hand so the loop can end
        else:
            self.step_failures.pop(name, None)

    # ---- wake-ups ----------------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        for sig in self.wakeup.take_signals():  # each on its own: a failure to act on one never loses the others
            self._guarded(f"signal {signal.Signals(sig).name}", functools.partial(self._handle_signal, sig))

    def _handle_signal(self, sig: int) -> None:
        if sig in (signal.SIGINT, signal.SIGQUIT) or (sig == signal.SIGTERM and self.desired.stopping):
            self.request_stop(fast=True)
        elif sig == signal.SIGTERM:
            self.request_stop(fast=False)
        elif sig == signal.SIGHUP:
            self.reload_requested = True
        elif sig == signal.SIGUSR1:
            self.error_log.reopen()
            for pid in self.records.workers:
                process.send_signal(pid, signal.SIGUSR1)
        elif sig == signal.SIGUSR2:
            self.upgrade()

    def upgrade(self, respond: Callable[[dict[str, object] | Exception], None] | None = None) -> None:
        """SIGUSR2, `forkserve upgrade`: re-execute with the forkserve now installed (see master/upgrade.py)."""
        if self.upgrading or self.desired.stopping:
            error = RuntimeError("an upgrade is under way" if self.upgrading else "the master is stopping")
            if respond is not None:
                respond(error)
            log.warning("upgrade not started: %s", error)
            return
        self.upgrading = Upgrade(self, respond)

    def request_stop(self, fast: bool) -> None:
        if self.desired.stopping and (self.desired.fast or not fast):
            return
        log.info("%s stop requested", "fast" if fast else "graceful")
        self.desired = self.desired.stopped(fast=fast)

    def _reap(self, now: float) -> None:
        for pid, status in process.reap():
            self.handover.reaped(pid)
            if self.upgrading and self.upgrading.preflight.pid == pid:
                self.upgrading.preflight.exited(status)
            elif not self.preloads.reaped(pid, status, now):
                self.worker_exited(pid, status, now)

    # ---- what records and preload processes call back (FdWatch, PreloadHost) --------------------------------

    def watch(self, fd: int) -> None:
        self.selector.register(fd, selectors.EVENT_READ, lambda: None)  # the loop's steps read what came

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def worker_exited(self, pid: int, status: int, now: float) -> None:
        self.records.worker_exited(pid, status, now, self.desired.stopping)

    def boot_failed(self, app: str, revision: str, now: float, error: str) -> None:
        self.records.failed(app, revision, now, error)

    def preload_needed(self, app: str, revision: str) -> bool:
        return self.records.revision_needed(self.desired, app, revision)

    def stopping(self) -> bool:
        return self.desired.stopping

    # ---- what the control plane calls (control.plane.Commands) ----------------------------------------------

    def snapshot(self) -> Snapshot:
        return self.records.snapshot(
            self.desired, self.site.snapshot(), now=time.monotonic(), wall=time.time(), pid=os.getpid(),
            started_at=self.started_at, started_wall=self.started_wall,
            control_socket=self.control.socket_path if self.control else None,
            loop_errors=self.loop_errors, last_loop_error=self.last_loop_error)

    def observed(self) -> Observed:
        return self.records.observed()

    @property
    def server_settings(self) -> ServerSettings | None:
        return self.site.server

    def reload(self, apps: Collection[str] = (), respond: Callable[[ReloadOutcome], None] | None = None) -> None:
        """An explicit reload (SIGHUP, `forkserve reload [APP...]`): re-read the file and roll the code of `apps`
        (all by default). `respond` gets the outcome once it is known. ValueError: an app not in the site."""
        if self.desired.stopping:
            if respond is not None:
                respond(ReloadOutcome(ReloadKind.STOPPING, self.site.revision))
            return
        self.reloads.request(explicit=True, respond=respond, roll=self.deployment.to_roll(apps))

    def plan_file(self, text: bytes, path: str, respond: Callable[[LoadedSite | ConfigError], None]) -> bool:
        """Validate a would-be site file for `forkserve plan` (without blocking); False when too busy."""
        return self.validations.start(text, path, respond)

    # ---- the site file -----------------------------------------------------------------------------------

    def _maybe_reload(self, now: float) -> None:
        self.validations.tick(now)
        if self.desired.stopping:
            return
        self.reloads.tick()
        wakeup = self.wakeup
        if self.reload_requested:  # SIGHUP: like `forkserve reload`, every app's code rolls
            self.reload_requested, wakeup.file_event_at = False, None
            self.reloads.request(explicit=True, roll=self.deployment.to_roll())
            return
        if self.watching and signature(self.site.path) != self.site.signature and wakeup.file_event_at is None:
            wakeup.file_event_at = now  # seen by the timer's stat check: debounce like a watcher event
        if wakeup.file_event_at is None or now - wakeup.file_event_at < DEBOUNCE:
            return
        wakeup.file_event_at = None
        self.reloads.request(explicit=False)

    def _check_outside(self, now: float) -> None:
        """What the site depends on outside its file: release symlinks (roll) and env_files (reload)."""
        if now - self.releases_checked_at < RELEASE_CHECK or self.desired.stopping:
            return
        self.releases_checked_at = now
        if self.deployment.check_releases():
            self.publish(self.deployment.desired)
        if self.deployment.env_files_changed(self.site.sources):  # under an unchanged site file: read it again
            self.reloads.request(explicit=False)

    # ---- what the deployment calls back (deployment.DeploymentHost) ------------------------------------------

    def before_reload(self, explicit: bool) -> None:
        if self.control:
            self.control.before_reload(explicit)

    def after_reload(self, explicit: bool, outcome: ReloadOutcome) -> None:
        if self.control:
            self.control.after_reload(explicit, outcome)

    # ---- what an upgrade calls back (upgrade.UpgradeHost) ----------------------------------------------------

    @property
    def site_path(self) -> str:
        return self.site.path

    def take_signals(self) -> list[int]:
        return self.wakeup.take_signals()

    def before_exec(self) -> tuple[dict[BindAddress, Listener], list[int], dict[int, int], dict[str, str]]:
        env: dict[str, str] = {}
        if self.control:
            self.control.before_reload(True)  # systemd: RELOADING=1; the new master says READY=1
            env = self.control.close_for_exec()  # not STOPPING=1; NOTIFY_SOCKET passed on
            self.control = None
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        self.validations.cancel_all()
        for handler in log.handlers:
            handler.flush()
        return self.records.listeners, [*self.records.workers], self.preloads.controls(), env

    def after_failed_exec(self) -> None:
        self.reloads.abandon()  # before_exec cancelled its validation
        if self.site.server is not None:
            try:
                self._start_services(self.site.server)
            except StartupError as exc:
                log.error("after the failed upgrade: %s", exc)

    def publish(self, desired: DesiredState) -> None:
        """The deployment's new desired state (a valid file, a code roll, a release switch)."""
        self.desired = desired
        self.records.forget_removed_apps(desired)
