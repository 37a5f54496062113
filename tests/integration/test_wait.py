"""`forkserve wait` against a real master, through the real command line: 0 after a good roll, 1 quickly for new
code that cannot import, 2 on timeout and when no master runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from forkserve.control.client import call, socket_path
from forkserve.control.protocol import Request
from tests.integration.conftest import Site, boot_failure, get, wait_until


def web(tag: str, module: str = "slow_import:app", import_seconds: float = 0.5) -> str:
    return f"""
[apps.web]
module = "{module}"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = 2
env = {{ TAG = "{tag}", IMPORT_SECONDS = "{import_seconds}" }}

[apps.other]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = 1
"""


def forkserve_wait(site: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkserve", "wait", str(site), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def workers(site: Site) -> list[dict[str, object]]:
    doc = call(socket_path(str(site.path), None), Request("status"))
    return [w for app in doc["apps"] if app["name"] == "web" for w in app["workers"]]


def started(site: Site) -> Site:
    site.start(wait_ready=False)
    wait_until(lambda: site.ready("web", 2) and site.ready("other", 1), timeout=30, what="the site to be ready")
    return site


def test_wait_exits_0_once_a_roll_is_done(site_factory) -> None:
    site = started(site_factory(web("v1")))
    address = site.address("web")
    site.write(web("v2"))  # and wait at once: the master has not noticed the edit yet
    done = forkserve_wait(site.path, "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "web: 0/2 updated" in done.stdout  # progress while the new workers import (0.5 s each)
    assert done.stdout.splitlines()[-1].startswith("forkserve wait: rolled out (other ")
    # when wait says done, the old code is gone: every live worker runs v2 and answers
    live = [w for w in workers(site) if w["state"] in ("booting", "idle", "busy")]
    assert len(live) == 2 and all(w["state"] != "booting" for w in live)
    assert {get(address)[1].split()[0] for _ in range(6)} == {"v2"}
    converged = forkserve_wait(site.path, "web", "--settle", "0")  # nothing to wait for: at once
    assert converged.returncode == 0 and converged.stdout == f"forkserve wait: rolled out (web {_revision(site)})\n"


def test_wait_exits_1_quickly_when_the_new_code_cannot_import(site_factory) -> None:
    site = started(site_factory(web("v1"), expect=boot_failure("web")))
    site.write(web("v2", module="broken:app"))
    began = time.monotonic()
    failing = forkserve_wait(site.path, "web", "--timeout", "60")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert time.monotonic() - began < 10
    assert "forkserve wait: rollout failing\nweb: revision " in failing.stderr
    assert "ImportError: this app cannot be imported (on purpose, for tests)" in failing.stderr
    assert {get(site.address("web"))[1].split()[0] for _ in range(4)} == {"v1"}  # the old workers serve on
    assert forkserve_wait(site.path, "other", "--settle", "0").returncode == 0  # only the named app counts


def test_wait_exits_2_on_timeout_and_for_an_unknown_app(site_factory) -> None:
    site = started(site_factory(web("v1")))
    site.write(web("v2", import_seconds=20))
    began = time.monotonic()
    late = forkserve_wait(site.path, "web", "--timeout", "2")
    assert late.returncode == 2, late.stdout + late.stderr
    assert 2 <= time.monotonic() - began < 10
    assert late.stderr.startswith("forkserve wait: timed out after 2s (web: 0/2 updated")
    unknown = forkserve_wait(site.path, "nope", "--settle", "0.5")
    assert unknown.returncode == 2 and "the running site has no app nope" in unknown.stderr


def test_wait_exits_2_when_no_master_runs(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(web("v1").replace("@APPS@", str(tmp_path)))
    missing = forkserve_wait(site, "--timeout", "5")
    assert missing.returncode == 2
    assert "no master is running" in missing.stderr


def _revision(site: Site) -> str:
    doc = call(socket_path(str(site.path), None), Request("status"))
    return str(next(a["revision"] for a in doc["apps"] if a["name"] == "web"))
