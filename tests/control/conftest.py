"""A real `Master` object that never starts: its state is set by hand (no fork, no sockets)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forkserve import channel
from forkserve.config.load import load_text
from forkserve.master import Master, WorkerRecord
from forkserve.spec import LoadedSite
from forkserve.state import Phase, WorkerView
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
        self._apply(LoadedSite.from_config(load_text(data, self.site.path)), data)

    def add_worker(self, app: str, phase: Phase = Phase.READY, revision: str | None = None, pid: int = 0,
                   started: float = 0.0) -> channel.WorkerEnd:
        spec = self.desired.apps[app]
        master_end, worker_end, region = channel.create()
        os.close(worker_end.write_fd)
        self.regions.append(region)
        pid = pid or (max(self.workers, default=100000) + 1)
        view = WorkerView(pid=pid, app=app, revision=revision or spec.revision, binds=frozenset(spec.binds),
                          phase=phase, started=started, heartbeat=started, timeout=spec.timeout,
                          boot_timeout=spec.boot_timeout, ready_at=started if phase is Phase.READY else None)
        self.workers[pid] = WorkerRecord(view, master_end, spec)
        return worker_end

    def close(self) -> None:
        for record in self.workers.values():
            record.end.close()
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


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
