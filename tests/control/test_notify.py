"""sd_notify datagrams, received on a test socket (a path and an abstract name)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from forkserve.notify import Notifier, _watchdog_interval


@pytest.mark.parametrize("abstract", [False, True])
def test_messages_arrive(tmp_path: Path, abstract: bool) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@forkserve-test-{os.getpid()}" if abstract else str(tmp_path / "notify.sock")
    receiver.bind("\0" + name[1:] if abstract else name)
    receiver.settimeout(5)
    notifier = Notifier({"NOTIFY_SOCKET": name})
    try:
        assert notifier.enabled
        notifier.ready("web 2/2 ready")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=web 2/2 ready"
        notifier.reloading()
        first, second = receiver.recv(4096).decode().split("\n")
        assert first == "RELOADING=1" and second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) > 0
        notifier.status("a\nb")
        notifier.status("a\nb")  # unchanged: not sent again
        notifier.stopping()
        assert receiver.recv(4096) == b"STATUS=a b"
        assert receiver.recv(4096) == b"STOPPING=1"
    finally:
        notifier.close()
        receiver.close()


def test_without_notify_socket_nothing_happens(tmp_path: Path) -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.send("READY=1") is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.send("READY=1") is False  # never raises
    gone.close()


def test_watchdog_pings_every_half_period_and_only_for_this_process(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    receiver.settimeout(5)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    notifier = Notifier(env)
    try:
        assert notifier.watchdog_interval == 1.0
        for now in (100.0, 100.5, 101.0, 101.2, 102.1):
            notifier.watchdog(now)
        notifier.stopping()
        received = []
        while not received or received[-1] != b"STOPPING=1":
            received.append(receiver.recv(4096))
        assert received == [b"WATCHDOG=1"] * 3 + [b"STOPPING=1"]  # at 100.0, 101.0 and 102.1
    finally:
        notifier.close()
        receiver.close()
    assert _watchdog_interval({**env, "WATCHDOG_PID": str(os.getpid() + 1)}) == 0.0  # meant for another process
    assert _watchdog_interval({**env, "WATCHDOG_PID": str(os.getpid())}) == 1.0
    assert _watchdog_interval({**env, "WATCHDOG_USEC": "0"}) == 0.0
    assert _watchdog_interval({**env, "WATCHDOG_USEC": "soon"}) == 0.0
    assert _watchdog_interval({}) == 0.0
