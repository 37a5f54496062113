"""Prometheus metrics of the master: `[server] metrics = "HOST:PORT"` serves `GET /metrics`. OS calls.

The endpoint is the master's own tiny HTTP/1.0 responder, served from the master loop through its selector
(never by the app workers' listeners, never from a thread). Numbers come from the workers' shared-memory
slots (`forkserve/channel.py`): a worker counts a request with a memory store, the master reads the slots
when scraped. Counters never go backwards when workers exit: the master reads an exiting worker's slot one
last time into per-app totals (`Snapshot.exited`). Everything is rendered from a frozen `Snapshot`.

Text exposition format 0.0.4. Families:

    forkserve_workers{app,state}                  gauge    booting | idle | busy | draining | killed
    forkserve_workers_desired{app}                gauge
    forkserve_requests_total{app,status_class}    counter  1xx .. 5xx
    forkserve_request_duration_seconds{app}       histogram (buckets of channel.DURATION_BUCKETS)
    forkserve_in_flight_requests{app}             gauge
    forkserve_connections{app}                    gauge
    forkserve_restarts_total{app,cause}           counter  crash | timeout | boot_timeout | max_requests | rolled
    forkserve_worker_crashes_total{app,cause}     counter  workers that died unasked: boot_failure | boot_timeout
                                                           (never ready: backed off) | SIGSEGV | SIGBUS | SIGABRT |
                                                           SIGFPE | SIGILL | SIGKILL (often the OOM killer) |
                                                           signal (any other) | exit_0 | exit_error (ready, then
                                                           died: replaced within the crash rate). A fixed set
                                                           (outcomes.CrashCause): bounded label cardinality
    forkserve_reloads_total{result}               counter  applied | invalid | missing | error (explicit reloads and
                                                           file changes; a file event with the same content
                                                           is not counted)
    forkserve_loop_errors_total                   counter  master loop steps that raised, logged and survived
    forkserve_site_info{revision,path}            gauge 1
    forkserve_app_info{app,revision}              gauge 1
    forkserve_master_start_time_seconds           gauge
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable

from forkserve.channel import DURATION_BUCKETS
from forkserve.config.binds import parse_bind
from forkserve.control.loop import LoopConnections
from forkserve.outcomes import CRASH_CAUSES, RELOAD_RESULTS, RESTART_CAUSES, ReloadOutcome
from forkserve.snapshot import Snapshot, Totals
from forkserve.sockets import Listener, close_listener, open_listener
from forkserve.status import readiness, render

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("booting", "idle", "busy", "draining", "killed")
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
MAX_REQUEST = 8192
IDLE_TIMEOUT = 5.0
MAX_CONNECTIONS = 16


class Metrics:
    """Counts kept on the master's side (reloads), and the rendering of the text format from a snapshot."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot
        self.reloads: Counter[str] = Counter()

    def count_reload(self, outcome: ReloadOutcome) -> None:
        if outcome.counted:
            self.reloads[outcome.result_label] += 1

    def render(self) -> str:
        snap = self.snapshot()
        apps = sorted({*snap.app_names(), *snap.exited})
        totals = {app: t.copy() for app, t in snap.exited.items()}
        states: dict[str, Counter[str]] = {app: Counter() for app in apps}
        in_flight: Counter[str] = Counter()
        connections: Counter[str] = Counter()
        for w in snap.workers:
            totals.setdefault(w.app, Totals()).add(w.counters)
            states[w.app][w.state] += 1
            in_flight[w.app] += w.counters.in_flight
            connections[w.app] += w.counters.connections
        out = _Writer()
        out.family("forkserve_workers", "gauge", "Worker processes by state.")
        for app in apps:
            for state in STATES:
                out.sample("forkserve_workers", {"app": app, "state": state}, states[app][state])
        out.family("forkserve_workers_desired", "gauge", "Workers the site file asks for.")
        for name, spec in sorted(snap.desired.apps.items()):
            out.sample("forkserve_workers_desired", {"app": name}, spec.workers)
        self._requests(out, apps, totals)
        out.family("forkserve_in_flight_requests", "gauge", "Requests being handled right now.")
        for app in apps:
            out.sample("forkserve_in_flight_requests", {"app": app}, in_flight[app])
        out.family("forkserve_connections", "gauge", "Open client connections.")
        for app in apps:
            out.sample("forkserve_connections", {"app": app}, connections[app])
        self._master(out, snap, apps)
        return out.text()

    @staticmethod
    def _requests(out: _Writer, apps: list[str], totals: dict[str, Totals]) -> None:
        out.family("forkserve_requests_total", "counter", "Requests answered, by status class.")
        for app in apps:
            t = totals.get(app, Totals())
            for i, cls in enumerate(CLASSES):
                out.sample("forkserve_requests_total", {"app": app, "status_class": cls}, t.by_class[i])
        out.family("forkserve_request_duration_seconds", "histogram", "Time to answer a request.")
        for app in apps:
            t = totals.get(app, Totals())
            running = 0  # the slots hold per-bucket counts; Prometheus buckets are cumulative
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), t.buckets, strict=True):
                running += n
                out.sample("forkserve_request_duration_seconds_bucket", {"app": app, "le": _le(bound)}, running)
            out.sample("forkserve_request_duration_seconds_sum", {"app": app}, t.duration_us / 1e6)
            out.sample("forkserve_request_duration_seconds_count", {"app": app}, running)

    def _master(self, out: _Writer, snap: Snapshot, apps: list[str]) -> None:
        out.family("forkserve_restarts_total", "counter", "Workers replaced, by cause.")
        for app in sorted({*apps, *(app for app, _ in snap.restarts)}):
            for cause in RESTART_CAUSES:
                out.sample("forkserve_restarts_total", {"app": app, "cause": cause}, snap.restarts.get((app, cause), 0))
        out.family("forkserve_worker_crashes_total", "counter", "Workers that died unasked, by cause.")
        for app in sorted({*apps, *(app for app, _ in snap.crashes)}):
            for cause in CRASH_CAUSES:
                out.sample("forkserve_worker_crashes_total", {"app": app, "cause": cause},
                           snap.crashes.get((app, cause), 0))
        out.family("forkserve_reloads_total", "counter", "Site file reloads, by result.")
        for result in RELOAD_RESULTS:
            out.sample("forkserve_reloads_total", {"result": result}, self.reloads[result])
        out.family("forkserve_loop_errors_total", "counter", "Master loop steps that raised (logged, survived).")
        out.sample("forkserve_loop_errors_total", {}, snap.loop_errors)
        out.family("forkserve_site_info", "gauge", "The site revision applied.")
        out.sample("forkserve_site_info", {"revision": snap.site.revision, "path": snap.site.path}, 1)
        out.family("forkserve_app_info", "gauge", "The desired revision of each app.")
        for name, spec in sorted(snap.desired.apps.items()):
            out.sample("forkserve_app_info", {"app": name, "revision": spec.revision}, 1)
        out.family("forkserve_master_start_time_seconds", "gauge", "Start time of the master, Unix seconds.")
        out.sample("forkserve_master_start_time_seconds", {}, snap.started_wall)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        number = repr(float(value)) if isinstance(value, float) else str(value)
        self.lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _HTTPConnection:
    def __init__(self, server: MetricsServer, sock: socket.socket, now: float) -> None:
        self.server = server
        self.sock = sock
        self.inbuf = b""
        self.out = b""
        self.last = now
        self.writing = False

    def on_event(self) -> None:
        self.last = time.monotonic()
        if not self.writing:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.server.forget(self)
                return
            if not data:
                self.server.forget(self)
                return
            self.inbuf += data
            if b"\r\n\r\n" in self.inbuf or b"\n\n" in self.inbuf:
                self._respond(self.server.answer(self.inbuf))
            elif len(self.inbuf) > MAX_REQUEST:
                self._respond(_response(431, "request header too large\n"))
            else:
                return
        self._flush()

    def _respond(self, response: bytes) -> None:
        self.out = response
        self.writing = True
        self.server.selector.modify(self.sock, selectors.EVENT_WRITE, self.on_event)

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.server.forget(self)
            return
        self.out = self.out[sent:]
        if not self.out:
            self.server.forget(self)


