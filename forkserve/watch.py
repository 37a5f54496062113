"""Wake the master when the site file may have changed. The watcher thread decides nothing.

watchdog observes the *directory* that holds the site file, so every way a file gets replaced is seen: editors
that save by rename (vim), in-place rewrites, and Kubernetes ConfigMaps, where the file is a symlink through a
`..data` link swapped atomically. Any event in that directory writes one byte to the master's wake-up pipe; the
master then compares the file's content with what it applied (level-triggered), so an identical rewrite or a
`touch` changes nothing and a burst of events converges on the final content. The master also checks the file's
stat signature on its timer, in case a file system does not deliver inotify events (NFS, some overlay mounts).

The thread only calls os.write on a non-blocking pipe: it takes no lock the master's forked children could
inherit in a locked state.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

_CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})  # "closed": closed after a write


class _Wake(FileSystemEventHandler):
    """Wakes the master for writes that can change what the site file path resolves to; ignores the rest.

    Reads (opened, closed_no_write) and other files in the directory are ignored: a log file or a reader
    polling next to the site file must not keep the master busy (or, worse, postpone a reload)."""

    def __init__(self, wake_fd: int, name: str) -> None:
        self._fd = wake_fd
        self._name = name

    def _relevant(self, path: str | bytes) -> bool:
        base = os.path.basename(os.fsdecode(path))
        return base == self._name or base.startswith("..")  # ..data, ..2026_11_26...: Kubernetes' swap

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if not any(p and self._relevant(p) for p in paths):
            return
        with contextlib.suppress(OSError):  # pipe full: a wake-up is already pending, which is all we need
            os.write(self._fd, b"w")


class SiteWatcher:
    def __init__(self, site_path: str, wake_fd: int) -> None:
        self._dir = str(Path(site_path).absolute().parent)
        self._name = Path(site_path).name
        self._wake_fd = wake_fd
        self._observer: Any = None

    def start(self) -> None:
        from watchdog.observers import Observer

        observer = Observer()
        observer.daemon = True
        observer.schedule(_Wake(self._wake_fd, self._name), self._dir, recursive=False)
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None


def start_watcher(site_path: str, wake_fd: int, fallback: float) -> SiteWatcher | None:
    """A running watcher, or None (logged) when it cannot start: the master's stat check every `fallback`
    seconds still sees edits."""
    watcher = SiteWatcher(site_path, wake_fd)
    try:
        watcher.start()
    except OSError as exc:  # e.g. the inotify watch or instance limit
        logging.getLogger("forkserve").warning("cannot watch %s for changes (%s); checking it every %.2gs instead",
                                               site_path, exc, fallback)
        return None
    return watcher
