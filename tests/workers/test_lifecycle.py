"""Worker lifecycle: boot errors, ready, graceful TERM, master death, max_requests recycling, signals."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from forkserve.workers.base import EXIT_BOOT_ERROR, EXIT_OK
from tests.workers.conftest import fork_worker, make_spec, read_responses, request, wait_until

CLASSES = ["sync", "gevent"]
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize(("module", "needle"), [
    ("bad_import:app", "cannot be imported (on purpose"),
    ("no_such_module_xyz:app", "ModuleNotFoundError"),
    ("wapps:missing", "AttributeError"),
    ("wapps:not_callable", "not callable"),
])
def test_boot_error(start_worker, worker_class, module, needle):
    worker = start_worker(wait_ready=False, worker_class=worker_class, module=module)
    event = worker.wait_event("boot_error")
    assert needle in event["text"]
    assert worker.wait_exit() == EXIT_BOOT_ERROR
    assert not any(e["event"] == "ready" for e in worker.events)


def test_dotted_attribute(start_worker):
    worker = start_worker(module="wapps:Nested.Inner.app")
    assert request(worker, GET).body == b"hello"


@pytest.mark.parametrize("worker_class", CLASSES)
def test_env_and_chdir(start_worker, tmp_path, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:osenv", chdir=str(tmp_path),
                          env=(("FORKSERVE_TEST_VAR", "42"),))
    assert request(worker, GET).body == f"42 {tmp_path}".encode()


@pytest.mark.parametrize("worker_class", CLASSES)
def test_term_finishes_in_flight_request(start_worker, tmp_path, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:slow")
    mark = tmp_path / "in-flight"
    with worker.connect() as sock:
        sock.sendall(b"GET /?1 HTTP/1.1\r\nHost: t\r\nX-Mark: %s\r\n\r\n" % str(mark).encode())
        wait_until(mark.exists, what="the slow request to start")
        os.kill(worker.pid, signal.SIGTERM)
        (response,) = read_responses(sock)
        assert response.status == 200
        assert response.body == b"slow done"
        assert response.headers["connection"] == "close"
    assert worker.wait_exit() == EXIT_OK
    with pytest.raises(ConnectionRefusedError):  # our listener copy stays, but nobody accepts: refused or hang
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(tmp_path / "nonexistent.sock"))
        except FileNotFoundError as exc:
            raise ConnectionRefusedError from exc
        finally:
            s.close()


def test_term_closes_idle_keepalive_connections(start_worker):
    worker = start_worker(worker_class="gevent", keepalive=60)
    with worker.connect() as sock:
        sock.sendall(GET)
        read_responses(sock)
        started = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait_exit(timeout=5) == EXIT_OK
        assert time.monotonic() - started < 2
        sock.settimeout(2)
        assert sock.recv(100) == b""


@pytest.mark.parametrize("worker_class", CLASSES)
def test_term_when_idle_exits_quickly(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class)
    started = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait_exit(timeout=5) == EXIT_OK
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("worker_class", CLASSES)
def test_graceful_timeout_bounds_the_wait(start_worker, tmp_path, worker_class):
    worker = start_worker(worker_class=worker_class, module="wapps:slow", graceful_timeout=0.5)
    mark = tmp_path / "in-flight"
    sock = worker.connect()
    try:
        sock.sendall(b"GET /?30 HTTP/1.1\r\nHost: t\r\nX-Mark: %s\r\n\r\n" % str(mark).encode())
        wait_until(mark.exists, what="the slow request to start")
        started = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait_exit(timeout=5)
        assert time.monotonic() - started < 3
    finally:
        sock.close()


@pytest.mark.parametrize("worker_class", CLASSES)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_fast_stop(start_worker, tmp_path, worker_class, sig):
    worker = start_worker(worker_class=worker_class, module="wapps:slow")
    mark = tmp_path / "in-flight"
    with worker.connect() as sock:
        sock.sendall(b"GET /?30 HTTP/1.1\r\nHost: t\r\nX-Mark: %s\r\n\r\n" % str(mark).encode())
        wait_until(mark.exists, what="the slow request to start")
        os.kill(worker.pid, sig)
        assert worker.wait_exit(timeout=3) == EXIT_OK


@pytest.mark.parametrize("worker_class", CLASSES)
def test_usr1_reopens_access_log(start_worker, tmp_path, worker_class):
    log = tmp_path / "access.log"
    worker = start_worker(worker_class=worker_class, access_log=str(log))
    request(worker, GET)
    wait_until(lambda: log.exists() and log.read_text().count("\n") == 1, what="first line")
    log.rename(tmp_path / "access.log.1")
    os.kill(worker.pid, signal.SIGUSR1)
    wait_until(log.exists, what="the access log to be reopened")
    request(worker, b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_until(lambda: "/after" in log.read_text(), what="a line in the new file")


@pytest.mark.parametrize("worker_class", CLASSES)
def test_exits_when_master_dies(worker_class, tmp_path):
    """A stand-in master forks the worker; we SIGKILL the stand-in; the orphaned worker must exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    report_r, report_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            pid, _end = fork_worker(make_spec(worker_class=worker_class), [listener], master_pid=os.getpid())
            os.write(report_w, str(pid).encode())
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(report_w)
    try:
        worker_pid = int(os.read(report_r, 32))
        with socket.create_connection(listener.getsockname(), timeout=10) as sock:
            sock.sendall(GET)
            assert read_responses(sock)[0].status == 200  # it serves
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)

        def gone() -> bool:
            try:
                with open(f"/proc/{worker_pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True
        wait_until(gone, timeout=6, what="the orphaned worker to exit")
    finally:
        os.close(report_r)
        listener.close()
        try:
            os.kill(worker_pid, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass


@pytest.mark.parametrize("worker_class", CLASSES)
def test_max_requests_sends_recycle_once_and_keeps_serving(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class, max_requests=3, max_requests_jitter=2)
    for _ in range(2):
        assert request(worker, GET).status == 200
    time.sleep(0.1)
    assert [e["event"] for e in worker.poll_events()] == ["ready"]
    for _ in range(6):
        assert request(worker, GET).status == 200
    worker.wait_event("recycle")
    time.sleep(0.1)
    assert [e["event"] for e in worker.poll_events()] == ["ready", "recycle"]
    assert worker.alive()


@pytest.mark.parametrize("worker_class", CLASSES)
def test_heartbeat_moves(start_worker, worker_class):
    worker = start_worker(worker_class=worker_class)
    first = worker.end.counters().heartbeat_ns
    wait_until(lambda: worker.end.counters().heartbeat_ns > first, timeout=3, what="a newer heartbeat")


def test_gevent_hung_app_stops_heartbeat(start_worker):
    worker = start_worker(worker_class="gevent", module="wapps:hang")
    with worker.connect() as sock:
        sock.sendall(GET)
        time.sleep(0.2)
        beat = worker.end.counters().heartbeat_ns
        time.sleep(1.5)
        assert worker.end.counters().heartbeat_ns == beat


@pytest.mark.parametrize("worker_class", CLASSES)
def test_a_connection_accepted_before_term_is_answered_not_dropped(start_worker, worker_class):
    """A retiring worker may already hold a fresh connection whose request is still on its way: serve it.
    (Closing it looked like "idle" and dropped requests during rolling restarts.)"""
    from forkserve.channel import CONNECTIONS

    worker = start_worker(worker_class=worker_class)
    with worker.connect() as sock:
        wait_until(lambda: worker.end.slot[CONNECTIONS] == 1, what="the connection to be accepted")
        os.kill(worker.pid, signal.SIGTERM)
        sock.sendall(GET)
        (response,) = read_responses(sock)
        assert response.status == 200
    assert worker.wait_exit(timeout=10) == EXIT_OK


def test_a_busy_keepalive_connection_is_not_cut_when_the_worker_stops(start_worker):
    """The client sends its next request the moment a response arrives; a stopping worker must answer it
    (with Connection: close) rather than close the connection under it (wrk counted those as read errors)."""
    worker = start_worker(worker_class="gevent", keepalive=60)
    with worker.connect() as sock:
        for i in range(2000):
            sock.sendall(GET)
            (response,) = read_responses(sock)  # raises on EOF or reset: a dropped request
            assert response.status == 200
            if i == 50:
                os.kill(worker.pid, signal.SIGTERM)
            if response.headers.get("connection", "").lower() == "close":
                break
        else:
            raise AssertionError("the stopping worker never said Connection: close")
    assert worker.wait_exit(timeout=10) == EXIT_OK
