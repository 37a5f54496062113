"""status.render of a hand-set Master's snapshot, and the status table."""

from __future__ import annotations

import json

from forkserve.control.client import format_status
from forkserve.state import Backoff, Phase
from forkserve.status import render
from tests.control.conftest import SITE


def test_converged_site(fake_master) -> None:
    m = fake_master()
    web = m.add_worker("web", started=1.0)
    m.add_worker("web", started=2.0)
    m.add_worker("api", started=3.0)
    web.slot[1] += 7  # REQUESTS
    web.slot[7] = 1  # IN_FLIGHT
    m.records.note_healthy(m.desired, 11.0)  # the loop's pass: every worker has been ready long enough
    snap = render(m.snap(now=11.0, wall=1000.0))
    json.dumps(snap)  # JSON-able
    assert snap["ready"] is True
    assert snap["site"]["revision"] == m.site.revision and snap["site"]["errors"] == []
    apps = {a["name"]: a for a in snap["apps"]}
    assert [a["name"] for a in snap["apps"]] == ["api", "web"]
    assert apps["web"] | {"workers": None, "binds": None, "restarts": None} == {
        "name": "web", "in_site": True, "revision": m.desired.apps["web"].revision,
        "proven_revision": m.desired.apps["web"].revision, "desired": 2, "running": 2,
        "ready": 2, "updated": 2, "state": "running", "reason": "", "backoff": None, "workers": None, "binds": None,
        "restarts": None, "crashes": {}, "last_crash": None}
    first = apps["web"]["workers"][0]
    assert (first["age"], first["state"], first["requests"], first["in_flight"]) == (10.0, "busy", 7, 1)
    assert apps["web"]["workers"][1]["state"] == "idle"
    assert apps["api"]["binds"][1]["bind"].startswith("unix:") and apps["api"]["binds"][1]["address"] is None
    assert set(apps["api"]["restarts"]) == {"crash", "timeout", "boot_timeout", "max_requests", "rolled"}


def test_scaled_rolling_backoff_and_removed(fake_master) -> None:
    m = fake_master()
    old_web = m.desired.apps["web"].revision
    m.add_worker("web", revision=old_web)
    m.add_worker("web", revision=old_web)
    m.add_worker("api")
    m.set_site(SITE.replace("workers = 2", "workers = 3").replace('module = "basic:app"\nbinds = ["127.0.0.1:0"]\n',
                                                                  'module = "basic:app2"\nbinds = ["127.0.0.1:0"]\n'))
    m.add_worker("web", phase=Phase.BOOTING)
    m.records.restarts[("web", "rolled")] += 1
    snap = render(m.snap(now=5.0))
    web = next(a for a in snap["apps"] if a["name"] == "web")
    assert (web["desired"], web["running"], web["ready"], web["updated"], web["state"]) == (3, 3, 2, 0, "rolling")
    assert web["reason"] == "rolling: 0/3 updated (1 booting)"
    assert [w["state"] for w in web["workers"]] == ["idle", "idle", "booting"]
    assert web["restarts"]["rolled"] == 1
    assert snap["ready"] is False
    m.records.backoff[("web", m.desired.apps["web"].revision)] = Backoff(failures=2, retry_at=9.0, last_error="boom")
    web = next(a for a in render(m.snap(now=5.0, wall=100.0))["apps"] if a["name"] == "web")
    assert web["state"] == "backoff"
    assert web["backoff"] == {"failures": 2, "retry_at": 104.0, "retry_in": 4.0, "error": "boom"}
    assert web["reason"] == f"revision {web['revision']} cannot boot: boom"
    m.set_site(SITE.split("[apps.api]")[0])  # api removed; its worker still drains
    api = next(a for a in render(m.snap())["apps"] if a["name"] == "api")
    assert (api["in_site"], api["state"], api["running"]) == (False, "removing", 1)
    assert api["reason"] == "removed from the site file: 1 worker draining"


def test_invalid_file_errors_and_table(fake_master) -> None:
    m = fake_master()
    m.add_worker("web")
    m.site.errors = ("site.toml:3:11: apps.web.workers: must be at least 1",)
    snap = render(m.snap())
    assert snap["site"]["errors"] == list(m.site.errors)
    text = format_status(snap)
    assert "must be at least 1" in text and "\033[" not in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("APP  STATE"))
    row = next(line for line in lines if line.startswith("web "))
    assert row.index("degraded") == header.index("STATE")  # aligned columns
    assert "web: degraded: 1/2 updated" in lines  # the reason, under the table
    assert "\033[33mdegraded" in format_status(snap, colour=True)


def test_the_reason_of_a_backoff_is_the_last_line_of_the_boot_error(fake_master) -> None:
    m = fake_master()
    revision = m.desired.apps["web"].revision
    error = "Traceback (most recent call last):\n  File \"x.py\", line 1\nImportError: cannot import name 'y'\n"
    m.records.backoff[("web", revision)] = Backoff(failures=1, retry_at=9.0, last_error=error)
    snap = render(m.snap(now=5.0))
    web = next(a for a in snap["apps"] if a["name"] == "web")
    assert web["reason"] == f"revision {revision} cannot boot: ImportError: cannot import name 'y'"
    assert f"web: revision {revision} cannot boot: ImportError: cannot import name 'y'" in format_status(snap)
    m.records.backoff[("web", revision)] = Backoff(failures=1, retry_at=9.0, last_error="")
    web = next(a for a in render(m.snap(now=5.0))["apps"] if a["name"] == "web")
    assert web["reason"] == f"revision {revision} cannot boot: its workers exit during boot"