def _response(status: int, body: str, head: bool = False, content_type: str = "text/plain; charset=utf-8") -> bytes:
    reasons = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
               431: "Request Header Fields Too Large", 503: "Service Unavailable"}
    data = body.encode()
    header = (f"HTTP/1.0 {status} {reasons[status]}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    return header if head else header + data


class MetricsServer(LoopConnections):
    idle_timeout = IDLE_TIMEOUT

    def __init__(self, address: str, metrics: Metrics, selector: selectors.BaseSelector,
                 inherited: list[int] | None = None) -> None:
        bind = parse_bind(address)
        if bind.kind != "tcp":
            raise ValueError(f"metrics: {address!r} must be HOST:PORT")
        super().__init__(selector)
        self.metrics = metrics
        self.listener: Listener = open_listener(bind, 64, 0o600, inherited)
        self.listener.sock.setblocking(False)
        selector.register(self.listener.sock, selectors.EVENT_READ, self._accept)

    @property
    def address(self) -> str:
        return self.listener.address

    def _accept(self) -> None:
        now = time.monotonic()
        while True:
            try:
                conn, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                conn.close()
                continue
            conn.setblocking(False)
            connection = _HTTPConnection(self, conn, now)
            self.connections[conn.fileno()] = connection
            self.selector.register(conn, selectors.EVENT_READ, connection.on_event)

    def answer(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, "bad request\n")
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz", "/readyz"):
            return _response(404, "not found: try /metrics, /healthz or /readyz\n")
        if method not in ("GET", "HEAD"):
            return _response(405, "method not allowed\n")
        head = method == "HEAD"
        if target == "/healthz":  # liveness: the master loop answered
            return _response(200, "ok\n", head=head)
        if target == "/readyz":  # readiness: what `forkserve status --ready` says, for HTTP probes
            line = readiness(render(self.metrics.snapshot(), workers=False))
            return _response(200 if line == "ready" else 503, line + "\n", head=head)
        return _response(200, self.metrics.render(), head=head, content_type=CONTENT_TYPE)

    def close(self) -> None:
        self.forget_all()
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener.sock)
        close_listener(self.listener)
