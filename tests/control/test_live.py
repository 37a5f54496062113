"""The control plane against real masters: status, plan, reload, stop, metrics, sd_notify, socket activation."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forkserve.cli import main
from tests.integration.conftest import APPS, Site, get, wait_until

SITE = """
[server]
control_socket = "@DIR@/run/control.sock"
metrics = "127.0.0.1:0"
graceful_timeout = 5

[apps.web]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = 1
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def status(site: Site, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    # --socket: finding the socket from SITE reads the file, and the master's watcher (for now) takes every
    # open of a file in the site's directory as an event that restarts its debounce: polling would starve it
    code, out = cli(capsys, "status", "--socket", str(site.dir / "run" / "control.sock"), "--json")
    assert code == 0, out
    return json.loads(out)


def app_of(snap: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in snap["apps"] if a["name"] == name)


def test_status_after_a_scale_and_during_a_roll(site_factory, capsys) -> None:
    site = site_factory(SITE).start()
    control = site.dir / "run" / "control.sock"
    assert stat.S_IMODE(os.stat(control).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(control).st_mode)
    assert stat.S_IMODE(os.stat(control.parent).st_mode) == 0o700
    site.write(SITE.replace("workers = 1", "workers = 3"))
    wait_until(lambda: app_of(status(site, capsys), "web")["ready"] == 3, what="scaled to 3")
    snap = status(site, capsys)
    web = app_of(snap, "web")
    assert (web["desired"], web["running"], web["updated"], web["state"]) == (3, 3, 3, "running")
    assert snap["ready"] is True and "scaled 1->3" in snap["site"]["last_result"]
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", web["binds"][0]["address"])
    assert web["binds"][0]["address"] != "tcp://127.0.0.1:0"
    assert all(w["state"] == "idle" and w["rss"] > 0 for w in web["workers"])
    old_revision = web["revision"]
    site.write(SITE.replace("workers = 1", "workers = 3").replace('"basic:app"', '"slow_import:app"')
               + 'env = { IMPORT_SECONDS = "1.5" }\n')
    rolling = wait_until(lambda: (a := app_of(status(site, capsys), "web"))["state"] == "rolling" and a,
                         what="the roll to show")
    assert rolling["revision"] != old_revision and rolling["ready"] >= 3
    assert {w["revision"] for w in rolling["workers"]} >= {old_revision, rolling["revision"]}
    assert {"booting"} <= {w["state"] for w in rolling["workers"]}
    code, out = cli(capsys, "status", str(site.path))
    assert code == 0 and "rolling" in out and re.search(r"^web\s+\d+\s+" + old_revision, out, re.M)
    wait_until(lambda: app_of(status(site, capsys), "web")["state"] == "running", timeout=30, what="roll done")
    assert app_of(status(site, capsys), "web")["restarts"]["rolled"] == 3
    assert cli(capsys, "status", str(site.path), "--ready")[0] == 0


def test_plan_exit_codes_for_each_change_kind(site_factory, capsys, tmp_path: Path) -> None:
    site = site_factory(SITE).start()
    sock = str(site.dir / "run" / "control.sock")
    candidate = tmp_path / "candidate.toml"

    def plan(text: str) -> tuple[int, str]:
        candidate.write_text(text.replace("@DIR@", str(site.dir)).replace("@APPS@", str(APPS)))
        return cli(capsys, "plan", str(candidate), "--socket", sock)

    code, out = plan(SITE)
    assert code == 0 and "No changes" in out, out
    cases = {
        "scale": SITE.replace("workers = 1", "workers = 2"),
        "roll": SITE + 'env = { TAG = "v2" }\n',
        "rebind": SITE.replace('binds = ["127.0.0.1:0"]', 'binds = ["127.0.0.1:0", "unix:@DIR@/web.sock"]'),
        "add": SITE + '[apps.api]\nmodule = "basic:app"\nchdir = "@APPS@"\nbinds = ["127.0.0.1:0"]\n',
        "remove": SITE.replace("[apps.web]", "[apps.api]"),
        "settings": SITE.replace("graceful_timeout = 5", "graceful_timeout = 6"),
        "needs-restart": SITE.replace('metrics = "127.0.0.1:0"', 'metrics = "127.0.0.1:9"'),
    }
    for kind, text in cases.items():
        code, out = plan(text)
        assert code == 1, (kind, out)
        assert re.search(rf"^\s+\S\s+\S+\s+{re.escape(kind)}\s", out, re.M), (kind, out)
    code, out = plan(SITE.replace("workers = 1", "workers = 0"))
    assert code == 2 and "apps.web.workers" in out
    assert site.ready("web", 1) and len(site.children()) == 1  # nothing was applied
    code, out = cli(capsys, "plan", str(candidate), "--socket", str(tmp_path / "nobody.sock"))
    assert code == 2  # the invalid candidate, even without a master
    plan(SITE)
    code, out = cli(capsys, "plan", str(candidate), "--socket", str(tmp_path / "nobody.sock"))
    assert code == 1 and "no master is running" in out and "web  add" in out


def _scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_move_and_reload_stop(site_factory, capsys) -> None:
    site = site_factory(SITE).start()
    address = wait_until(lambda: (m := re.search(r"metrics on http://([0-9.:]+)/metrics", site.log())) and m[1])
    key = ("forkserve_requests_total", (("app", "web"), ("status_class", "2xx")))
    before = _scrape(address)[key]
    for _ in range(3):
        assert get(site.address("web"))[0] == 200
    wait_until(lambda: _scrape(address)[key] == before + 3, what="requests counted")
    metrics = _scrape(address)
    assert metrics[("forkserve_request_duration_seconds_count", (("app", "web"),))] == before + 3
    assert metrics[("forkserve_workers", (("app", "web"), ("state", "idle")))] == 1
    code, out = cli(capsys, "reload", str(site.path))
    assert code == 0 and "applied" in out
    assert _scrape(address)[("forkserve_reloads_total", (("result", "applied"),))] >= 1
    code, out = cli(capsys, "stop", str(site.path))
    assert code == 0
    assert site.proc is not None and site.proc.wait(timeout=30) == 0
    assert not (site.dir / "run" / "control.sock").exists()
    code, out = cli(capsys, "status", str(site.path))
    assert code == 2 and "no master is running" in out


def test_sd_notify(site_factory, capsys, tmp_path: Path, monkeypatch) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    receiver.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1: a ping every 0.5 s from the master loop
    site = site_factory(SITE.replace("workers = 1", "workers = 2")).start(wait_ready=False)
    messages: list[str] = []

    def until(line: str) -> None:
        while line not in messages:
            messages.extend(receiver.recv(4096).decode().split("\n"))

    try:
        until("READY=1")
        assert site.ready("web", 2)  # READY=1 only after the first converge
        until("WATCHDOG=1")
        messages.remove("WATCHDOG=1")
        until("WATCHDOG=1")  # and again: it keeps coming while the master runs
        assert any(m.startswith("STATUS=web 2/2 ready") for m in messages)
        messages.clear()
        assert cli(capsys, "reload", str(site.path))[0] == 0
        until("READY=1")
        at = messages.index("RELOADING=1")
        assert messages[at + 1].startswith("MONOTONIC_USEC=") and messages.index("READY=1") > at
        assert cli(capsys, "stop", str(site.path), "--fast")[0] == 0
        until("STOPPING=1")
    finally:
        receiver.close()


def test_socket_activation_serves_on_the_passed_fd(site_factory, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    site = site_factory(SITE.replace('binds = ["127.0.0.1:0"]', f'binds = ["127.0.0.1:{port}"]'))
    wrapper = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
               "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_FDNAMES'] = 'web'; "
               "os.execv(sys.executable, [sys.executable, '-m', 'forkserve', 'up', sys.argv[2]])")
    site.log_file = open(site.log_path, "ab")  # noqa: SIM115 - closed by Site.stop
    site.proc = subprocess.Popen([sys.executable, "-c", wrapper, str(listener.fileno()), str(site.path)],
                                 pass_fds=(listener.fileno(),), stdout=site.log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    listener.close()  # only the master holds it now: a served request proves it adopted the passed socket
    wait_until(lambda: site.ready("web", 1), what="web ready")
    assert f"listening on fd://3 (tcp://127.0.0.1:{port})" in site.log()
    status_code, body = get(("127.0.0.1", port))
    assert status_code == 200 and body.startswith("v1 ")
