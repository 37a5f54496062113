"""master.sitefile: reloads driven through a real selector and real validating children, without a master."""

from __future__ import annotations

import selectors
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from forkserve.master import sitefile
from forkserve.master.sitefile import Reloads, SiteFile, Validations
from forkserve.outcomes import ReloadKind, ReloadOutcome
from forkserve.spec import DesiredState, LoadedSite

API = """
[apps.api]
module = "basic:app"
binds = ["127.0.0.1:0"]
"""
SITE = """
[apps.web]
module = "basic:app"
binds = ["127.0.0.1:0"]
workers = {n}
"""


class Harness:
    def __init__(self, path: Path) -> None:
        self.selector = selectors.DefaultSelector()
        self.site = SiteFile(str(path))
        self.desired = DesiredState()
        self.validations = Validations(self.selector)
        self.outcomes: list[ReloadOutcome] = []
        self.cleared = 0
        self.rest = 0.0  # settle()
        self.rolled: list[set[str]] = []  # the roll each apply was given
        self.reloads = Reloads(self.site, self.validations, self)

    # ReloadHost
    def apply(self, loaded: LoadedSite, data: bytes, explicit: bool, roll: Collection[str] = ()) -> ReloadOutcome:
        self.rolled.append(set(roll))
        outcome = self.site.accept(loaded, data, self.desired)
        self.desired = loaded.desired
        return outcome

    def before_reload(self, explicit: bool) -> None:
        pass

    def after_reload(self, explicit: bool, outcome: ReloadOutcome) -> None:
        self.outcomes.append(outcome)

    def clear_backoff(self) -> None:
        self.cleared += 1

    def stopping(self) -> bool:
        return False

    def destructive(self, loaded: LoadedSite) -> str:
        gone = sorted(set(self.desired.apps) - set(loaded.desired.apps))
        return f"removes app {', '.join(gone)}" if gone else ""

    def settle(self) -> float:
        return self.rest

    def pump(self, until: int, timeout: float = 20.0) -> None:
        """Turn the selector (as the master's loop does) until `until` outcomes are in."""
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < until:
            assert time.monotonic() < deadline, f"timed out: {self.outcomes}"
            for key, _ in self.selector.select(0.05):
                key.data()
            self.validations.tick(time.monotonic())
            self.reloads.tick()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("FORKSERVE_NO_CACHE", "1")  # every validation is a child: the non-blocking path
    (tmp_path / "site.toml").write_text(SITE.format(n=2))
    made = Harness(tmp_path / "site.toml")
    yield made
    made.validations.cancel_all()
    made.selector.close()


def test_a_reload_validates_in_a_child_and_answers_when_it_is_done(harness: Harness) -> None:
    answers: list[ReloadOutcome] = []
    harness.reloads.request(explicit=True, respond=answers.append)
    assert harness.reloads.validating and not answers  # nothing waited for the child
    harness.pump(1)
    assert answers == harness.outcomes and answers[0].kind is ReloadKind.APPLIED
    assert harness.desired.apps["web"].workers == 2 and harness.cleared == 1


def test_requests_during_a_validation_are_served_after_it_in_order(harness: Harness) -> None:
    answers: list[ReloadOutcome] = []
    harness.reloads.request(explicit=False, respond=answers.append)
    Path(harness.site.path).write_text(SITE.format(n=0))  # invalid: workers must be at least 1
    harness.reloads.request(explicit=True, respond=answers.append)  # queued behind the first
    harness.reloads.request(explicit=False)
    harness.pump(2)
    assert [o.kind for o in answers] == [ReloadKind.APPLIED, ReloadKind.INVALID]
    assert harness.site.errors and "workers" in harness.site.errors[0]
    assert harness.desired.apps["web"].workers == 2  # the bad file changed nothing


def test_a_validation_that_cannot_start_is_an_answer_not_a_stuck_reload(harness: Harness,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork(data: bytes, path: str) -> object:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(sitefile, "validate", no_fork)
    harness.reloads.request(explicit=True)
    assert [o.kind for o in harness.outcomes] == [ReloadKind.INVALID] and not harness.reloads.validating
    assert "cannot validate now" in harness.site.errors[0]
    monkeypatch.undo()
    harness.reloads.request(explicit=True)
    harness.pump(2)
    assert harness.outcomes[-1].kind is ReloadKind.APPLIED


def test_a_child_past_its_deadline_is_killed_and_reported(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.reloads.request(explicit=True)
    job, _ = next(iter(harness.validations.pending.values()))
    harness.validations.tick(job.deadline + 1)  # as if the child had hung past TIMEOUT
    assert [o.kind for o in harness.outcomes] == [ReloadKind.INVALID]
    assert "timed out" in harness.site.errors[0] and not harness.validations.pending


def test_a_destructive_change_written_in_place_waits_for_the_file_to_settle(harness: Harness) -> None:
    path = Path(harness.site.path)
    path.write_text(SITE.format(n=2) + API)
    harness.reloads.request(explicit=False)
    harness.pump(1)
    assert set(harness.desired.apps) == {"web", "api"}
    harness.rest = 1.0
    with open(path, "w") as f:  # in place, as `cat > site.toml` or a script: the same inode
        f.write(SITE.format(n=2))  # the first half of a write that would have kept api
    harness.reloads.request(explicit=False)
    harness.pump(2)
    assert harness.outcomes[-1].kind is ReloadKind.PENDING and "api" in harness.desired.apps  # not yet
    harness.pump(3, timeout=5)  # once the file has rested, it is read again and applied
    assert harness.outcomes[-1].kind is ReloadKind.APPLIED and set(harness.desired.apps) == {"web"}


def test_a_destructive_change_that_arrives_by_rename_or_reload_applies_at_once(harness: Harness) -> None:
    path = Path(harness.site.path)
    path.write_text(SITE.format(n=2) + API)
    harness.reloads.request(explicit=False)
    harness.pump(1)
    harness.rest = 60.0
    tmp = path.with_suffix(".new")
    tmp.write_text(SITE.format(n=2))
    tmp.replace(path)  # an editor's atomic save, a ConfigMap swap: complete when it appears
    harness.reloads.request(explicit=False)
    harness.pump(2)
    assert harness.outcomes[-1].kind is ReloadKind.APPLIED and set(harness.desired.apps) == {"web"}
    with open(path, "w") as f:
        f.write(SITE.format(n=2) + API)
    harness.reloads.request(explicit=False)
    harness.pump(3)
    with open(path, "w") as f:  # in place and destructive, but the operator says it is done
        f.write(SITE.format(n=2))
    harness.reloads.request(explicit=True)
    harness.pump(4)
    assert harness.outcomes[-1].kind is ReloadKind.APPLIED and set(harness.desired.apps) == {"web"}


def test_a_roll_asked_for_with_a_file_that_does_not_apply_is_dropped(harness: Harness) -> None:
    path = Path(harness.site.path)
    path.write_text(SITE.format(n=0))  # invalid
    harness.reloads.request(explicit=True, roll={"web"})  # `forkserve reload web`: answered "invalid"
    harness.pump(1)
    assert harness.outcomes[-1].kind is ReloadKind.INVALID and harness.rolled == []
    path.write_text(SITE.format(n=2))
    harness.reloads.request(explicit=True, roll={"api"})  # a later `forkserve reload api` rolls api only
    harness.pump(2)
    assert harness.outcomes[-1].kind is ReloadKind.APPLIED and harness.rolled == [{"api"}]
