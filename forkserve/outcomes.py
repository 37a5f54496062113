"""Outcomes as values: why a worker is retired or killed, what a restart is counted as, how a worker crashed,
what a reload did. Pure.

Each is written once here; log lines, status, metrics and the control protocol render them, and nothing matches
prose. The enums are `str` enums, so a value is its own wire form (`"rolled"`, `"invalid"`) in JSON and labels.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from enum import Enum


class RetireReason(str, Enum):
    """Why the plan retires a worker (graceful: SIGTERM, in-flight requests finish)."""

    SCALE = "scale"
    ROLLED = "rolled"  # replaced by a worker of the desired revision
    RECYCLE = "recycle"  # asked to be replaced (max_requests)
    REMOVED = "removed"  # its app left the site file
    STOP = "stop"  # the master is stopping gracefully

    def __str__(self) -> str:
        return self.value


class KillReason(str, Enum):
    """Why the plan sends a kill signal."""

    TIMEOUT = "timeout"  # ready, but silent for `timeout`
    BOOT_TIMEOUT = "boot_timeout"  # not ready within `boot_timeout`
    DRAIN_TIMEOUT = "drain_timeout"  # still busy after `graceful_timeout`
    ESCALATE = "escalate"  # an earlier kill signal was not enough: SIGKILL
    FAST_STOP = "fast_stop"

    def __str__(self) -> str:
        return self.value


class RestartCause(str, Enum):
    """What a worker replacement is counted as (status `restarts`, metric `forkserve_restarts_total{cause}`)."""

    CRASH = "crash"
    TIMEOUT = "timeout"
    BOOT_TIMEOUT = "boot_timeout"
    MAX_REQUESTS = "max_requests"
    ROLLED = "rolled"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_retire(cls, reason: RetireReason) -> RestartCause | None:
        return {RetireReason.ROLLED: cls.ROLLED, RetireReason.RECYCLE: cls.MAX_REQUESTS}.get(reason)

    @classmethod
    def of_kill(cls, reason: KillReason) -> RestartCause | None:
        return {KillReason.TIMEOUT: cls.TIMEOUT, KillReason.BOOT_TIMEOUT: cls.BOOT_TIMEOUT}.get(reason)


class CrashCause(str, Enum):
    """How a worker died when nobody asked it to (`forkserve_worker_crashes_total{cause}`, status `crashes`).

    A bounded set, so the metric's label cardinality is: a boot failure, a boot timeout, or, for a worker that
    was ready, the fatal signals by name (SIGKILL is usually the OOM killer), any other signal, or an exit."""

    BOOT_FAILURE = "boot_failure"  # exited before it reported ready (the import failed, ...)
    BOOT_TIMEOUT = "boot_timeout"  # killed: not ready within boot_timeout
    SIGSEGV = "SIGSEGV"
    SIGBUS = "SIGBUS"
    SIGABRT = "SIGABRT"
    SIGFPE = "SIGFPE"
    SIGILL = "SIGILL"
    SIGKILL = "SIGKILL"
    SIGNAL = "signal"  # any other signal
    EXIT_0 = "exit_0"  # exited on its own with status 0 (sys.exit() in the app, ...)
    EXIT_ERROR = "exit_error"  # exited on its own with another status (os._exit(1), ...)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_status(cls, status: int) -> CrashCause:
        """The cause of a ready worker's death, from its wait status."""
        if os.WIFSIGNALED(status):
            try:
                return cls(signal.Signals(os.WTERMSIG(status)).name)
            except ValueError:
                return cls.SIGNAL
        return cls.EXIT_0 if os.waitstatus_to_exitcode(status) == 0 else cls.EXIT_ERROR


@dataclass(frozen=True)
class Crash:
    """The last unexpected death of a ready worker of an app, and what it was serving (from its shared-memory
    slot): logged when it happens, shown by status."""

    pid: int
    cause: CrashCause
    how: str  # "killed by SIGSEGV", "exit code 1" (`process.describe_exit`)
    at: float  # monotonic
    serving: str = ""  # "GET /report?id=7" (bounded, as the worker wrote it), "" when it served nothing
    serving_for: float = 0.0  # seconds the request had run when the worker died
    in_flight: int = 0  # requests in flight (a gevent worker may have many; `serving` is the latest started)

    def line(self, app: str) -> str:
        """`app web: worker 123 died unexpectedly (killed by SIGSEGV) while serving GET /report?id=7 for 0.4s`."""
        text = f"app {app}: worker {self.pid} died unexpectedly ({self.how})"
        if self.serving:
            text += f" while serving {self.serving} for {self.serving_for:.1f}s"
            if self.in_flight > 1:
                text += f" (the latest of {self.in_flight} requests in flight)"
        elif self.in_flight:
            text += f" with {self.in_flight} requests in flight"
        else:
            text += " while idle"
        return text


