"""`forkserve up`: real masters, real workers, real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.integration.conftest import APPS, alive, boot_failure, get, pid_of, wait_until

TWO_APPS = """
[server]
graceful_timeout = 10

[apps.web]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0", "unix:web.sock"]
workers = 2
env = { MARK_DIR = "@DIR@" }

[apps.api]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = 2
worker_class = "gevent"
env = { TAG = "api" }
"""


def test_two_apps_on_their_binds_both_serve(site_factory) -> None:
    site = site_factory(TWO_APPS).start()
    wait_until(lambda: site.ready("web", 2) and site.ready("api", 2), what="both apps ready")
    status, body = get(site.address("web"), "/hello")
    assert status == 200 and body.startswith("v1 ") and "path=/hello" in body
    status, body = get(site.address("api"))
    assert status == 200 and body.startswith("api ")
    status, body = get(str(site.dir / "web.sock"))
    assert status == 200 and body.startswith("v1 ")
    assert len(site.children()) == 4


def test_a_worker_killed_with_sigkill_is_replaced(site_factory) -> None:
    site = site_factory(TWO_APPS).start()
    site.expect(r"app api: worker \d+ died unexpectedly \(killed by SIGKILL\)")
    wait_until(lambda: site.ready("web", 2) and site.ready("api", 2))
    before = site.children()
    victim = pid_of(get(site.address("api"))[1])
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in site.children() and len(site.children()) == 4, what="a replacement")
    assert len(site.children() - before) == 1
    assert get(site.address("api"))[0] == 200


def test_a_hung_worker_is_killed_after_timeout_and_replaced(site_factory) -> None:
    site = site_factory("""
        [apps.web]
        module = "basic:app"
        chdir = "@APPS@"
        binds = ["127.0.0.1:0"]
        workers = 1
        worker_class = "gevent"
        timeout = 2
    """, expect=[r"app web: worker \d+ silent too long"]).start()
    address = site.address("web")
    hung_pid = pid_of(get(address)[1])

    def hang() -> None:
        try:
            get(address, "/hang", timeout=20)
        except OSError:
            pass  # the worker is killed under this request: the connection drops

    threading.Thread(target=hang, daemon=True).start()
    wait_until(lambda: not alive(hung_pid), timeout=20, what="the hung worker to be killed")
    assert "silent too long" in site.log()
    _status, body = wait_until(lambda: _try_get(address), timeout=20, what="a replacement serving")
    assert pid_of(body) != hung_pid


def _try_get(address: tuple[str, int]) -> tuple[int, str] | None:
    try:
        return get(address, timeout=2)
    except OSError:
        return None


def test_an_app_that_cannot_import_backs_off_while_the_other_serves(site_factory) -> None:
    site = site_factory("""
        [apps.good]
        module = "basic:app"
        chdir = "@APPS@"
        binds = ["127.0.0.1:0"]

        [apps.bad]
        module = "broken:app"
        chdir = "@APPS@"
        binds = ["127.0.0.1:0"]
    """, expect=boot_failure("bad")).start()
    wait_until(lambda: "failures in a row; next try in" in site.log(), timeout=20, what="repeated boot failures")
    log = site.log()
    assert log.count("failed to boot") >= 2
    assert "this app cannot be imported" in log  # the app's own error reaches the operator
    assert site.proc is not None and site.proc.poll() is None  # the master lives
    assert get(site.address("good"))[0] == 200


def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(site_factory) -> None:
    site = site_factory(TWO_APPS).start()
    wait_until(lambda: site.ready("web", 2) and site.ready("api", 2))
    address = site.address("web")
    result: dict[str, object] = {}

    def slow() -> None:
        result["response"] = get(address, "/slow?1.5", timeout=15)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(lambda: list(site.dir.glob("slow-*")), what="the slow request to reach a worker")
    site.signal(signal.SIGTERM)
    thread.join(timeout=15)
    assert result["response"][0] == 200  # type: ignore[index]
    assert site.proc is not None
    assert site.proc.wait(timeout=15) == 0
    assert not site.children()


def test_workers_exit_when_the_master_is_killed(site_factory) -> None:
    site = site_factory(TWO_APPS).start()
    site.expect(r"master \d+ is gone: exiting")  # each orphaned worker says why it leaves
    wait_until(lambda: site.ready("web", 2) and site.ready("api", 2))
    workers = site.children()
    assert len(workers) == 4
    os.kill(site.pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in workers), timeout=10, what="orphaned workers to exit")


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_malformed_requests_get_4xx_and_the_worker_lives(site_factory, worker_class: str) -> None:
    site = site_factory(f"""
        [apps.web]
        module = "basic:app"
        chdir = "@APPS@"
        binds = ["127.0.0.1:0"]
        worker_class = "{worker_class}"
    """).start()
    address = site.address("web")
    first = pid_of(get(address)[1])
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
                    b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", b"\x00\xff\xfe\r\n\r\n"):
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(garbage)
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 4"), reply[:80]
        assert b"connection: close" in reply.lower()
    assert pid_of(get(address)[1]) == first  # same worker, still serving


def _up(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkserve", "up", str(path)], capture_output=True, text=True,
                          timeout=30)


def test_an_invalid_site_file_stops_up_before_binding(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[apps.web]\nmodule = "basic:app"\nchdir = "{APPS}"\nbinds = ["127.0.0.1:0"]\nworkerz = 2\n')
    result = _up(path)
    assert result.returncode == 3
    assert "site.toml:5" in result.stderr and "workerz" in result.stderr


def test_an_error_log_that_cannot_be_opened_is_a_clean_start_failure(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[server]\nerror_log = "{tmp_path}/missing/dir/error.log"\n'
                    f'[apps.web]\nmodule = "basic:app"\nchdir = "{APPS}"\nbinds = ["127.0.0.1:0"]\n')
    result = _up(path)
    assert result.returncode == 3, result.stderr
    assert "cannot open the error log" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_names_the_app_and_leaves_nothing_running(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    path = tmp_path / "site.toml"
    path.write_text(f'[apps.first]\nmodule = "basic:app"\nchdir = "{APPS}"\nbinds = ["unix:{tmp_path}/a.sock"]\n'
                    f'[apps.web]\nmodule = "basic:app"\nchdir = "{APPS}"\nbinds = ["127.0.0.1:{port}"]\n')
    try:
        result = _up(path)
    finally:
        taken.close()
    assert result.returncode == 3
    assert "app 'web'" in result.stderr and "address already in use" in result.stderr
    assert not (tmp_path / "a.sock").exists()  # the listener opened before the failure was closed again


def test_a_failure_after_the_first_fork_leaves_nothing_running(tmp_path: Path) -> None:
    # The first workers are forked before the control socket is opened (start-up speed): when that socket turns
    # out to be taken (another master of this site, here a stand-in), the workers are killed and reaped too.
    control = tmp_path / "control.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(control))
    other.listen()
    path = tmp_path / "site.toml"
    path.write_text(f'[server]\ncontrol_socket = "{control}"\n[apps.web]\nmodule = "basic:app"\nchdir = "{APPS}"\n'
                    f'binds = ["unix:{tmp_path}/web.sock"]\nworkers = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "forkserve", "up", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 3, stderr
        assert "already listening" in stderr, stderr
        assert not (tmp_path / "web.sock").exists()
        with pytest.raises(ProcessLookupError):  # the master's session: no worker of it is left
            os.killpg(proc.pid, 0)
    finally:
        other.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_master_never_imports_gevent_or_app_code(site_factory) -> None:
    probe = ("import sys, forkserve.master, forkserve.cli; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('gevent', 'greenlet', 'basic')]; "
             "sys.exit(f'imported: {bad}' if bad else 0)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30).returncode == 0
    site = site_factory(TWO_APPS).start()
    wait_until(lambda: site.ready("api", 2))  # gevent workers are up, so gevent is loaded in them...
    maps = Path(f"/proc/{site.pid}/maps").read_text()
    assert "gevent" not in maps and "greenlet" not in maps  # ...but never in the master
    worker = pid_of(get(site.address("api"))[1])
    assert "gevent" in Path(f"/proc/{worker}/maps").read_text()
