"""The master loop cannot stall or fall over: real masters with a fault patched into one of their loop steps.

Each master runs `forkserve up` in a fresh interpreter whose first lines patch one method (the fault), so the
loop, the workers, the sockets and the signals are all the real ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from forkserve.control.client import call
from forkserve.control.protocol import Request
from tests.integration.conftest import Site, alive, get, pid_of, wait_until

SITE = """
[server]
control_socket = "@DIR@/run/control.sock"
graceful_timeout = 10

[apps.web]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = 2
"""


class PatchedSite(Site):
    """A Site whose master first runs `patch` (Python source), then `forkserve up`."""

    def __init__(self, directory: Path, text: str, name: str, expect: Iterable[str], patch: str,
                 env: dict[str, str] | None = None, app: str = "web", workers: int = 2) -> None:
        super().__init__(directory, text, name, expect)
        self.patch = textwrap.dedent(patch)
        self.app, self.workers = app, workers
        self.env = {**os.environ, **(env or {})}

    def start(self, wait_ready: bool = True) -> Site:
        script = f"{self.patch}\nfrom forkserve.cli import main\nraise SystemExit(main(['up', {str(self.path)!r}]))"
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)
        if wait_ready:
            wait_until(lambda: self.ready(self.app, self.workers), what=f"{self.app} to be ready")
        return self

    def status(self) -> dict[str, Any]:
        return call(str(self.dir / "run" / "control.sock"), Request("status"), timeout=5)


def web_pids(site: PatchedSite) -> set[int]:
    return {w["pid"] for a in site.status()["apps"] for w in a["workers"] if w["ready"]}


Factory = Callable[..., Any]
SLOW_CHILD = """
    import time
    import forkserve.config.validate as validate
    original = validate._child
    def slow_child(data, *args):
        if b"# slow" in data:
            time.sleep({seconds})
        return original(data, *args)
    validate._child = slow_child
