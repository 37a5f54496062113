"""Reloading the site file without ever blocking the loop.

A reload reads the file (at most `MAX_SITE_BYTES`), and when its content is new, validates it: from the cache of
validated results at once, or else in a child process (`config.validate`) whose pipe is one more selector event
of the loop. While the child works the loop keeps turning: workers are reaped and replaced, heartbeats read,
signals handled, status answered. When the answer comes, a valid file is applied (`apply`, the master's) and an
invalid one is logged with its located diagnostics; the running site is never touched by a bad file.

One reload at a time: a request that arrives while one validates is remembered and runs right after it,
re-reading the file (an explicit one keeps its meaning: it clears the backoff). Everyone who asked (a HUP, a
`forkserve reload` waiting on the control socket) gets the `ReloadOutcome` of the reload that served them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import selectors
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from forkserve.changes import RESTART_ONLY, summary
from forkserve.config.dependencies import Sources, current
from forkserve.config.errors import ConfigError, Diagnostic
from forkserve.config.validate import Validated, Validation, read_site, signature, validate
from forkserve.outcomes import ReloadKind, ReloadOutcome
from forkserve.snapshot import SiteSnapshot
from forkserve.spec import DesiredState, LoadedSite, ServerSettings

log = logging.getLogger("forkserve")

MAX_VALIDATIONS = 4  # children validating at once (reloads and `forkserve plan` requests); more are refused

Done = Callable[[LoadedSite | ConfigError], None]
Respond = Callable[[ReloadOutcome], None]


@dataclass
class SiteFile:
    """The last valid site file the master applied, and the outcome of the last attempt to read one."""

    path: str
    server: ServerSettings | None = None  # None until the first valid file is applied
    digest: str = ""  # sha256 of the bytes applied
    revision: str = ""
    signature: tuple[int, int, int, int] | None = None
    errors: tuple[str, ...] = ()  # diagnostics of the current (invalid) file; empty when it applied
    last_result: str = ""
    missing: bool = False
    sources: Sources | None = None  # the variables and env_files the applied site was computed from

    def snapshot(self) -> SiteSnapshot:
        return SiteSnapshot(self.path, self.revision, self.last_result, self.errors, self.missing)

    def accept(self, loaded: LoadedSite, data: bytes, current: DesiredState) -> ReloadOutcome:
        """A valid file becomes the applied one; `[server]` keys that need a restart keep their running values.
        The caller logs the outcome (it may add to it)."""
        new, server = loaded.desired, loaded.server
        old = self.server
        text = summary(current, new, old, server)
        if old is not None:  # settings the master cannot change live stay as they were
            server = dataclasses.replace(server, **{k: getattr(old, k) for k in RESTART_ONLY})
            if server.log_level != old.log_level:
                logging.getLogger("forkserve").setLevel(server.log_level.upper())
        self.server = server
        self.sources = loaded.sources
        self.digest = hashlib.sha256(data).hexdigest()
        self.errors = ()
        self.revision = new.revision
        outcome = ReloadOutcome(ReloadKind.APPLIED, new.revision, summary=text)
        self.last_result = outcome.line()
        return outcome


class Validations:
    """Validations under way in child processes, each one selector event; `tick` enforces their deadlines."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self.pending: dict[int, tuple[Validation, Done]] = {}

    def start(self, data: bytes, path: str, done: Done) -> bool:
        """Validate; `done` gets the LoadedSite or the ConfigError (at once on a cache hit). False when too many
        validations are under way already (nothing started)."""
        if len(self.pending) >= MAX_VALIDATIONS:
            return False
        try:
            job = validate(data, path)
        except OSError as exc:  # fork or pipe failed (EAGAIN, EMFILE): a located, retriable answer, not a crash
            done(ConfigError([Diagnostic(path, None, None, "", f"cannot validate now ({exc}); nothing applied")]))
            return True
        if isinstance(job, Validated):
            done(job.loaded)
            return True
        fd = job.fileno()
        self.pending[fd] = (job, done)
        self.selector.register(fd, selectors.EVENT_READ, lambda: self._readable(fd))
        return True

    def _readable(self, fd: int) -> None:
        job, _ = self.pending[fd]
        if job.on_readable():
            self._finish(fd)

    def tick(self, now: float) -> None:
        for fd, (job, _) in list(self.pending.items()):
            if job.expire(now):
                self._finish(fd)

    def _finish(self, fd: int) -> None:
        self.selector.unregister(fd)
        job, done = self.pending.pop(fd)
        try:
            result: LoadedSite | ConfigError = job.outcome()
        except ConfigError as exc:
            result = exc
        done(result)

    def cancel_all(self) -> None:
        for fd, (job, _) in list(self.pending.items()):
            self.selector.unregister(fd)
            job.cancel()
        self.pending.clear()


