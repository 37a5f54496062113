"""Shipping new code: `forkserve reload` rolls in-place code; a release symlink switch rolls with no command; a
broken release keeps the old one serving. Real masters, real files, steady client load counting failures."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forkserve.control.client import call
from forkserve.control.protocol import Request
from tests.integration.conftest import Site, get, pid_of, wait_until
from tests.integration.test_reconcile import Load

APP = '''
import os
VERSION = {version!r}

def app(environ, start_response):
    body = f"{{VERSION}} pid={{os.getpid()}}\\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
BROKEN = "raise ImportError('release 3 is broken on purpose')\n"

SITE = """
[server]
control_socket = "@DIR@/run/control.sock"
graceful_timeout = 5

[apps.web]
module = "webapp:app"
chdir = "{chdir}"
binds = ["127.0.0.1:0"]
workers = 2
"""

Factory = Callable[..., Site]


def release(root: Path, name: str, code: str) -> Path:
    directory = root / "releases" / name
    directory.mkdir(parents=True)
    (directory / "webapp.py").write_text(code)
    return directory


def point_current(root: Path, target: Path) -> None:
    """`ln -sfn` done atomically, as deploy tools do: a new link renamed over the old one."""
    tmp = root / "current.tmp"
    tmp.symlink_to(target)
    os.replace(tmp, root / "current")


def status(site: Site) -> dict[str, Any]:
    return call(str(site.dir / "run" / "control.sock"), Request("status"), timeout=5)


def versions(site: Site) -> set[str]:
    address = site.address("web")
    return {get(address)[1].split()[0] for _ in range(6)}


def web(site: Site) -> dict[str, Any]:
    return next(a for a in status(site)["apps"] if a["name"] == "web")


def converged(site: Site) -> bool:
    app = web(site)
    return app["state"] == "running" and app["updated"] == 2 and app["running"] == 2


def test_reload_rolls_in_place_code_under_load_with_no_failed_request(site_factory: Factory, tmp_path: Path) -> None:
    code = release(tmp_path, "app", APP.format(version="v1"))
    site = site_factory(SITE.format(chdir=code)).start()
    address = site.address("web")
    assert versions(site) == {"v1"}
    before = web(site)["revision"]
    with Load(address) as load:
        (code / "webapp.py").write_text(APP.format(version="v2"))  # in place: the file did not change
        reply = call(str(site.dir / "run" / "control.sock"), Request("reload", apps=("web",)), timeout=30)
        assert reply["outcome"] == "applied" and reply["rolled"] == ["web"], reply
        wait_until(lambda: web(site)["revision"] != before and converged(site), timeout=20, what="the roll")
        wait_until(lambda: load.ok > 20)
    assert load.failures == [], site.log()[-3000:]
    assert versions(site) == {"v2"}
    assert "code rolling: web" in site.log()


def test_sighup_rolls_every_app(site_factory: Factory, tmp_path: Path) -> None:
    code = release(tmp_path, "app", APP.format(version="v1"))
    site = site_factory(SITE.format(chdir=code)).start()
    pids = {w["pid"] for w in web(site)["workers"]}
    (code / "webapp.py").write_text(APP.format(version="v2"))
    site.signal(signal.SIGHUP)
    wait_until(lambda: converged(site) and not pids & {w["pid"] for w in web(site)["workers"]}, timeout=20,
               what="every worker replaced")
    assert versions(site) == {"v2"}


def test_a_release_symlink_switch_rolls_with_no_command(site_factory: Factory, tmp_path: Path) -> None:
    one = release(tmp_path, "1", APP.format(version="r1"))
    two = release(tmp_path, "2", APP.format(version="r2"))
    point_current(tmp_path, one)
    site = site_factory(SITE.format(chdir=tmp_path / "current")).start()
    address = site.address("web")
    assert versions(site) == {"r1"}
    with Load(address) as load:
        point_current(tmp_path, two)
        wait_until(lambda: versions(site) == {"r2"} and converged(site), timeout=20, what="the release roll")
        wait_until(lambda: load.ok > 20)
    assert load.failures == [], site.log()[-3000:]
    assert re.search(r"app web: release changed \(.*/releases/1 -> .*/releases/2\): rolling to it", site.log())


def test_a_broken_release_keeps_the_old_one_serving_from_its_own_directory(site_factory: Factory,
                                                                           tmp_path: Path) -> None:
    one = release(tmp_path, "1", APP.format(version="r1"))
    bad = release(tmp_path, "3", BROKEN)
    point_current(tmp_path, one)
    site = site_factory(SITE.format(chdir=tmp_path / "current"),
                        expect=[r"release 3 is broken on purpose", r"failed to boot", r"failures in a row",
                                r"died unexpectedly"]).start()
    address = site.address("web")
    wait_until(lambda: web(site)["proven_revision"] is not None, timeout=15, what="release 1 to be proven")
    with Load(address) as load:
        point_current(tmp_path, bad)
        wait_until(lambda: web(site)["state"] == "backoff", timeout=20, what="the bad release to back off")
        wait_until(lambda: load.ok > 20)
    assert load.failures == [], site.log()[-3000:]  # the switch to a bad release cost no request
    # an old worker dies meanwhile (no load now: a SIGKILL drops what that worker was serving, by design)
    victim = pid_of(get(address)[1])
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: web(site)["ready"] == 2 and victim not in {w["pid"] for w in web(site)["workers"]},
               timeout=20, what="the old worker's replacement")
    assert versions(site) == {"r1"}  # the replacement runs release 1's code, not what `current` points at now