class ReloadKind(str, Enum):
    APPLIED = "applied"  # a valid file with new content (or an explicit reload) was applied
    RESTORED = "restored"  # after an invalid edit, the file is back to the content that runs
    UNCHANGED = "unchanged"  # a file event, same content: not a reload at all
    INVALID = "invalid"  # nothing changed; the last good revision keeps running
    MISSING = "missing"  # the file is gone or unreadable; the running site keeps running
    PENDING = "pending"  # the file is being validated (in a child); the outcome follows
    STOPPING = "stopping"  # the master is stopping: nothing is applied any more
    ERROR = "error"  # applying raised inside the master (a bug: logged with its traceback); nothing changed

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did. `revision` is the site revision running afterwards."""

    kind: ReloadKind
    revision: str = ""
    summary: str = ""  # APPLIED: what changed, in words (`changes.summary`)
    problems: int = 0  # INVALID: how many diagnostics
    rolled: tuple[str, ...] = ()  # APPLIED by an explicit reload: the apps whose code rolls

    def line(self) -> str:
        """The result line: logged, kept as status `site.last_result`, returned by `forkserve reload`."""
        if self.kind is ReloadKind.APPLIED:
            rolling = f"; code rolling: {', '.join(self.rolled)}" if self.rolled else ""
            return f"site revision {self.revision} applied: {self.summary}{rolling}"
        if self.kind is ReloadKind.RESTORED:
            return f"site file is back to revision {self.revision}: no changes"
        if self.kind is ReloadKind.INVALID:
            return f"invalid: {self.problems} problem(s); still running revision {self.revision}"
        if self.kind is ReloadKind.MISSING:
            return "site file missing: keeping the running site"
        if self.kind is ReloadKind.PENDING:
            return "validating the site file"
        if self.kind is ReloadKind.STOPPING:
            return "the master is stopping: nothing applied"
        if self.kind is ReloadKind.ERROR:
            return f"reload failed inside the master (see its log); still running revision {self.revision}"
        return "unchanged"

    @property
    def counted(self) -> bool:
        """Is it a reload for the metrics (a file event with the same content is not)?"""
        return self.kind not in (ReloadKind.UNCHANGED, ReloadKind.PENDING, ReloadKind.STOPPING)

    @property
    def result_label(self) -> str:
        """`forkserve_reloads_total{result}`: applied | invalid | missing | error."""
        return {ReloadKind.INVALID: "invalid", ReloadKind.MISSING: "missing", ReloadKind.ERROR: "error"}.get(
            self.kind, "applied")

    def to_wire(self) -> dict[str, object]:
        """The `reload` reply of the control protocol: {"result": line, "outcome": kind, "revision": ...}."""
        return {"result": self.line(), "outcome": self.kind.value, "revision": self.revision,
                "rolled": list(self.rolled)}

    @classmethod
    def from_wire(cls, reply: dict[str, object]) -> ReloadOutcome:
        """A reply of this version's master; one of a master from before `outcome` existed is read by its line."""
        kind = reply.get("outcome")
        if kind is None:
            line = str(reply.get("result", ""))
            kind = "invalid" if line.startswith("invalid") else "missing" if line.startswith("site file missing") \
                else "applied"
        try:
            return cls(ReloadKind(str(kind)), str(reply.get("revision", "")))
        except ValueError:  # a kind newer than this client: it says what it did in its line
            return cls(ReloadKind.APPLIED, str(reply.get("revision", "")))

    @property
    def failed(self) -> bool:
        """Nothing was applied although the operator asked (`forkserve reload` exits 1)."""
        return self.kind in (ReloadKind.INVALID, ReloadKind.MISSING, ReloadKind.STOPPING, ReloadKind.ERROR)


RELOAD_RESULTS = ("applied", "invalid", "missing", "error")
RESTART_CAUSES = tuple(cause.value for cause in RestartCause)
CRASH_CAUSES = tuple(cause.value for cause in CrashCause)
