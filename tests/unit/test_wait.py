"""`forkserve wait`: the decision from a status document (pure), the polling loop with a fake clock, the command
line's usage errors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from forkserve import cli
from forkserve.control.wait import Verdict, decide, wait

NEW, OLD = "8e1f0a2b", "3f2a9c1d"
BOOT_ERROR = "Traceback (most recent call last):\n  File \"app.py\", line 1\nImportError: cannot import name 'x'"


def worker(revision: str = NEW, state: str = "idle") -> dict[str, Any]:
    return {"pid": 1, "revision": revision, "age": 1.0, "state": state, "ready": state in ("idle", "busy"),
            "requests": 0, "in_flight": 0, "connections": 0, "rss": None}


def app(name: str, desired: int = 2, workers: list[dict[str, Any]] | None = None, state: str = "",
        backoff: dict[str, Any] | None = None, in_site: bool = True) -> dict[str, Any]:
    workers = [worker() for _ in range(desired)] if workers is None else workers
    updated = sum(1 for w in workers if w["ready"] and w["revision"] == NEW)
    old = any(w["revision"] != NEW and w["state"] in ("booting", "idle", "busy") for w in workers)
    if not state:
        state = ("backoff" if backoff else "rolling" if old else "degraded" if updated < desired else "running")
    return {"name": name, "in_site": in_site, "revision": NEW, "desired": desired, "updated": updated,
            "running": sum(1 for w in workers if w["state"] in ("booting", "idle", "busy")),
            "ready": sum(1 for w in workers if w["ready"]), "state": state, "reason": "", "backoff": backoff,
            "workers": workers}


def doc(*apps: dict[str, Any], errors: tuple[str, ...] = (), stopping: bool = False) -> dict[str, Any]:
    return {"master": {"stopping": stopping}, "site": {"errors": list(errors)}, "apps": list(apps)}


def test_done_when_every_app_runs_its_revision_with_all_workers_ready() -> None:
    verdict = decide(doc(app("web"), app("api", desired=1)))
    assert verdict.kind == "done"
    assert verdict.message == f"api {NEW}, web {NEW}"


def test_waiting_while_rolling_with_progress_per_app() -> None:
    rolling = app("web", desired=4, workers=[worker(), worker(), worker(state="booting"),
                                             worker(OLD), worker(OLD)])
    verdict = decide(doc(rolling, app("api")))
    assert verdict == Verdict("waiting", progress={"web": "web: 2/4 updated, 1 booting, 2 old"},
                              revisions=(("api", NEW), ("web", NEW)))


def test_an_old_worker_still_live_is_not_done_even_with_every_new_one_ready() -> None:
    web = app("web", workers=[worker(), worker(), worker(OLD, "busy")])
    assert decide(doc(web)).progress == {"web": "web: 2/2 updated, 1 old"}
    draining = app("web", workers=[worker(), worker(), worker(OLD, "draining")])
    assert decide(doc(draining)).kind == "done"  # on its way out: no longer counts


def test_scaling_up_waits_for_the_new_workers() -> None:
    web = app("web", desired=4, workers=[worker(), worker(), worker(state="booting")])
    assert decide(doc(web)).progress == {"web": "web: 2/4 updated, 1 booting"}


def test_failing_as_soon_as_the_desired_revision_is_in_backoff_with_the_boot_error() -> None:
    backoff = {"failures": 1, "retry_at": 0.0, "retry_in": 0.8, "error": BOOT_ERROR}
    web = app("web", workers=[worker(OLD), worker(OLD)], backoff=backoff)
    verdict = decide(doc(web, app("api")))
    assert verdict.kind == "failing"
    assert verdict.message.splitlines()[0] == (
        f"web: revision {NEW} cannot boot (1 failed boot, next try in 1s; the old workers keep serving):")
    assert "  ImportError: cannot import name 'x'" in verdict.message.splitlines()


def test_only_the_named_apps_count() -> None:
    backoff = {"failures": 3, "retry_at": 0.0, "retry_in": 4.0, "error": "boom"}
    site = doc(app("web"), app("api", backoff=backoff), app("admin", workers=[worker(state="booting")]))
    assert decide(site, ["web"]).kind == "done"
    assert decide(site, ["web", "admin"]).progress == {"admin": "admin: 0/2 updated, 1 booting"}
    assert decide(site, ["web", "api"]).kind == "failing"
    assert decide(site).kind == "failing"


def test_an_invalid_site_file_is_a_failing_rollout() -> None:
    verdict = decide(doc(app("web"), errors=("/srv/site.toml:4:11: apps.web.workers: must be at least 1",)))
    assert verdict.kind == "failing"
    assert "apps.web.workers: must be at least 1" in verdict.message


def test_unknown_or_removed_apps_and_a_stopping_master_wait() -> None:
    removed = app("old", desired=0, workers=[worker(OLD, "draining")], in_site=False, state="removing")
    verdict = decide(doc(app("web"), removed), ["web", "old", "nope"])
    assert verdict.kind == "waiting"
    assert verdict.unknown == ("old", "nope")
    assert decide(doc(app("web"), stopping=True)).progress == {"master": "the master is stopping"}


# ---- the polling loop, with a fake clock ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(docs: list[dict[str, Any]], apps: tuple[str, ...] = (), timeout: float = 10.0,
        settle: float = 2.0) -> tuple[int, str, str, Clock]:
    clock = Clock()
    stream: Iterator[dict[str, Any]] = iter(docs)
    last: list[dict[str, Any]] = []

    def status() -> dict[str, Any]:
        last[:] = [next(stream, last[0] if last else docs[-1])]  # the last document repeats
        return last[0]

    out, err = io.StringIO(), io.StringIO()
    code = wait(status, apps, timeout=timeout, settle=settle, out=out, err=err, clock=clock, sleep=clock.sleep)
    return code, out.getvalue(), err.getvalue(), clock


def test_progress_is_printed_only_when_it_changes_then_done() -> None:
    one = doc(app("web", workers=[worker(), worker(OLD)]))
    two = doc(app("web"))
    code, out, err, clock = run([one, one, one, two])
    assert code == 0 and err == ""
    assert out.splitlines() == ["web: 1/2 updated, 1 old", f"forkserve wait: rolled out (web {NEW})"]
    assert clock.now < 1.0  # a done seen after progress needs no settling


def test_done_at_the_first_answer_is_believed_only_after_settling() -> None:
    code, out, _, clock = run([doc(app("web"))], settle=2.0)
    assert code == 0 and clock.now >= 2.0
    code, _, _, clock = run([doc(app("web"))], settle=0.0)
    assert code == 0 and clock.now == 0.0
    # the change the master had not noticed yet shows up while settling: then it is waited for
    stale, rolling = doc(app("web")), doc(app("web", workers=[worker(), worker(OLD)]))
    code, out, _, clock = run([stale, stale, rolling, rolling, doc(app("web"))])
    assert code == 0 and "web: 1/2 updated, 1 old" in out


def test_failing_exits_1_with_the_error_on_stderr() -> None:
    backoff = {"failures": 1, "retry_at": 0.0, "retry_in": 1.0, "error": BOOT_ERROR}
    rolling = doc(app("web", workers=[worker(OLD), worker(OLD), worker(state="booting")]))
    code, out, err, _ = run([rolling, doc(app("web", workers=[worker(OLD), worker(OLD)], backoff=backoff))])
    assert code == 1
    assert out == "web: 0/2 updated, 1 booting, 2 old\n"
    assert err.startswith("forkserve wait: rollout failing\nweb: revision") and "ImportError" in err


def test_a_failure_at_the_first_answer_is_believed_only_after_settling_or_a_change() -> None:
    backoff = {"failures": 4, "retry_at": 0.0, "retry_in": 8.0, "error": BOOT_ERROR}
    stale = doc(app("web", workers=[worker(OLD), worker(OLD)], backoff=backoff))
    stale["apps"][0]["revision"] = "0badc0de"  # the previous deploy, which failed
    code, _, err, clock = run([stale], settle=2.0)
    assert code == 1 and clock.now >= 2.0 and "web: revision 0badc0de cannot boot" in err
    # the fix, noticed while settling: the failure was the previous revision's
    code, out, _, clock = run([stale, stale, doc(app("web"))], settle=2.0)
    assert code == 0 and clock.now < 1.0 and out == f"forkserve wait: rolled out (web {NEW})\n"


def test_timeout_exits_2_with_what_lags() -> None:
    code, _, err, clock = run([doc(app("web", workers=[worker(), worker(OLD)]))], timeout=3.0)
    assert code == 2 and 3.0 <= clock.now < 3.5
    assert err == "forkserve wait: timed out after 3s (web: 1/2 updated, 1 old)\n"


def test_an_app_the_site_does_not_have_is_a_usage_error_after_settling() -> None:
    code, out, err, clock = run([doc(app("web"))], apps=("wbe",), settle=1.0)
    assert code == 2 and 1.0 <= clock.now < 1.5
    assert out == "wbe: not in the running site\n"
    assert err == "forkserve wait: the running site has no app wbe\n"


# ---- the command line -------------------------------------------------------------------------------------------


def test_wait_arguments() -> None:
    args = cli._parser().parse_args(["wait", "site.toml", "web", "api", "--timeout", "30", "--socket", "/x.sock"])
    assert (args.command, args.site, args.apps, args.timeout, args.settle, args.socket) == (
        "wait", "site.toml", ["web", "api"], 30.0, 2.0, "/x.sock")


@pytest.mark.parametrize("argv", [["wait"], ["wait", "s.toml", "--timeout", "soon"]])
def test_wait_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: forkserve wait")


def test_wait_rejects_a_non_positive_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wait", "s.toml", "--timeout", "0", "--socket", "/nonexistent/x.sock"]) == 2
    assert "--timeout must be positive" in capsys.readouterr().err


def test_wait_without_a_master_exits_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wait", str(tmp_path / "site.toml"), "--socket", str(tmp_path / "none.sock")]) == 2
    assert "no master is running" in capsys.readouterr().err
