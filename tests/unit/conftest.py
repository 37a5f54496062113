"""Fixtures shared by the unit tests that drive the real records and executor with a fake world."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from forkserve.master.records import Records
from tests.unit.test_executor import FakeWorld


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    fake = FakeWorld()
    yield fake
    for end in fake.ends.values():
        os.close(end.write_fd)
    for sock in fake.sockets:
        sock.close()


@pytest.fixture
def records(world: FakeWorld) -> Iterator[Records]:
    made = Records(world)
    yield made
    made.close_ends()
