"""A crash of a ready worker through a real Master's records: status shows the last crash (what the worker was
serving, read from its shared-memory slot) and the causes; metrics count them (issue 12, item 3)."""

from __future__ import annotations

import signal

from forkserve.channel import IN_FLIGHT, REQUEST_START
from forkserve.http.context import Context
from forkserve.metrics import Metrics
from forkserve.outcomes import CRASH_CAUSES
from forkserve.status import render
from tests.control.test_metrics import samples, value


def test_status_and_metrics_show_crashes(fake_master) -> None:
    m = fake_master()
    metrics = Metrics(m.snapshot)
    end = m.add_worker("web", started=1.0)
    m.add_worker("web", started=1.0)
    ctx = Context(lambda env, start: [], end.slot, end.record, None, keepalive=0, timeout=5, limit_line=8190,
                  limit_fields=100, limit_field=8190, access=None, max_requests=0, on_max_requests=lambda: None,
                  text=end.text, starts=end.starts)
    ctx.show("GET", "/report?id=7")
    end.starts[REQUEST_START] = 9.6  # started at monotonic 9.6 s
    end.slot[IN_FLIGHT] = 1
    web = next(a for a in render(m.snap(now=10.0))["apps"] if a["name"] == "web")
    assert web["workers"][0]["serving"] == {"request": "GET /report?id=7", "for": 0.4}
    assert web["workers"][1]["serving"] is None and web["last_crash"] is None
    pid = min(m.records.workers)
    m.records.worker_exited(pid, signal.SIGSEGV, 10.0, stopping=False)
    m.records.failed("web", "0bad", 10.0, "ImportError: no")  # a boot failure (of any revision)
    web = next(a for a in render(m.snap(now=11.0, wall=100.0))["apps"] if a["name"] == "web")
    assert web["last_crash"] == {"pid": pid, "cause": "SIGSEGV", "exit": "killed by SIGSEGV", "at": 99.0,
                                 "serving": "GET /report?id=7", "serving_for": 0.4, "in_flight": 1}
    assert web["crashes"] == {"SIGSEGV": 1, "boot_failure": 1}
    assert web["restarts"]["crash"] == 1 and web["backoff"] is None  # a crash is not a boot failure
    text = metrics.render()
    assert value(text, "forkserve_worker_crashes_total", app="web", cause="SIGSEGV") == 1
    assert value(text, "forkserve_worker_crashes_total", app="web", cause="boot_failure") == 1
    assert value(text, "forkserve_worker_crashes_total", app="api", cause="SIGKILL") == 0
    labels = {dict(k[1])["cause"] for k in samples(text) if k[0] == "forkserve_worker_crashes_total"}
    assert labels == set(CRASH_CAUSES)  # a fixed set: bounded cardinality
