"""Integration fixtures: real masters in their own session, real sockets, real files; cleaned up by pid.

Every site's log (the master and its workers write to it) is checked when the test ends: a traceback, a Python
warning (MonkeyPatchWarning, ResourceWarning, DeprecationWarning, ...) or a [WARNING] / [ERROR] / [CRITICAL]
record that the test did not declare with `site.expect(regex)` (or `site_factory(text, expect=[...])`) fails
the test, so a defect that only shows in a worker's log cannot pass unnoticed. The check runs in the fixture's
teardown, after every site is stopped: pytest reports it as an error of that test, which fails the run. A test
that already failed is not checked again (its own failure says more).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until

APPS = Path(__file__).parent / "apps"

# a line that needs explaining: a traceback, a Python warning ("file.py:12: MonkeyPatchWarning: ..."), a
# warning or error record of forkserve's log format
PROBLEM = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*Warning\b|\[(?:WARNING|ERROR|CRITICAL)\]")
# the start of a record of forkserve's log format (master and workers): "2026-01-01 10:00:00 +0000 [pid] [LEVEL]"
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \[\d+\] \[[A-Z]+\] ")


def boot_failure(app: str) -> list[str]:
    """What the log says, on purpose, when `app` cannot be imported: the boot error (from the worker or the
    preload process), the master's report of it, the backoff."""
    name = re.escape(app)
    return [rf"app {name}: boot failed:", rf"app {name} \(revision \w+\): (worker|preload process) \d+ failed to boot",
            rf"app {name}: \d+ failures in a row"]


def log_entries(text: str) -> list[str]:
    """The log cut into entries: a record with its continuation lines (a logged traceback, a boot error's
    text); a line outside any record (a Python warning, a traceback printed to stderr) that is a problem begins
    an entry of its own unless it continues a problem entry (the traceback of a logged error)."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        starts = RECORD.match(line) is not None
        if not starts and PROBLEM.search(line) and not (entries and PROBLEM.search(entries[-1][0])):
            starts = True
        if starts or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    return ["\n".join(lines) for lines in entries]


def unexpected_problems(text: str, expected: Iterable[str]) -> list[str]:
    """The log entries that hold a problem line and match none of the `expected` regexes (re.search)."""
    patterns = [re.compile(p) for p in expected]
    return [entry for entry in log_entries(text)
            if PROBLEM.search(entry) and not any(p.search(entry) for p in patterns)]


class Site:
    """One `forkserve up` master started from a site file in a temp dir."""

    def __init__(self, directory: Path, text: str, name: str = "site.toml", expect: Iterable[str] = ()) -> None:
        self.dir = directory
        self.path = directory / name
        self.log_path = directory / "master.log"
        self.write(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.expected: list[str] = list(expect)

    def expect(self, *patterns: str) -> Site:
        """Declare log entries this test provokes on purpose (regexes searched in each warning, error or
        traceback entry of the log); any other such entry fails the test when it ends."""
        self.expected.extend(patterns)
        return self

    def write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text).replace("@APPS@", str(APPS)).replace("@DIR@", str(self.dir)))
        os.replace(tmp, self.path)  # atomic, as editors and ConfigMaps do

    def start(self, wait_ready: bool = True) -> Site:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "forkserve", "up", str(self.path)],
                                     stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_ready:
            wait_until(lambda: "workers ready" in self.log(), what="the first app to be ready")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def address(self, app: str) -> tuple[str, int]:
        """The real TCP address of an app's first listener, read from the master's log."""
        def find() -> tuple[str, int] | None:
            m = re.search(r"listening on tcp://([0-9.]+):(\d+) \(app " + re.escape(app) + r"\)", self.log())
            return (m.group(1), int(m.group(2))) if m else None
        return wait_until(find, what=f"{app}'s listener in the log")  # type: ignore[return-value]

    def ready(self, app: str, count: int, revision_marker: str = "") -> bool:
        return bool(re.search(rf"app {re.escape(app)}: {count}/{count} workers ready", self.log()))

    def children(self) -> set[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True)
        return {int(p) for p in out.stdout.split()}

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # the master and every worker it forked
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # workers left behind by a dead master
            except (ProcessLookupError, AttributeError, TypeError):
                pass
        if hasattr(self, "log_file"):
            self.log_file.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember whether the test itself failed, for the log check in `site_factory`'s teardown."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def site_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(text: str, name: str = "site.toml", expect: Iterable[str] = (), site_class: type[Site] = Site,
             **extra: Any) -> Site:
        site = site_class(tmp_path, text, name, expect, **extra)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()
    if request.node.stash.get(_CALL_FAILED, False):
        return
    expected: dict[Path, list[str]] = {}  # sites of one test share their directory's log
    for site in sites:
        expected.setdefault(site.log_path, []).extend(site.expected)
    report = [f"{path}:\n" + "\n".join(problems) for path, patterns in expected.items()
              if path.exists() and (problems := unexpected_problems(path.read_text(errors="replace"), patterns))]
    if report:
        pytest.fail("unexpected warnings, errors or tracebacks in the site log (declare them with "
                    "site.expect(regex) if the test provokes them):\n" + "\n".join(report), pytrace=False)


def get(address: tuple[str, int] | str, path: str = "/", timeout: float = 10.0,
        headers: dict[str, str] | None = None) -> tuple[int, str]:
    if isinstance(address, str):
        conn: http.client.HTTPConnection = UnixHTTPConnection(address, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def pid_of(body: str) -> int:
    m = re.search(r"pid=(\d+)", body)
    assert m, body
    return int(m.group(1))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": check its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
