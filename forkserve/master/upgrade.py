"""Upgrading forkserve itself without dropping a connection: SIGUSR2 or `forkserve upgrade SITE`.

The master re-executes itself in place (`execve`: the same pid, so systemd's MAINPID, a container's PID 1 and
the pidfile stay true) with the forkserve now installed, and hands itself what it must not lose:

1. **Preflight.** `python -m forkserve check SITE` runs with the new code in a child (its exit is reaped by the
   loop like any child: no blocking). If the new code cannot even validate the site, the upgrade is refused,
   logged, and nothing changes.
2. **Hand-over.** Every listener's fd is made inheritable and named in `FORKSERVE_HANDOVER` (JSON: bind ->
   fd, and the pids of the running workers and preload processes). The listening sockets are never closed, so
   the kernel keeps queueing connections on them throughout, and unix socket files are never unlinked (the
   complaint about gunicorn's USR2). The control socket is closed (the new master opens it again); the metrics
   listener too (a scrape in that moment fails). Signals are blocked across the exec: the mask survives
   `execve`, so a TERM that arrives before the new master has its handlers is delivered to them, not fatal.
3. **Exec.** If `execve` itself fails, the master unblocks its signals and goes on as it was.

The new master adopts the sockets by bind, starts its own workers on them, and once every app has its
desired ready workers (or after the longest `boot_timeout`), TERMs the previous workers: they finish their
in-flight requests within `graceful_timeout` and are KILLed after it. They are still its children (same pid),
so the loop reaps them. Both generations accept on the same sockets meanwhile: nothing is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Protocol

from forkserve import process
from forkserve.config.binds import BindAddress
from forkserve.sockets import Listener, adopt_listener

log = logging.getLogger("forkserve")

ENV = "FORKSERVE_HANDOVER"
BLOCKED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGCHLD)


def key(bind: BindAddress) -> str:
    return f"{bind}#{bind.scope}"


class Preflight:
    """`forkserve check SITE` with the code now installed, in a child whose exit the loop reaps."""

    def __init__(self, site_path: str, then: Callable[[bool, str], None]) -> None:
        import subprocess  # only here: the master's memory before its first fork is every worker's

        self.then = then
        self.proc = subprocess.Popen([sys.executable, "-m", "forkserve", "check", site_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.output = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output_fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while chunk := self.proc.stdout.read(65536):
                self.output = (self.output + chunk)[-4096:]
        except (BlockingIOError, TypeError):  # TypeError: read() returned None (nothing yet)
            pass

    def exited(self, status: int) -> None:
        """Reaped by the master's loop (so Popen never waits): report the verdict."""
        self.read()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        text = self.output.decode(errors="replace").strip()
        self.then(self.proc.returncode == 0, text)


def exec_in_place(site_path: str, listeners: Mapping[BindAddress, Listener], workers: list[int],
                  preloads: Mapping[int, int], extra_env: Mapping[str, str] | None = None) -> OSError:
    """Replace this process with a fresh `forkserve up SITE` that takes over; returns only on failure.
    `preloads`: preload process pid -> its control socket's fd, kept open across the exec (a preload process
    exits when its master closes that socket, and its workers with it)."""
    handover = {"listeners": {key(b): li.sock.fileno() for b, li in listeners.items()}, "workers": workers,
                "preloads": {str(pid): fd for pid, fd in preloads.items()}}
    fds = [*(li.sock.fileno() for li in listeners.values()), *preloads.values()]
    for fd in fds:
        os.set_inheritable(fd, True)
    env = {**os.environ, **(extra_env or {}), ENV: json.dumps(handover)}
    argv = [sys.executable, "-m", "forkserve", "up", site_path]
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)  # already blocked by Upgrade._checked
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for fd in fds:
            os.set_inheritable(fd, False)
        return exc
    raise AssertionError("not reached")  # pragma: no cover


