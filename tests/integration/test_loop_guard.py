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

    def __init__(self, directory: Path, text: str, patch: str, env: dict[str, str] | None = None) -> None:
        super().__init__(directory, text)
        self.patch = textwrap.dedent(patch)
        self.env = {**os.environ, **(env or {})}

    def start(self, wait_ready: bool = True) -> Site:
        script = f"{self.patch}\nfrom forkserve.cli import main\nraise SystemExit(main(['up', {str(self.path)!r}]))"
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)
        if wait_ready:
            wait_until(lambda: self.ready("web", 2), what="web to be ready")
        return self

    def status(self) -> dict[str, Any]:
        return call(str(self.dir / "run" / "control.sock"), Request("status"), timeout=5)


def web_pids(site: PatchedSite) -> set[int]:
    return {w["pid"] for a in site.status()["apps"] for w in a["workers"] if w["ready"]}


def test_a_step_that_raises_once_is_logged_counted_and_the_loop_goes_on(tmp_path: Path) -> None:
    site = PatchedSite(tmp_path, SITE, """
        from forkserve.master.records import Records
        original, calls = Records.note_healthy, []
        def flaky(self, desired, now):
            calls.append(now)
            if len(calls) == 3:
                raise RuntimeError("injected fault")
            return original(self, desired, now)
        Records.note_healthy = flaky
    """)
    try:
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
    finally:
        site.stop()


def test_a_step_that_keeps_failing_drains_gracefully_and_never_abandons_workers(tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    site = PatchedSite(tmp_path, SITE, f"""
        import os
        from forkserve.master.records import Records
        original = Records.read_heartbeats
        def broken(self):
            if os.path.exists({str(tmp_path / "break")!r}):
                raise OSError("injected: cannot read heartbeats")
            return original(self)
        Records.read_heartbeats = broken
    """, env={"MARK_DIR": str(tmp_path / "marks")})
    try:
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
        assert "failed 5 times in a row: stopping gracefully" in log
        assert answers and answers[0][0] == 200 and pid_of(answers[0][1]) in workers  # finished, not cut off
        wait_until(lambda: not any(alive(pid) for pid in workers), timeout=5, what="every worker to be gone")
    finally:
        site.stop()


def test_a_slow_validation_does_not_delay_a_workers_replacement(tmp_path: Path) -> None:
    site = PatchedSite(tmp_path, SITE, """
        import time
        import forkserve.config.validate as validate
        original = validate._child
        def slow_child(data, *args):
            if b"# slow" in data:
                time.sleep(4)
            return original(data, *args)
        validate._child = slow_child
    """, env={"FORKSERVE_NO_CACHE": "1"})
    try:
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
    finally:
        site.stop()
