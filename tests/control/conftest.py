"""A real `Master` object that never starts: its records are set by hand (no fork, no sockets)."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forkserve import channel
from forkserve.config.load import load_text
from forkserve.master import Master
from forkserve.snapshot import Snapshot
from forkserve.spec import LoadedSite
from forkserve.state import Phase
from tests.integration.conftest import site_factory  # noqa: F401 - the real-master fixture, reused

SITE = """
[apps.web]
module = "basic:app"
binds = ["127.0.0.1:0"]
workers = 2

[apps.api]
module = "basic:app"
binds = ["127.0.0.1:0", "unix:api.sock"]
workers = 1
"""


class FakeMaster(Master):
    def __init__(self, path: Path, text: str) -> None:
        super().__init__(str(path))
        self.regions: list[object] = []
        self.set_site(text)

    def set_site(self, text: str) -> None:
        data = textwrap.dedent(text).encode()
        self.deployment.apply(LoadedSite.from_config(load_text(data, self.site.path)), data, explicit=False)

    def add_worker(self, app: str, phase: Phase = Phase.READY, revision: str | None = None, pid: int = 0,
                   started: float = 0.0) -> channel.WorkerEnd:
        spec = self.desired.apps[app]
        master_end, worker_end, region = channel.create()
        os.close(worker_end.write_fd)
        self.regions.append(region)
        pid = pid or (max(self.records.workers, default=100000) + 1)
        self.records.add_worker(pid, master_end, dataclasses.replace(spec, revision=revision or spec.revision),
                                started)
        if phase is Phase.READY:
            self.records.update(pid, phase=phase, ready_at=started)
        else:
            self.records.update(pid, phase=phase)
        return worker_end

    def snap(self, now: float | None = None, wall: float | None = None) -> Snapshot:
        """The master's snapshot, taken at a chosen moment."""
        snap = self.snapshot()
        return dataclasses.replace(snap, now=snap.now if now is None else now,
                                   wall=snap.wall if wall is None else wall)

    def close(self) -> None:
        self.records.close_ends()
        self.selector.close()
        self.wakeup.close()


@pytest.fixture
def fake_master(tmp_path: Path) -> Iterator[Callable[..., FakeMaster]]:
    made: list[FakeMaster] = []

    def make(text: str = SITE) -> FakeMaster:
        master = FakeMaster(tmp_path / "site.toml", text)
        made.append(master)
        return master

    yield make
    for master in made:
        master.close()
