"""Validate a site file in a short-lived child process; the master gets plain frozen values back.

A fast path comes first for TOML files of up to 64 KiB (`forkserve.config.fast`: no pydantic, in-process,
a few ms): it can only say "valid, here is the result", held equal to the models' result by a differential
test. Whatever it does not vouch for is validated in the child, by the models, which also write every error
message. The size cap keeps a hostile file's parse out of the master's memory.

Why: pydantic and the models cost about 20 MB of memory, and every worker is forked from the master, so a
master that imported them would hand those pages to every worker of every app. Validating in a child also
means no site file, however hostile (deep nesting, huge strings), can exhaust the master's memory or raise
inside its loop: the worst case is a child that dies or times out, reported as a located error.

The child is a plain fork (no exec: it starts from the master's lean memory), imports the loader, validates,
and writes a pickle of either a `LoadedSite` or the list of `Diagnostic`s to a pipe. Only our own forked code
writes to that pipe. The master waits for the answer with a deadline; workers keep serving meanwhile.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms before the fork
if TYPE_CHECKING:
    from forkserve.spec import LoadedSite

# Nothing else is imported here at module level: `forkserve up` forks the validating child as its very first
# step, so every module imported before the fork would delay the child (pydantic, the critical path of start-up).

TIMEOUT = 20.0  # seconds; a 1 MiB file validates in well under a second
MAX_SITE_BYTES = 1 << 20  # read one byte more, so that the loader can say "too large"
FAST_PATH_MAX_BYTES = 64 << 10  # larger files (a site file is typically 1-4 KiB) are parsed in the child only


class Validation:
    """A validation under way in a child process: started now, its result collected later (so that the caller
    can do other work, such as importing the master, while the child imports the loader and validates)."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.path = data, path
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
            os.close(read_fd)
            _child(data, path, write_fd)
        os.close(write_fd)
        self.read_fd = read_fd

    def result(self, timeout: float = TIMEOUT) -> LoadedSite:
        """The LoadedSite, or ConfigError with the located diagnostics."""
        import pickle

        from forkserve.config.errors import ConfigError, Diagnostic

        try:
            payload = _read_all(self.read_fd, time.monotonic() + timeout)
        finally:
            os.close(self.read_fd)
        status = _reap(self.pid, timeout_hit=payload is None)
        if not payload:
            why = "timed out" if payload is None else f"stopped ({_describe(status)})"
            raise ConfigError([Diagnostic(self.path, None, None, "",
                                          f"validation {why}; the site file was not applied")])
        kind, value = pickle.loads(payload)
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        raise ConfigError(value)


def read_site(path: str) -> bytes | None:
    """The site file's bytes (at most MAX_SITE_BYTES + 1), or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_SITE_BYTES + 1)
    except OSError:
        return None


def signature(path: str) -> tuple[int, int, int, int] | None:
    """What `stat` says about the file behind the path (symlinks followed); None when it is missing. The master
    compares it on its timer, in case a file system does not deliver the watcher's events (NFS, some overlays)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Vouched:
    """A site file the fast path found valid: the result is there already. Same interface as Validation, so the
    master need not care which path validated its first file."""

    def __init__(self, data: bytes, loaded: LoadedSite) -> None:
        self.data, self.loaded = data, loaded

    def result(self, timeout: float = TIMEOUT) -> LoadedSite:
        return self.loaded


def start_validation(site_path: str) -> Validation | Vouched | None:
    """Read the site file and start validating it; None when it cannot be read (the master reports that)."""
    path = os.path.abspath(site_path)
    data = read_site(path)
    if data is None:
        return None
    loaded = _quick_load(data, path)
    return Validation(data, path) if loaded is None else Vouched(data, loaded)


def load_site(data: bytes, path: str, timeout: float = TIMEOUT) -> LoadedSite:
    """The site file's content -> LoadedSite: vouched for by the fast path, or else validated by the models in a
    child process (which also writes every error message). Raises ConfigError."""
    loaded = _quick_load(data, path)
    return loaded if loaded is not None else Validation(data, path).result(timeout)


def _quick_load(data: bytes, path: str) -> LoadedSite | None:
    if len(data) > FAST_PATH_MAX_BYTES or not path.lower().endswith(".toml"):
        return None  # YAML: not even the fast path's imports before the child is forked
    from forkserve.config.fast import quick_load

    return quick_load(data, path)


def _child(data: bytes, path: str, write_fd: int) -> None:
    code = 0
    try:
        signal.set_wakeup_fd(-1)  # signals meant for the master must not wake it through us
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # Third-party pydantic plugins have no business seeing site files, and looking for them scans every
        # installed package's metadata on the start-up critical path.
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
        # This process lives for one validation: collecting garbage cycles while pydantic's modules and the
        # models are built only costs time (~10 % of the child's start-up critical path). It exits right after.
        gc.disable()
        import pickle

        from forkserve.config.errors import ConfigError, Diagnostic
        from forkserve.config.load import load_text
        from forkserve.spec import LoadedSite

        try:
            result: tuple[str, object] = ("ok", LoadedSite.from_config(load_text(data, path)))
        except ConfigError as exc:
            result = ("error", exc.diagnostics)
        except Exception as exc:  # a bug in the loader must still reach the operator, located at the file
            result = ("error", [Diagnostic(path, None, None, "", f"internal error while validating: {exc!r}")])
        blob = pickle.dumps(result)
        view = memoryview(blob)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _read_all(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes until it closes the pipe; None on timeout."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, timeout_hit: bool) -> int:
    if timeout_hit:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:  # already reaped by someone else: nothing more to learn
        return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