"""


def patched(site_factory: Factory, patch: str, text: str = SITE, expect: Iterable[str] = (), **extra: Any
            ) -> PatchedSite:
    site: PatchedSite = site_factory(text, expect=expect, site_class=PatchedSite, patch=patch, **extra)
    return site


def test_a_step_that_raises_once_is_logged_counted_and_the_loop_goes_on(site_factory: Factory) -> None:
    site = patched(site_factory, """
        from forkserve.master.records import Records
        original, calls = Records.note_healthy, []
        def flaky(self, desired, now):
            calls.append(now)
            if len(calls) == 3:
                raise RuntimeError("injected fault")
            return original(self, desired, now)
        Records.note_healthy = flaky
    """, expect=[r"RuntimeError: injected fault", r"app web: worker \d+ died unexpectedly \(killed by SIGKILL\)"])
    site.start()
    address = site.address("web")
    wait_until(lambda: "injected fault" in site.log(), what="the fault")
    assert re.search(r"master loop step 'health' failed \(1 in a row\); the loop goes on:\n(    .*\n)*"
                     r"    RuntimeError: injected fault", site.log()), site.log()
    master = site.status()["master"]
    assert master["loop_errors"] == 1 and "injected fault" in master["last_loop_error"]
    # the loop still turns: a killed worker is replaced and requests are answered
    victim = next(iter(web_pids(site)))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(web_pids(site) - {victim}) == 2, what="the killed worker's replacement")
    assert get(address)[0] == 200
    assert site.proc is not None and site.proc.poll() is None


def test_a_step_that_keeps_failing_drains_gracefully_and_never_abandons_workers(site_factory: Factory,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    site = patched(site_factory, f"""
        import os
        from forkserve.master.records import Records
        original = Records.read_heartbeats
        def broken(self):
            if os.path.exists({str(tmp_path / "break")!r}):
                raise OSError("injected: cannot read heartbeats")
            return original(self)
        Records.read_heartbeats = broken
    """, expect=[r"OSError: injected: cannot read heartbeats", r"failed 5 times in a row: stopping gracefully"],
        env={"MARK_DIR": str(tmp_path / "marks")})
    site.start()
    address = site.address("web")
    workers = web_pids(site)
    answers: list[tuple[int, str]] = []
    slow = threading.Thread(target=lambda: answers.append(get(address, "/slow?1.5", timeout=20)))
    slow.start()
    wait_until(lambda: os.listdir(tmp_path / "marks"), what="the slow request to be in flight")
    (tmp_path / "break").touch()
    assert site.proc is not None
    site.proc.wait(timeout=30)
    slow.join(timeout=20)
    log = site.log()
    assert site.proc.returncode == 1, log
    assert answers and answers[0][0] == 200 and pid_of(answers[0][1]) in workers  # finished, not cut off
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=5, what="every worker to be gone")


def test_when_even_the_stop_cannot_proceed_the_workers_are_drained_by_hand(site_factory: Factory,
                                                                          tmp_path: Path) -> None:
    # plan() itself fails, so no retire or kill can be planned; a preload app, whose process must go too
    site = patched(site_factory, f"""
        import os
        import forkserve.master.loop as loop
        original = loop.plan
        def broken(*args):
            if os.path.exists({str(tmp_path / "break")!r}):
                raise RuntimeError("injected: plan")
            return original(*args)
        loop.plan = broken
    """, text=SITE.replace("graceful_timeout = 10", "graceful_timeout = 2").replace("workers = 2",
                                                                                    "workers = 2\npreload = true"),
        expect=[r"RuntimeError: injected: plan", r"failed 5 times in a row", r"draining \d+ worker"])
    site.start()
    children = site.children()
    assert len(children) == 1  # the preload process; the workers are its children
    (tmp_path / "break").touch()
    assert site.proc is not None
    site.proc.wait(timeout=30)
    assert site.proc.returncode == 1, site.log()
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=5, what="the preload process to be gone")


def test_a_slow_validation_does_not_delay_a_workers_replacement(site_factory: Factory) -> None:
    site = patched(site_factory, SLOW_CHILD.format(seconds=4), env={"FORKSERVE_NO_CACHE": "1"},
                   expect=[r"app web: worker \d+ died unexpectedly \(killed by SIGKILL\)"])
    site.start()
    address = site.address("web")
    workers = web_pids(site)
    victim = next(iter(workers))
    revision = site.status()["site"]["revision"]
    site.write(SITE.replace("workers = 2", "workers = 2\n# slow"))
    wait_until(lambda: site.children() - workers, what="the validating child")
    os.kill(victim, signal.SIGKILL)
    began = time.monotonic()
    wait_until(lambda: len(web_pids(site) - {victim}) == 2, timeout=10, what="the replacement")
    replaced_in = time.monotonic() - began
    assert get(address)[0] == 200
    assert site.status()["site"]["revision"] == revision, "the validation should still be running"
    assert replaced_in < 3.5, f"the replacement waited for the validation ({replaced_in:.1f}s)"
    wait_until(lambda: "site revision" in site.status()["site"]["last_result"], timeout=15,
               what="the slow file to be applied")


def test_a_stop_asked_for_during_a_validation_is_not_undone_by_it(site_factory: Factory, tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    site = patched(site_factory, SLOW_CHILD.format(seconds=1), env={"FORKSERVE_NO_CACHE": "1",
                                                                    "MARK_DIR": str(tmp_path / "marks")})
    site.start()
    address = site.address("web")
    workers = web_pids(site)
    answers: list[tuple[int, str]] = []
    slow = threading.Thread(target=lambda: answers.append(get(address, "/slow?3", timeout=20)))
    slow.start()  # keeps the graceful stop going past the validation
    wait_until(lambda: os.listdir(tmp_path / "marks"), what="the slow request to be in flight")
    site.write(SITE.replace("workers = 2", "workers = 3\n# slow"))
    wait_until(lambda: site.children() - workers, what="the validating child")
    site.signal(signal.SIGTERM)
    assert site.proc is not None
    site.proc.wait(timeout=20)
    slow.join(timeout=10)
    log = site.log()
    assert site.proc.returncode == 0, log
    assert answers and answers[0][0] == 200
    assert "site file validated while stopping: not applied" in log and "web scaled" not in log, log
