"""How anything wakes the master: one self-pipe, written by signal delivery and by the file watcher's thread.

Signal handlers only note the signal (`pending`); Python's wakeup fd writes the signal's number to the pipe, so
the selector returns at once. The watcher's thread writes `b"w"`, nothing else (a thread that held a lock at
fork time would leave it held in every child; one `write` holds none). The loop drains the pipe and acts.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGCHLD)


class Wakeup:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        self.pending: list[int] = []  # signals noted, not yet acted on
        self.file_event_at: float | None = None  # first watcher byte of a burst, not yet acted on

    def install(self, selector: selectors.BaseSelector) -> None:
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self._note)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # blocked across an upgrade's exec: delivered now
        selector.register(self.read_fd, selectors.EVENT_READ, self.drain)

    def _note(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)  # only note it: the loop acts

    def take_signals(self) -> list[int]:
        signals, self.pending = self.pending, []
        return signals

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.read_fd, 4096):
                if b"w" in data and self.file_event_at is None:  # the watcher (signals write their number)
                    # debounce from the first event of a burst: later events cannot postpone the read; a read
                    # that lands mid-burst is followed by another once the content changes again
                    self.file_event_at = time.monotonic()

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
