"""Preload processes (zygotes) of apps with `preload = true`, kept by the master. OS calls; decisions are small.

One zygote per (app, revision), started when the plan first asks for a worker of that revision and retired when
no desired spec and no running worker needs it any more. While a zygote boots, spawn requests for it are
dropped: the level-triggered plan asks again on the next wake-up. A zygote that dies before it is ready is a boot
failure of that revision (same backoff as workers); one that dies later takes its workers with it (they notice
their parent is gone), and the master, a child subreaper, reaps them.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from forkserve import process
from forkserve.spec import AppSpec

if TYPE_CHECKING:
    import socket

log = logging.getLogger("forkserve")

ANSWER_TIMEOUT = 1.0  # seconds the master waits for a zygote to answer a spawn request


@dataclass
class ZygoteRecord:
    zygote: process.Zygote
    spec: AppSpec
    started: float
    ready: bool = False
    boot_error: str = ""
    retiring: bool = False
    killed: bool = False


class PreloadHost(Protocol):
    """What the preload processes need of the master: narrow callbacks, never the master itself."""

    def watch(self, fd: int) -> None: ...

    def unwatch(self, fd: int) -> None: ...

    def worker_exited(self, pid: int, status: int, now: float) -> None: ...

    def boot_failed(self, app: str, revision: str, now: float, error: str) -> None: ...

    def preload_needed(self, app: str, revision: str) -> bool:
        """Does a desired spec, the proven fallback or a running worker still need this revision's process?"""

    def stopping(self) -> bool: ...


class Preloads:
    def __init__(self, host: PreloadHost) -> None:
        self.host = host
        self.zygotes: dict[tuple[str, str], ZygoteRecord] = {}

    def spawn(self, spec: AppSpec, sockets: list[socket.socket], now: float) -> process.Spawned | None:
        """A worker forked by the revision's zygote; None while the zygote is still starting."""
        record = self.zygotes.get((spec.name, spec.revision))
        if record is None:
            self._start(spec, sockets, now)
            return None
        if not record.ready or record.retiring:
            return None
        try:
            spawned, exits = process.request_worker(record.zygote, timeout=ANSWER_TIMEOUT)
        except OSError as exc:
            # A zygote only forks: it answers in milliseconds. One that did not is stopped or wedged by app code
            # and can fork nothing more; a late answer could even be taken for the next request's. So it goes,
            # like a hung worker: its workers follow it, and the next spawn starts a fresh zygote. The master
            # waited ANSWER_TIMEOUT once for it, not once per wake-up.
            log.error("app %s: %s in %.0fs; killing it (its workers exit) and starting a new one", spec.name, exc,
                      ANSWER_TIMEOUT)
            record.retiring = record.killed = True
            process.send_signal(record.zygote.pid, signal.SIGKILL)
            return None
        for pid, status in exits:
            self.host.worker_exited(pid, status, now)
        return spawned

    def _start(self, spec: AppSpec, sockets: list[socket.socket], now: float) -> None:
        key = (spec.name, spec.revision)
        try:
            zygote = process.spawn_zygote(spec, sockets)
        except OSError as exc:
            self.host.boot_failed(spec.name, spec.revision, now, f"fork: {exc}")
            log.error("app %s: cannot fork the preload process: %s", spec.name, exc)
            return
        self.zygotes[key] = ZygoteRecord(zygote, spec, now)
        for fd in (zygote.end.read_fd, zygote.control.fileno()):
            self.host.watch(fd)
        log.info("app %s: preload process %d importing revision %s", spec.name, zygote.pid, spec.revision)

    def tick(self, now: float) -> None:
        """Every wake-up: read the zygotes' news, enforce boot timeouts, retire the ones no longer needed."""
        for key, record in list(self.zygotes.items()):
            self._read(record, now)
            if not record.ready and not record.killed and now - record.started >= record.spec.boot_timeout:
                record.killed = True
                log.error("app %s: preload process not ready in %.0fs; killing it", key[0], record.spec.boot_timeout)
                process.send_signal(record.zygote.pid, signal.SIGKILL)
            if not record.retiring and not self.host.preload_needed(*key):
                record.retiring = True
                process.send_signal(record.zygote.pid, signal.SIGTERM)

    def _read(self, record: ZygoteRecord, now: float) -> None:
        zygote = record.zygote
        if zygote.end.read_fd >= 0:
            events, closed = zygote.end.read_events()
            for event in events:
                if event.get("event") == "ready" and not record.ready:
                    record.ready = True
                    log.info("app %s: preload process %d ready (revision %s)", record.spec.name, zygote.pid,
                             record.spec.revision)
                elif event.get("event") == "boot_error":
                    record.boot_error = str(event.get("text", ""))
            if closed:
                self.host.unwatch(zygote.end.read_fd)
                zygote.end.close()
        messages, _closed = process.read_zygote_messages(zygote)
        for pid, status in process.parse_exits(messages):
            self.host.worker_exited(pid, status, now)

    def reaped(self, pid: int, status: int, now: float) -> bool:
        """The master reaped `pid`: True when it was a zygote (now forgotten)."""
        key = next((k for k, r in self.zygotes.items() if r.zygote.pid == pid), None)
        if key is None:
            return False
        record = self.zygotes.pop(key)
        self._read(record, now)
        self._forget(record)
        how = process.describe_exit(status)
        if not record.ready:
            error = record.boot_error.strip() or f"preload process exited during boot ({how})"
            self.host.boot_failed(key[0], key[1], now, error)
            log.error("app %s (revision %s): preload process %d failed to boot (%s):\n%s", key[0], key[1], pid,
                      how, "\n".join("    " + line for line in error.splitlines()))
        elif not record.retiring and not self.host.stopping():
            log.warning("app %s: preload process %d died (%s); its workers exit and are replaced", key[0], pid, how)
        return True

    def _forget(self, record: ZygoteRecord) -> None:
        zygote = record.zygote
        if zygote.end.read_fd >= 0:
            self.host.unwatch(zygote.end.read_fd)
            zygote.end.close()
        if zygote.control.fileno() >= 0:
            self.host.unwatch(zygote.control.fileno())
            zygote.control.close()

    def close(self) -> None:
        for record in self.zygotes.values():
            process.send_signal(record.zygote.pid, signal.SIGTERM)

    def pids(self) -> list[int]:
        return [record.zygote.pid for record in self.zygotes.values()]

    def forget_all(self) -> None:
        """The master drained every child by hand (its loop gave up): drop the records without signalling."""
        for record in self.zygotes.values():
            self._forget(record)
        self.zygotes.clear()

    def controls(self) -> dict[int, int]:
        """Each preload process's pid -> the fd of its control socket (kept open across an upgrade's exec)."""
        return {r.zygote.pid: r.zygote.control.fileno() for r in self.zygotes.values()
                if r.zygote.control.fileno() >= 0}
