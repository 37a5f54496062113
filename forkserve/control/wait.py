"""`forkserve wait SITE [APP...]`: block until a rollout is done, for deploy pipelines (like `kubectl rollout
status`).

    0  every named app (default: every app of the running site) runs its desired revision with all its workers
       ready: status `updated == desired` and no live worker of another revision
    1  a rollout is failing: the desired revision of a named app is in backoff (its new workers cannot boot; the
       boot error is printed), or the site file is invalid (the running site ignores it; the errors are printed)
    2  timeout (`--timeout`, default 300 s), usage error (an app the running site does not have), no master, or
       the master went away

It polls the control socket's `status` (`forkserve/status.py`) and prints a progress line per app when it
changes (`web: 2/4 updated, 2 old`). `decide(doc, apps)` is the whole decision, pure.

A master notices a change a moment after it is made (the site file's debounce and validation, the release
symlink check every second). So when the very first answer already says "done" or "failing", `wait` keeps
watching for `--settle` seconds (default 2) before it believes it, unless the answer changes meanwhile (another
verdict or other revisions: the master has acted): `edit the file; forkserve wait` cannot report the outcome of
the previous revision. After `forkserve reload SITE` (which returns once the file is applied), `--settle 0` is
safe.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

DONE, FAILING, ERROR = 0, 1, 2
TIMEOUT = 300.0
SETTLE = 2.0
POLL = 0.2
LIVE = ("booting", "idle", "busy")  # worker states of `forkserve/status.py` that count as running


@dataclass(frozen=True)
class Verdict:
    """What one status document says about a rollout: "done", "failing" (why: `message`), or "waiting" (how
    far: `progress`, one line per app)."""

    kind: Literal["done", "failing", "waiting"]
    message: str = ""
    progress: dict[str, str] = field(default_factory=dict)  # app -> "web: 2/4 updated"
    unknown: tuple[str, ...] = ()  # named apps that the running site does not have (waiting)
    revisions: tuple[tuple[str, str], ...] = ()  # (app, desired revision) of the named apps the site has

    def signature(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What tells two answers apart for `wait`'s settling (not the changing details: retry_in, counts)."""
        return self.kind, self.revisions


def decide(doc: dict[str, Any], apps: Sequence[str] = ()) -> Verdict:
    """The verdict of a `status` document for the named apps (all apps of the site when none are named)."""
    if doc["site"]["errors"]:
        errors = "\n".join(f"  {e}" for e in doc["site"]["errors"])
        return Verdict("failing", f"the site file is invalid (the running site ignores it):\n{errors}")
    by_name = {a["name"]: a for a in doc["apps"] if a["in_site"]}
    names = list(dict.fromkeys(apps)) or sorted(by_name)
    unknown = tuple(n for n in names if n not in by_name)
    revisions = tuple((n, str(by_name[n]["revision"])) for n in names if n in by_name)
    failing = [_failure(by_name[n]) for n in names if n in by_name and by_name[n]["backoff"] is not None]
    if failing:
        return Verdict("failing", "\n".join(failing), revisions=revisions)
    progress = {n: f"{n}: not in the running site" for n in unknown}
    for name in names:
        if name in by_name and not _done(by_name[name]):
            progress[name] = _progress(by_name[name])
    if doc["master"]["stopping"]:
        progress["master"] = "the master is stopping"
    if progress:
        return Verdict("waiting", progress=progress, unknown=unknown, revisions=revisions)
    return Verdict("done", ", ".join(f"{n} {by_name[n]['revision']}" for n in names), revisions=revisions)


def _old(app: dict[str, Any]) -> int:
    """Live workers of another revision than the desired one."""
    return sum(1 for w in app["workers"] if w["state"] in LIVE and w["revision"] != app["revision"])


def _done(app: dict[str, Any]) -> bool:
    return app["updated"] >= app["desired"] and _old(app) == 0 and app["state"] != "rolling"


def _progress(app: dict[str, Any]) -> str:
    old = _old(app)
    booting = sum(1 for w in app["workers"] if w["state"] == "booting" and w["revision"] == app["revision"])
    extra = [f"{booting} booting"] if booting else []
    extra += [f"{old} old"] if old else []
    return f"{app['name']}: {app['updated']}/{app['desired']} updated" + (f", {', '.join(extra)}" if extra else "")


def _failure(app: dict[str, Any]) -> str:
    backoff = app["backoff"]
    retry = f"{backoff['failures']} failed boot{'s' if backoff['failures'] != 1 else ''}, next try in " \
            f"{backoff['retry_in']:.0f}s; the old workers keep serving"
    error = "\n".join(f"  {line}" for line in str(backoff["error"]).strip().splitlines())
    return f"{app['name']}: revision {app['revision']} cannot boot ({retry}):\n{error or '  (no error text)'}"


Status = Callable[[], dict[str, Any]]


def wait(status: Status, apps: Sequence[str] = (), timeout: float = TIMEOUT, settle: float = SETTLE,
         out: TextIO | None = None, err: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll `status()` (raises the client's NoMaster / ControlError, left to the caller) until `decide` says
    done (0) or failing (1), or `timeout` seconds pass (2). Prints what changed to `out`, failures to `err`."""
    out = out or sys.stdout
    err = err or sys.stderr
    start = clock()
    settle = min(settle, timeout)
    printed: dict[str, str] = {}
    first: tuple[str, tuple[tuple[str, str], ...]] | None = None
    changed = False  # the answer differs from the first one: the master has acted on whatever came before
    while True:
        verdict = decide(status(), apps)
        now = clock() - start
        first = first or verdict.signature()
        changed = changed or verdict.signature() != first or verdict.kind == "waiting"
        believed = changed or now >= settle
        if verdict.kind == "failing" and believed:
            print(f"forkserve wait: rollout failing\n{verdict.message}", file=err, flush=True)
            return FAILING
        if verdict.kind == "done" and believed:
            print(f"forkserve wait: rolled out ({verdict.message})", file=out, flush=True)
            return DONE
        if verdict.unknown and now >= settle:
            print(f"forkserve wait: the running site has no app {', '.join(verdict.unknown)}", file=err, flush=True)
            return ERROR
        for name, line in verdict.progress.items():
            if printed.get(name) != line:
                print(line, file=out, flush=True)
                printed[name] = line
        if now >= timeout:
            lagging = "; ".join(verdict.progress.values()) or "not settled yet"
            print(f"forkserve wait: timed out after {timeout:g}s ({lagging})", file=err, flush=True)
            return ERROR
        sleep(max(0.0, min(POLL, timeout - now)))
