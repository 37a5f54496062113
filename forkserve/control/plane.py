"""The master's control plane: control socket, metrics endpoint and sd_notify, driven by the master loop.

`attach(commands, server, site_path, selector, inherited_fds)` is called once from `Master.start()`;
`ControlPlane.close()` from `Master.shutdown()`. The plane never sees the master: it gets a `Commands`
interface (a frozen `snapshot()`, `reload`, `request_stop`, `plan_file`) and is told about reloads
(`before_reload`, `after_reload`) and wake-ups (`tick`). Commands never block the loop: a reload or a plan whose
file validates in a child answers when the child does. The command table is fixed.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from collections.abc import Callable, Collection
from typing import Protocol

from forkserve import status
from forkserve.config.errors import ConfigError
from forkserve.config.paths import default_control_socket
from forkserve.control.planning import invalid_report, plan_report
from forkserve.control.protocol import Request
from forkserve.control.server import ControlServer, ControlSocketError, ControlSocketInUse, Reply
from forkserve.metrics import Metrics, MetricsServer
from forkserve.notify import Notifier
from forkserve.outcomes import ReloadOutcome
from forkserve.snapshot import Snapshot
from forkserve.spec import LoadedSite, ServerSettings
from forkserve.state import Observed

log = logging.getLogger("forkserve")


class Commands(Protocol):
    """What the control plane may ask of the master."""

    def snapshot(self) -> Snapshot: ...

    def observed(self) -> Observed: ...

    def reload(self, apps: Collection[str] = (), respond: Callable[[ReloadOutcome], None] | None = None) -> None:
        ...

    def request_stop(self, fast: bool) -> None: ...

    def upgrade(self, respond: Reply | None = None) -> None: ...

    def plan_file(self, text: bytes, path: str, respond: Callable[[LoadedSite | ConfigError], None]) -> bool: ...

    @property
    def server_settings(self) -> ServerSettings | None: ...


def control_socket_path(server: ServerSettings | None, site_path: str) -> str:
    return (server.control_socket if server else None) or default_control_socket(site_path)


class ControlPlane:
    def __init__(self, commands: Commands, server: ServerSettings, site_path: str,
                 selector: selectors.BaseSelector, inherited_fds: list[int]) -> None:
        self.commands = commands
        self.settings = server
        self.selector = selector
        self.inherited_fds = inherited_fds
        self.notifier = Notifier()
        self.metrics = Metrics(commands.snapshot)
        self.announced_ready = False
        self.announced_stopping = False
        self.table: dict[str, Callable[[Request, Reply], None]] = {
            "status": self._status,
            "reload": self._reload,
            "stop": self._stop,
            "plan": self._plan,
            "upgrade": lambda _request, respond: self.commands.upgrade(respond),
        }
        self.server = ControlServer(control_socket_path(server, site_path), self._dispatch, selector)
        self.metrics_server: MetricsServer | None = None

    @property
    def socket_path(self) -> str | None:
        return self.server.path if self.server.sock is not None else None

    def open(self) -> None:
        try:
            self.server.open()
        except ControlSocketInUse:
            raise
        except ControlSocketError as exc:  # a read-only root file system, a foreign directory...: serve on
            log.warning("no control socket (%s); serving without it: `forkserve status/reload/plan/wait` cannot "
                        "reach this master (SIGHUP still reloads; metrics and probes are unaffected)", exc)
        if self.settings.metrics:
            self.metrics_server = MetricsServer(self.settings.metrics, self.metrics, self.selector,
                                                self.inherited_fds)
            log.info("metrics on http://%s/metrics", self.metrics_server.address.removeprefix("tcp://"))
        if self.server.sock is not None:
            log.info("control socket %s", self.server.path)

    def before_reload(self, explicit: bool) -> None:
        if explicit:  # SIGHUP, `forkserve reload`, `systemctl reload`: what systemd waits for
            self.notifier.reloading()

    def after_reload(self, explicit: bool, outcome: ReloadOutcome) -> None:
        """Count reloads by result and tell systemd the reload is over (RELOADING=1 ... READY=1)."""
        self.metrics.count_reload(outcome)
        if explicit:
            self.notifier.ready(f"reload: {outcome.line()}")

    # ---- commands: a fixed table ---------------------------------------------------------------------------

    def _dispatch(self, request: Request, respond: Reply) -> None:
        self.table[request.command](request, respond)

    def _status(self, _request: Request, respond: Reply) -> None:
        respond(status.render(self.commands.snapshot()))

    def _reload(self, request: Request, respond: Reply) -> None:
        self.commands.reload(request.apps, lambda outcome: respond(outcome.to_wire()))

    def _stop(self, request: Request, respond: Reply) -> None:
        self.commands.request_stop(request.fast)
        respond({"stopping": True, "fast": request.fast})

    def _plan(self, request: Request, respond: Reply) -> None:
        def validated(result: LoadedSite | ConfigError) -> None:
            try:
                snap = self.commands.snapshot()
                if isinstance(result, ConfigError):
                    report = invalid_report(request.path, [d.format() for d in result.diagnostics],
                                            snap.site.revision)
                else:
                    report = plan_report(request.path, result, snap.desired, self.commands.server_settings,
                                         self.commands.observed(), time.monotonic())
            except Exception as exc:  # runs later, outside the server's own guard: answer with the error
                log.exception("control command plan failed")
                respond(exc)
                return
            respond(report)

        if not self.commands.plan_file(request.text.encode(), request.path, validated):
            raise RuntimeError("too many site files are being validated right now; try again")

    # ---- every wake-up ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.server.tick(now)
        if self.metrics_server is not None:
            self.metrics_server.tick(now)
        if not self.notifier.enabled:
            return
        self.notifier.watchdog(now)  # from the loop itself: it proves the loop turns
        snap = self.commands.snapshot()
        if snap.stopping:
            if not self.announced_stopping:
                self.announced_stopping = True
                self.notifier.stopping()
            return
        doc = status.render(snap, workers=False)
        line = "; ".join(f"{a['name']} {a['ready']}/{a['desired']} ready ({a['state']})" for a in doc["apps"])
        if not self.announced_ready and all(a["state"] == "running" for a in doc["apps"] if a["in_site"]):
            self.announced_ready = True
            self.notifier.ready(line)
        self.notifier.status(line)

    def close_for_exec(self) -> dict[str, str]:
        """An upgrade's exec: close the sockets, not the service (no STOPPING=1); the environment the new master
        needs to keep talking to systemd."""
        self.announced_stopping = True
        self.close()
        env = dict(self.notifier.exported)
        if "WATCHDOG_PID" in env:
            env["WATCHDOG_PID"] = str(os.getpid())
        return env

    def close(self) -> None:
        if self.notifier.enabled and not self.announced_stopping:
            self.notifier.stopping()
        self.server.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.notifier.close()


def attach(commands: Commands, server: ServerSettings, site_path: str, selector: selectors.BaseSelector,
           inherited_fds: list[int]) -> ControlPlane:
    plane = ControlPlane(commands, server, site_path, selector, inherited_fds)
    try:
        plane.open()
    except BaseException:
        plane.close()
        raise
    return plane