class ReloadHost(Protocol):
    """What reloads need of the master."""

    def apply(self, loaded: LoadedSite, data: bytes, explicit: bool, roll: Collection[str] = ()) -> ReloadOutcome:
        ...

    def before_reload(self, explicit: bool) -> None: ...

    def after_reload(self, explicit: bool, outcome: ReloadOutcome) -> None: ...

    def clear_backoff(self) -> None: ...

    def stopping(self) -> bool: ...

    def destructive(self, loaded: LoadedSite) -> str:
        """What the new file would take away (apps, binds), in words; "" when nothing."""

    def settle(self) -> float:
        """Seconds an in-place write must have rested before a destructive change applies."""


class Reloads:
    """Reads, validates and applies the site file on request; see the module docstring.

    Half-written files: a file written in place (same inode; an editor that flushes twice, `cat > site.toml`, a
    script) may be read between two writes. A change that would take something away (an app, a bind) is applied
    only once the file has rested `settle()` seconds since its last write; until then it waits, and a later
    event re-reads the file. A file replaced by rename (editors' atomic save, a ConfigMap's `..data` swap) is
    complete when it appears and applies at once, and so does an explicit reload: the operator says it is done.
    """

    def __init__(self, site: SiteFile, validations: Validations, host: ReloadHost) -> None:
        self.site = site
        self.validations = validations
        self.host = host
        self.validating = False
        self.queued = False  # a reload asked for while one validates (or waits for the file to settle)
        self.explicit = False  # of the queued one
        self.waiters: list[Respond] = []
        self.roll: set[str] = set()  # apps whose code the next explicit reload rolls (dropped if it does not apply)
        self.not_before = 0.0  # wall time: a destructive in-place change waits until then
        self.replaced = False  # the file read last replaced the one before it (another inode): complete

    def request(self, explicit: bool, respond: Respond | None = None, roll: Collection[str] = ()) -> None:
        """`roll`: apps whose code this (explicit) reload rolls, if the file it reads applies."""
        if respond is not None:
            self.waiters.append(respond)
        self.roll |= set(roll)
        self.explicit |= explicit
        self.queued = True
        if explicit:
            self.not_before = 0.0
        if not self.validating:
            self._begin()

    def _begin(self) -> None:
        explicit, waiters, roll = self.explicit, self.waiters, self.roll
        self.queued, self.explicit, self.waiters, self.roll = False, False, [], set()
        self.host.before_reload(explicit)
        site = self.site
        sig = signature(site.path)
        data = read_site(site.path)
        self.replaced = sig is not None and site.signature is not None and sig[:2] != site.signature[:2]
        site.signature = sig
        if data is None:
            self._finish(explicit, waiters, self._missing())
            return
        site.missing = False
        if hashlib.sha256(data).hexdigest() == site.digest and not explicit and current(site.sources, os.environ):
            self._finish(explicit, waiters, self._same())  # same bytes, same env_files: nothing to do
            return
        self.validating = True
        started = self.validations.start(data, site.path,
                                         lambda result: self._validated(explicit, waiters, data, result, roll))
        if not started:  # every child slot is taken by `plan` requests: `tick` tries again
            self.validating = False
            self.queued, self.explicit, self.waiters = True, self.explicit or explicit, waiters + self.waiters
            self.roll |= roll

    def tick(self) -> None:
        if self.queued and not self.validating and time.time() >= self.not_before:
            self._begin()

    def abandon(self) -> None:
        """Its validation was cancelled (an upgrade's exec that then failed): answer who waits, start afresh."""
        if self.validating:
            self.validating = False
            waiters, self.waiters = self.waiters, []
            _answer(waiters, ReloadOutcome(ReloadKind.ERROR, self.site.revision))

    def _next(self) -> None:
        """After a reload: the queued one runs now, or, once the master is stopping, is answered and dropped."""
        if not self.queued or self.validating:
            return
        if self.host.stopping():
            waiters, self.waiters, self.queued, self.explicit = self.waiters, [], False, False
            _answer(waiters, ReloadOutcome(ReloadKind.STOPPING, self.site.revision))
            return
        if time.time() >= self.not_before:
            self._begin()

    def _missing(self) -> ReloadOutcome:
        site = self.site
        if not site.missing:
            log.warning("site file %s is gone or unreadable; the running site (revision %s) keeps running",
                        site.path, site.revision)
        site.missing = True
        outcome = ReloadOutcome(ReloadKind.MISSING, site.revision)
        site.last_result = outcome.line()
        return outcome

    def _same(self) -> ReloadOutcome:
        site = self.site
        if not site.errors:
            return ReloadOutcome(ReloadKind.UNCHANGED, site.revision)
        site.errors = ()  # back to the content that is running: the error is gone
        outcome = ReloadOutcome(ReloadKind.RESTORED, site.revision)
        site.last_result = outcome.line()
        log.info("%s", site.last_result)
        return outcome

    def _validated(self, explicit: bool, waiters: list[Respond], data: bytes,
                   result: LoadedSite | ConfigError, roll: set[str]) -> None:
        self.validating = False
        try:
            outcome = self._outcome(explicit, data, result, roll)
        except Exception:  # a bug while applying: logged; everyone waiting still gets an answer
            log.exception("applying the site file failed; nothing changed")
            outcome = ReloadOutcome(ReloadKind.ERROR, self.site.revision)
        self._finish(explicit, waiters, outcome)

    def _outcome(self, explicit: bool, data: bytes, result: LoadedSite | ConfigError, roll: set[str]
                 ) -> ReloadOutcome:
        site = self.site
        if isinstance(result, ConfigError):
            site.errors = tuple(d.format() for d in result.diagnostics)
            outcome = ReloadOutcome(ReloadKind.INVALID, site.revision, problems=len(result.diagnostics))
            site.last_result = outcome.line()
            log.error("site file is invalid; nothing changed, revision %s keeps running:\n%s", site.revision,
                      "\n".join("    " + line for line in str(result).splitlines()))
        elif (waiting := self._unsettled(explicit, result)) is not None:
            outcome = waiting
        else:
            if explicit:
                self.host.clear_backoff()  # the operator asked: try broken apps again now
            outcome = self.host.apply(result, data, explicit, roll)
        return outcome

    def _unsettled(self, explicit: bool, result: LoadedSite) -> ReloadOutcome | None:
        """A destructive change of a file written in place, too recently: wait (see the class docstring)."""
        taken = self.host.destructive(result)
        sig = self.site.signature
        if not taken or explicit or self.replaced or sig is None:
            return None
        ready_at = sig[3] / 1e9 + self.host.settle()
        if time.time() >= ready_at:
            return None
        if self.not_before != ready_at:
            log.info("site file change %s: applied once the file has not changed for %.1fs (an atomic rename or "
                     "`forkserve reload` applies at once)", taken, self.host.settle())
        self.not_before = ready_at
        self.queued = True  # read again then; an event before then re-reads it too
        return ReloadOutcome(ReloadKind.PENDING, self.site.revision)

    def _finish(self, explicit: bool, waiters: list[Respond], outcome: ReloadOutcome) -> None:
        if outcome.kind is ReloadKind.PENDING and waiters:  # they asked for this reload: keep them for the next
            self.waiters = waiters + self.waiters
            waiters = []
        try:
            self.host.after_reload(explicit, outcome)
        finally:
            _answer(waiters, outcome)
            self._next()


def _answer(waiters: list[Respond], outcome: ReloadOutcome) -> None:
    for respond in waiters:  # each on its own: one that raises costs the others nothing
        try:
            respond(outcome)
        except Exception:
            log.exception("answering a reload request failed")
