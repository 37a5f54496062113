"""Integration fixtures: real masters in their own session, real sockets, real files; cleaned up by pid."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until

APPS = Path(__file__).parent / "apps"


class Site:
    """One `forkserve up` master started from a site file in a temp dir."""

    def __init__(self, directory: Path, text: str, name: str = "site.toml") -> None:
        self.dir = directory
        self.path = directory / name
        self.log_path = directory / "master.log"
        self.write(text)
        self.proc: subprocess.Popen[bytes] | None = None

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


@pytest.fixture
def site_factory(tmp_path: Path) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(text: str, name: str = "site.toml") -> Site:
        site = Site(tmp_path, text, name)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()


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
