"""Upgrading forkserve itself: SIGUSR2 / `forkserve upgrade` re-executes the master in place, keeping every socket,
and replaces the workers once the new ones are ready. Under a steady load: no failed request."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forkserve.cli import main
from forkserve.control.client import call
from forkserve.control.protocol import Request
from tests.integration.conftest import APPS, Site, alive, get, wait_until
from tests.integration.test_reconcile import Load

SITE = """
[server]
control_socket = "@DIR@/run/control.sock"
graceful_timeout = 5
watch = false

[apps.web]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0", "unix:@DIR@/web.sock"]
workers = 2
worker_class = "gevent"

[apps.pre]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = 2
preload = true
"""

Factory = Callable[..., Site]


def status(site: Site) -> dict[str, Any]:
    return call(str(site.dir / "run" / "control.sock"), Request("status"), timeout=5)


def pids(site: Site) -> set[int]:
    return {w["pid"] for a in status(site)["apps"] for w in a["workers"]}


def serving(site: Site) -> bool:
    try:
        doc = status(site)
    except Exception:  # between the exec and the new control socket
        return False
    return all(a["state"] == "running" for a in doc["apps"])


def upgraded(site: Site, started_at: float) -> bool:
    try:
        return status(site)["master"]["started_at"] != started_at and serving(site)
    except Exception:
        return False


def test_sigusr2_re_executes_in_place_with_no_failed_request(site_factory: Factory) -> None:
    site = site_factory(SITE).start()
    wait_until(lambda: serving(site), what="both apps running")
    web, pre = site.address("web"), site.address("pre")
    before, started = pids(site), status(site)["master"]["started_at"]
    with Load(web) as load_web, Load(pre) as load_pre, Load(str(site.dir / "web.sock")) as load_unix:
        site.signal(signal.SIGUSR2)
        wait_until(lambda: upgraded(site, started), timeout=30, what="the re-executed master to serve")
        wait_until(lambda: not any(alive(pid) for pid in before), timeout=20, what="the previous workers to go")
        seen = (load_web.ok, load_pre.ok, load_unix.ok)
        wait_until(lambda: load_web.ok > seen[0] + 20 and load_pre.ok > seen[1] + 20 and load_unix.ok > seen[2] + 20)
    log = site.log()
    assert load_web.failures == [] and load_pre.failures == [] and load_unix.failures == [], log[-3000:]
    assert status(site)["master"]["pid"] == site.pid  # the same process: systemd's MAINPID stays true
    assert not before & pids(site)
    assert "upgrade: every app is ready; retiring the previous master's" in log
    assert (site.dir / "web.sock").exists()
    assert site.address("web") == web  # the very same sockets


def test_forkserve_upgrade_waits_for_the_new_master(site_factory: Factory, capsys: Any) -> None:
    site = site_factory(SITE).start()
    wait_until(lambda: serving(site), what="both apps running")
    code = main(["upgrade", "--socket", str(site.dir / "run" / "control.sock")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "upgraded: master" in out and status(site)["master"]["pid"] == site.pid
    assert get(site.address("web"))[0] == 200


def test_an_upgrade_the_installed_code_cannot_check_is_refused(site_factory: Factory, capsys: Any,
                                                              tmp_path: Path) -> None:
    site = site_factory(SITE, expect=[r"upgrade refused", r"forkserve check.*failed", r"workerz"]).start()
    wait_until(lambda: serving(site), what="both apps running")
    before = pids(site)
    text = site.path.read_text()
    site.path.write_text(text + "\n[apps.bad]\nmodule = 'basic:app'\nchdir = '" + str(APPS) + "'\nworkerz = 1\n")
    code = main(["upgrade", "--socket", str(site.dir / "run" / "control.sock")])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err, err
    assert pids(site) == before and "upgrade refused" in site.log()
    assert os.path.exists(site.dir / "run" / "control.sock")


def test_under_systemd_an_upgrade_is_a_reload_not_a_stop(site_factory: Factory, tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    site = site_factory(SITE).start()
    wait_until(lambda: serving(site), what="both apps running")
    started = status(site)["master"]["started_at"]
    messages: list[str] = []

    def heard(text: str) -> bool:
        with contextlib.suppress(TimeoutError):
            messages.extend(notify.recv(4096).decode().splitlines())
        return any(text in m for m in messages)

    wait_until(lambda: heard("READY=1"), what="the first READY=1")
    messages.clear()
    site.signal(signal.SIGUSR2)
    wait_until(lambda: upgraded(site, started), timeout=30, what="the re-executed master")
    wait_until(lambda: heard("READY=1"), timeout=20, what="READY=1 from the new master")
    notify.close()
    assert "RELOADING=1" in messages and not any(m.startswith("STOPPING=1") for m in messages), messages


def test_a_stop_asked_for_during_the_preflight_is_final(site_factory: Factory) -> None:
    site = site_factory(SITE, expect=[r"upgrade abandoned: the master is stopping"]).start()
    wait_until(lambda: serving(site), what="both apps running")
    site.signal(signal.SIGUSR2)
    wait_until(lambda: "upgrade: checking the site" in site.log(), what="the preflight")
    site.signal(signal.SIGTERM)
    assert site.proc is not None
    assert site.proc.wait(timeout=30) == 0
    assert "re-executing" not in site.log()


def test_a_bind_the_new_master_cannot_open_does_not_stop_it(site_factory: Factory) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    site = site_factory(SITE, expect=[rf"cannot bind tcp://127.0.0.1:{port}"]).start()
    try:
        wait_until(lambda: serving(site), what="both apps running")
        web, started = site.address("web"), status(site)["master"]["started_at"]
        site.write(SITE.replace('binds = ["127.0.0.1:0", "unix:@DIR@/web.sock"]',
                                f'binds = ["127.0.0.1:0", "unix:@DIR@/web.sock", "127.0.0.1:{port}"]'))
        site.signal(signal.SIGUSR2)  # watch = false: the edit is read by the new master only
        wait_until(lambda: "retrying in" in site.log(), timeout=30, what="the failed bind to be logged")
        assert site.proc is not None and site.proc.poll() is None
        wait_until(lambda: status(site)["master"]["started_at"] != started, what="the new master")
        assert get(web)[0] == 200
    finally:
        taken.close()


def test_a_unix_bind_removed_before_an_upgrade_leaves_no_file(site_factory: Factory) -> None:
    site = site_factory(SITE).start()
    wait_until(lambda: serving(site), what="both apps running")
    started = status(site)["master"]["started_at"]
    assert (site.dir / "web.sock").exists()
    site.write(SITE.replace(', "unix:@DIR@/web.sock"', ""))
    site.signal(signal.SIGUSR2)
    wait_until(lambda: upgraded(site, started), timeout=30, what="the re-executed master")
    assert not (site.dir / "web.sock").exists()