class Handover:
    """The new master's side: the sockets and the previous workers handed over by the master it replaced.

    The previous workers are retired once the new ones serve: TERM (they finish in-flight requests), KILL after
    `graceful_timeout`. Workers forked by a previous preload process are not our children: their exit is seen
    by `kill(pid, 0)`; once they are all gone, the preload processes' control sockets are closed and they exit.
    """

    def __init__(self, listeners: dict[str, int], workers: set[int], preloads: dict[int, int]) -> None:
        self.listeners = listeners
        self.workers = workers
        self.preloads = preloads  # pid -> control fd
        self.term_sent_at: float | None = None

    @property
    def adopted(self) -> bool:
        return bool(self.workers or self.preloads)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str]) -> Handover:
        text = environ.pop(ENV, "")  # the signals the previous master blocked stay blocked until the handlers
        # are in place (`Wakeup.install` unblocks them): a TERM in between waits instead of killing us
        if not text:
            return cls({}, set(), {})
        try:
            data = json.loads(text)
            listeners = {str(k): int(v) for k, v in data.get("listeners", {}).items()}
            workers = {int(pid) for pid in data.get("workers", [])}
            preloads = {int(pid): int(fd) for pid, fd in data.get("preloads", {}).items()}
        except (ValueError, TypeError, AttributeError):
            log.error("ignoring a malformed %s", ENV)
            return cls({}, set(), {})
        for fd in preloads.values():
            os.set_inheritable(fd, False)
        return cls(listeners, workers, preloads)

    def take(self, bind: BindAddress) -> Listener | None:
        fd = self.listeners.pop(key(bind), None)
        return None if fd is None else adopt_listener(fd, bind)

    def leftovers(self) -> None:
        """Sockets handed over that no bind of the site file took (the file changed before the upgrade): closed,
        and a unix socket's file removed, as the previous master would have on closing it."""
        for name, fd in self.listeners.items():
            with contextlib.suppress(OSError):
                os.close(fd)
            bind = name.rsplit("#", 1)[0]
            if bind.startswith("unix:"):  # its file was the previous master's to remove
                with contextlib.suppress(OSError):
                    os.unlink(bind.removeprefix("unix:"))
        self.listeners.clear()

    def reaped(self, pid: int) -> None:
        self.workers.discard(pid)
        self.preloads.pop(pid, None)

    def tick(self, now: float, converged: bool, grace: float, deadline: float) -> None:
        """TERM the previous workers once the new ones serve (or at `deadline`); KILL them after `grace`; then let
        the previous preload processes go."""
        if not self.adopted:
            return
        self.workers = {pid for pid in self.workers if _alive(pid)}
        if self.term_sent_at is None:
            if converged or now >= deadline:
                self.term_sent_at = now
                log.info("upgrade: %s; retiring the previous master's %d worker(s)",
                         "every app is ready" if converged else "not every app is ready in time", len(self.workers))
                for pid in self.workers:
                    process.send_signal(pid, signal.SIGTERM)
        elif self.workers and now - self.term_sent_at >= grace:
            for pid in self.workers:
                process.send_signal(pid, signal.SIGKILL)
            self.term_sent_at = now  # and again after another grace, should one survive SIGKILL's delivery
        if self.term_sent_at is not None and not self.workers:
            for fd in self.preloads.values():  # a preload process exits when its master's socket closes
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.preloads = {pid: -1 for pid in self.preloads}  # reaped (our children) when they exit


def _alive(pid: int) -> bool:
    """Still running (a zombie of ours counts until the loop reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class UpgradeHost(Protocol):
    """What an upgrade needs of the master."""

    selector: selectors.BaseSelector
    upgrading: Upgrade | None

    @property
    def site_path(self) -> str: ...

    def stopping(self) -> bool: ...

    def take_signals(self) -> list[int]:
        """Signals noted by the handlers, not yet acted on."""

    def before_exec(self) -> tuple[Mapping[BindAddress, Listener], list[int], dict[int, int], dict[str, str]]:
        """Stop what must not outlive the exec (control socket, watcher, validations); return the listeners,
        the worker pids and the preload processes' control fds to hand over."""

    def after_failed_exec(self) -> None:
        """The exec failed: bring back what `before_exec` stopped."""


class Upgrade:
    """One upgrade: the preflight check, then the exec (see the module docstring)."""

    def __init__(self, host: UpgradeHost, respond: Callable[[dict[str, object] | Exception], None] | None) -> None:
        self.host, self.respond = host, respond
        log.info("upgrade: checking the site with the forkserve now installed (%s -m forkserve check)",
                 sys.executable)
        self.preflight = Preflight(host.site_path, self._checked)
        self.fd = self.preflight.output_fd
        host.selector.register(self.fd, selectors.EVENT_READ, self.preflight.read)

    def _answer(self, result: dict[str, object] | Exception) -> None:
        if self.respond is not None:
            try:
                self.respond(result)
            except Exception:
                log.exception("answering the upgrade request failed")

    def _checked(self, ok: bool, text: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.host.selector.unregister(self.fd)
        if not ok:
            self.host.upgrading = None
            log.error("upgrade refused: `forkserve check` with the installed code failed; nothing changed:\n%s",
                      "\n".join("    " + line for line in text.splitlines()[-20:]))
            self._answer(RuntimeError(f"refused: forkserve check failed with the installed code: {text[-500:]}"))
            return
        # From here to the exec, a signal must reach the new master: block them now, and hand the ones noted but
        # not yet acted on back to the kernel (pending signals survive execve).
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        for sig in self.host.take_signals():
            os.kill(os.getpid(), sig)
        if self.host.stopping():  # a stop asked for during the preflight is final
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self.host.upgrading = None
            log.warning("upgrade abandoned: the master is stopping")
            self._answer(RuntimeError("the master is stopping"))
            return
        self._answer({"upgrading": True, "pid": os.getpid()})
        log.info("upgrade: re-executing %s -m forkserve up %s in place (pid %d)", sys.executable,
                 self.host.site_path, os.getpid())
        listeners, workers, preloads, env = self.host.before_exec()
        exc = exec_in_place(self.host.site_path, listeners, workers, preloads, env)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        log.error("upgrade failed: cannot execute %s: %s; serving on as before", sys.executable, exc)
        self.host.upgrading = None
        self.host.after_failed_exec()
