"""Metrics text: parsed by prometheus_client's parser; counters survive workers exiting; the HTTP responder."""

from __future__ import annotations

import socket
import time

from prometheus_client.parser import text_string_to_metric_families

from forkserve.channel import STATUS_BASE
from forkserve.metrics import Metrics, MetricsServer
from forkserve.outcomes import ReloadKind, ReloadOutcome
from forkserve.state import Phase


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def test_render_parses_and_survives_worker_exit(fake_master) -> None:
    m = fake_master()
    metrics = Metrics(m.snapshot)
    end = m.add_worker("web")
    m.add_worker("api")
    end.record(200, 0.003)
    end.record(200, 0.3)
    end.record(503, 20.0)
    m.records.restarts[("web", "crash")] += 1
    metrics.count_reload(ReloadOutcome(ReloadKind.APPLIED, "abc", "no changes"))
    metrics.count_reload(ReloadOutcome(ReloadKind.INVALID, "abc", problems=2))
    metrics.count_reload(ReloadOutcome(ReloadKind.UNCHANGED, "abc"))  # a file event, same content: not counted
    text = metrics.render()
    assert value(text, "forkserve_requests_total", app="web", status_class="2xx") == 2
    assert value(text, "forkserve_requests_total", app="web", status_class="5xx") == 1
    assert value(text, "forkserve_request_duration_seconds_bucket", app="web", le="0.005") == 1
    assert value(text, "forkserve_request_duration_seconds_bucket", app="web", le="0.5") == 2
    assert value(text, "forkserve_request_duration_seconds_bucket", app="web", le="+Inf") == 3
    assert value(text, "forkserve_request_duration_seconds_count", app="web") == 3
    assert abs(value(text, "forkserve_request_duration_seconds_sum", app="web") - 20.303) < 1e-6
    assert value(text, "forkserve_workers", app="web", state="idle") == 1
    assert value(text, "forkserve_restarts_total", app="web", cause="crash") == 1
    assert value(text, "forkserve_reloads_total", result="applied") == 1
    assert value(text, "forkserve_reloads_total", result="invalid") == 1
    assert value(text, "forkserve_app_info", app="web", revision=m.desired.apps["web"].revision) == 1
    pid = next(p for p, r in m.records.workers.items() if r.view.app == "web")
    end.record(404, 0.01)  # served just before it exited: still counted
    m.records.update(pid, phase=Phase.DRAINING)
    m.worker_exited(pid, 0, 1.0)
    text = metrics.render()
    assert value(text, "forkserve_requests_total", app="web", status_class="2xx") == 2
    assert value(text, "forkserve_requests_total", app="web", status_class="4xx") == 1
    assert value(text, "forkserve_request_duration_seconds_count", app="web") == 4
    assert value(text, "forkserve_workers", app="web", state="idle") == 0
    replacement = m.add_worker("web")
    replacement.slot[STATUS_BASE + 1] += 1
    assert value(metrics.render(), "forkserve_requests_total", app="web", status_class="2xx") == 3


def _pump(server: MetricsServer, selector, done) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "no answer from the metrics responder"
        for key, _ in selector.select(0.05):
            key.data()


def _ask(server: MetricsServer, selector, request: bytes) -> bytes:
    host, port = server.address.removeprefix("tcp://").rsplit(":", 1)
    client = socket.create_connection((host, int(port)), timeout=5)
    client.setblocking(False)
    chunks: list[bytes] = []
    finished = []
    client.sendall(request)

    def done() -> bool:
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return False
        chunks.append(data)
        if not data:
            finished.append(True)
        return bool(finished)

    try:
        _pump(server, selector, done)
    finally:
        client.close()
    return b"".join(chunks)


def test_http_responder(fake_master) -> None:
    m = fake_master()
    m.add_worker("web")
    server = MetricsServer("127.0.0.1:0", Metrics(m.snapshot), m.selector)
    try:
        reply = _ask(server, m.selector, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK") and b"version=0.0.4" in head
        assert value(body.decode(), "forkserve_workers_desired", app="web") == 2
        assert _ask(server, m.selector, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
        assert _ask(server, m.selector, b"GET /healthz HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nok\n")
        not_ready = _ask(server, m.selector, b"GET /readyz HTTP/1.0\r\n\r\n")
        assert not_ready.startswith(b"HTTP/1.0 503") and not_ready.endswith(b"not ready: api 0/1, web 1/2\n")
        m.add_worker("web")
        m.add_worker("api")
        assert _ask(server, m.selector, b"GET /readyz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK")
        assert _ask(server, m.selector, b"POST /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 405")
        assert _ask(server, m.selector, b"nonsense\r\n\r\n").startswith(b"HTTP/1.0 400")
        assert _ask(server, m.selector, b"GET /metrics HTTP/1.0\r\n" + b"X: y\r\n" * 2000).startswith(
            b"HTTP/1.0 431")
        silent = socket.create_connection(("127.0.0.1", int(server.address.rsplit(":", 1)[1])))
        _pump(server, m.selector, lambda: len(server.connections) == 1)
        server.tick(time.monotonic() + 60)  # idle connections are dropped
        assert not server.connections
        silent.close()
    finally:
        server.close()
