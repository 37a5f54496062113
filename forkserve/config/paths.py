"""Where a site's private files live by default. Reads the environment (XDG_RUNTIME_DIR, the uid); no I/O."""

from __future__ import annotations

import hashlib
import os


def site_key(site_path: str) -> str:
    """A short stable name per site file, so two sites on one machine never share a control socket."""
    return hashlib.sha256(os.path.abspath(site_path).encode()).hexdigest()[:16]


def default_control_socket(site_path: str) -> str:
    """`$XDG_RUNTIME_DIR/forkserve/<key>.sock`, or `/tmp/forkserve-<uid>/<key>.sock` without XDG_RUNTIME_DIR.

    Both directories are private to the user (the runtime dir by its spec; the master creates the /tmp one 0700).
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "forkserve") if runtime else f"/tmp/forkserve-{os.getuid()}"
    return os.path.join(base, f"{site_key(site_path)}.sock")
