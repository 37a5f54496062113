"""The master's control plane: control socket, metrics endpoint and sd_notify, wired into the master loop.

`attach(master)` is called once from `Master.start()`; `ControlPlane.close()` from `Master.shutdown()`.
Commands run right away inside the loop (they are quick: a reload only reads and validates the file, the
reconcile that follows happens on the loop's next pass). The command table is fixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from forkserve import status
from forkserve.config.errors import ConfigError
from forkserve.config.isolated import load_site
from forkserve.config.paths import default_control_socket
from forkserve.control.planning import invalid_report, plan_report
from forkserve.control.protocol import Request
from forkserve.control.server import ControlServer
from forkserve.metrics import Metrics, MetricsServer
from forkserve.notify import Notifier

log = logging.getLogger("forkserve")


def control_socket_path(master: Any) -> str:
    server = master.site.server
    return (server.control_socket if server else None) or default_control_socket(master.site.path)


class ControlPlane:
    def __init__(self, master: Any) -> None:
        self.master = master
        self.notifier = Notifier()
        self.metrics = Metrics(master)
        self.announced_ready = False
        self.announced_stopping = False
        self.commands: dict[str, Callable[[Request], dict[str, Any]]] = {
            "status": self._status,
            "reload": self._reload,
            "stop": self._stop,
            "plan": self._plan,
        }
        self.server = ControlServer(control_socket_path(master), self._dispatch, master.selector)
        self.metrics_server: MetricsServer | None = None

    def open(self) -> None:
        self.server.open()
        address = self.master.site.server.metrics
        if address:
            self.metrics_server = MetricsServer(address, self.metrics, self.master.selector,
                                                self.master.inherited_fds)
            log.info("metrics on http://%s/metrics", self.metrics_server.address.removeprefix("tcp://"))
        log.info("control socket %s", self.server.path)
        self.master.before_reload.append(self._before_reload)
        self.master.after_reload.append(self._after_reload)
        self.master.on_loop.append(self.on_loop)

    def _before_reload(self, explicit: bool) -> None:
        if explicit:  # SIGHUP, `forkserve reload`, `systemctl reload`: what systemd waits for
            self.notifier.reloading()

    def _after_reload(self, explicit: bool, result: str) -> None:
        """Count reloads by result and tell systemd the reload is over (RELOADING=1 ... READY=1)."""
        if result != "unchanged":  # a file event with the same content is not a reload
            self.metrics.count_reload(result)
        if explicit:
            self.notifier.ready(f"reload: {result}")

    # ---- commands: a fixed table ---------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> dict[str, Any]:
        return self.commands[request.command](request)

    def _status(self, _request: Request) -> dict[str, Any]:
        return status.snapshot(self.master)

    def _reload(self, _request: Request) -> dict[str, Any]:
        return {"result": self.master.reload(explicit=True)}

    def _stop(self, request: Request) -> dict[str, Any]:
        self.master.request_stop(request.fast)
        return {"stopping": True, "fast": request.fast}

    def _plan(self, request: Request) -> dict[str, Any]:
        master = self.master
        try:
            loaded = load_site(request.text.encode(), request.path)
        except ConfigError as exc:
            return invalid_report(request.path, [d.format() for d in exc.diagnostics], master.site.revision)
        return plan_report(request.path, loaded, master.desired, master.site.server, master.observed(),
                           time.monotonic())

    # ---- every wake-up ---------------------------------------------------------------------------------------

    def on_loop(self, now: float) -> None:
        self.server.tick(now)
        self.metrics.observe(now)
        if self.metrics_server is not None:
            self.metrics_server.tick(now)
        if not self.notifier.enabled:
            return
        self.notifier.watchdog(now)  # from the loop itself: it proves the loop turns
        master = self.master
        if master.desired.stopping:
            if not self.announced_stopping:
                self.announced_stopping = True
                self.notifier.stopping()
            return
        snap = status.snapshot(master, now, workers=False)
        line = "; ".join(f"{a['name']} {a['ready']}/{a['desired']} ready ({a['state']})" for a in snap["apps"])
        if not self.announced_ready and all(a["state"] == "running" for a in snap["apps"] if a["in_site"]):
            self.announced_ready = True
            self.notifier.ready(line)
        self.notifier.status(line)

    def close(self) -> None:
        if self.on_loop in self.master.on_loop:
            self.master.on_loop.remove(self.on_loop)
        if self.notifier.enabled and not self.announced_stopping:
            self.notifier.stopping()
        self.server.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.notifier.close()


def attach(master: Any) -> ControlPlane:
    plane = ControlPlane(master)
    try:
        plane.open()
    except BaseException:
        plane.close()
        raise
    return plane
