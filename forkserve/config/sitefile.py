"""The one reader of site files: bytes of a regular file, at most MAX_SITE_BYTES + 1, never blocking.

Every path that reads a site file goes through `read_bytes`: the master (start-up, reloads, through
`config.validate.read_site`), `forkserve check` and the client (through `config.load.read_site_file`, which words
the failures as located diagnostics). One reader means one answer to "what is too large", "what is not a file"
and "what if the path is a FIFO" (opened non-blocking, refused as not regular: a FIFO at the site path must not
hang the master's loop).

Imported by the master before its first fork: standard library only, nothing that is not already loaded by `os`.
"""

from __future__ import annotations

import os
import stat

MAX_SITE_BYTES = 1 << 20  # read one byte more, so that the loader can say "too large"


class NotARegularFile(Exception):
    """The path names a directory, device, FIFO or socket; `kind` words which."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file: it is {kind}")
        self.kind = kind


def read_bytes(path: str) -> bytes:
    """The file's bytes (at most MAX_SITE_BYTES + 1). Raises OSError or NotARegularFile."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile("a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket")
        chunks = []
        remaining = MAX_SITE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_site(path: str) -> bytes | None:
    """The site file's bytes (at most MAX_SITE_BYTES + 1), or None when it cannot be read (the master reports
    that and keeps what runs)."""
    try:
        return read_bytes(path)
    except (OSError, NotARegularFile):
        return None


def signature(path: str) -> tuple[int, int, int, int] | None:
    """What `stat` says about the file behind the path (symlinks followed); None when it is missing. The master
    compares it on its timer, in case a file system does not deliver the watcher's events (NFS, some overlays)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
