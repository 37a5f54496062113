"""Validate a site file in a short-lived child process, as an event of the master's loop; plain values come back.

Why a child: pydantic and the models cost about 20 MB of memory, and every worker is forked from the master, so a
master that imported them would hand those pages to every worker of every app. Validating in a child also
means no site file, however hostile (deep nesting, huge strings), can exhaust the master's memory or raise
inside its loop: the worst case is a child that dies or times out, reported as a located error.

Why an event: the master is single-threaded; a reload that waited for the child (~150 ms, up to TIMEOUT) would
stall signals, child exits and control commands meanwhile. So a `Validation` is a file object for a selector:
register `fileno()` for EVENT_READ, call `on_readable()` when it fires and `expire(now)` on the timer, and read
`outcome()` once `done`. `result()` is the blocking form, for start-up and the command line.

Why a cache: most starts and reloads see a file that was validated before. `validate()` first asks
`config.cache` for the models' earlier verdict on exactly these bytes, this code and this environment (and the
same values of the variables and env_files that verdict read); a hit is
a `Validated` (same `result()`), and no child is forked. Only valid results are cached, written by `outcome()`.

The child is a plain fork (no exec: it starts from the master's lean memory), imports the loader, validates,
and writes a pickle of either a `LoadedSite` or the list of `Diagnostic`s to a pipe. Only our own forked code
writes to that pipe, and the outcome depends on its payload alone: the master reaps children with
`waitpid(-1)`, so the exit status may never reach us, and a payload that is empty or cut short means the child
stopped. A kill is sent only while the pipe is still open, so the pid is still our live child's.
"""

from __future__ import annotations

import gc
import os
import signal
import time

from forkserve.config.sitefile import MAX_SITE_BYTES, read_site, signature

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms before the fork
if TYPE_CHECKING:
    from forkserve.config.errors import ConfigError
    from forkserve.config.paths import Env
    from forkserve.spec import LoadedSite

# Nothing else is imported here at module level: `forkserve up` forks the validating child as its very first
# step, so every module imported before the fork would delay the child (pydantic, the critical path of start-up).

__all__ = ["MAX_SITE_BYTES", "TIMEOUT", "Validated", "Validation", "load_site", "read_site", "signature",
           "start_validation", "validate"]

TIMEOUT = 20.0  # seconds; a 1 MiB file validates in well under a second
# Seconds to wait for the child to become reapable: after it closed its pipe (it is exiting: microseconds), after
# SIGKILL (its memory is being freed). Past that, the master's own reaping collects it.
_REAP_WAIT = {False: 0.1, True: 1.0}


class Validated:
    """A result already there (a cache hit): the same interface as a finished Validation."""

    __slots__ = ("data", "loaded")
    done = True

    def __init__(self, data: bytes, loaded: LoadedSite) -> None:
        self.data, self.loaded = data, loaded

    def outcome(self) -> LoadedSite:
        return self.loaded

    def result(self, timeout: float = TIMEOUT) -> LoadedSite:
        return self.loaded


class Validation:
    """A validation under way in a forked child. Register `fileno()` with a selector for EVENT_READ; when it
    fires, `on_readable()`; on the timer, `expire(now)`. Once either returns True (`done`), unregister it and
    read `outcome()`. The pipe stays open until `outcome()`, `result()` or `cancel()`, so its fd number cannot
    be reused while a selector still holds it."""

    def __init__(self, data: bytes, path: str, env: Env | None = None, cache_key: str | None = None) -> None:
        from forkserve.config.paths import Env

        self.data, self.path = data, path
        self.done = False
        self.started = time.monotonic()
        self.deadline = self.started + TIMEOUT
        self._env = env or Env.from_os()
        self._cache_key = cache_key
        self._chunks: list[bytes] = []
        self._stopped: str | None = None  # why there is no payload to trust: "timed out", "was cancelled"
        self._status: int | None = None  # the exit status, when we were the ones to reap the child
        self._result: tuple[LoadedSite | None, ConfigError | None] | None = None
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
            os.close(read_fd)
            _child(data, path, self._env, write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._fd = read_fd
        self._reaped = False

    def fileno(self) -> int:
        return self._fd

    def on_readable(self) -> bool:
        """Read what the child wrote so far, without blocking; True once it closed the pipe (and is reaped)."""
        if self.done:
            return True
        if not self._drain():
            return False
        self._reap(kill=False)
        self.done = True
        return True

    def expire(self, now: float) -> bool:
        """Past the deadline (started + TIMEOUT, monotonic): kill and reap the child, and the outcome is a
        "validation timed out" error. Returns `done`."""
        if not self.done and now >= self.deadline:
            self._stop("timed out")
        return self.done

    def cancel(self) -> None:
        """Kill and reap the child (the master is shutting down) and close the pipe. Idempotent."""
        if not self.done:
            self._stop("was cancelled")
        self._close()

    def outcome(self) -> LoadedSite:
        """Only once `done`: the LoadedSite, or ConfigError with the located diagnostics. A valid result is
        stored in the cache. Closes the pipe (unregister it from any selector first)."""
        if not self.done:
            raise RuntimeError("Validation.outcome() before the validation is done")
        self._close()
        if self._result is None:
            self._result = self._decide()
        loaded, error = self._result
        if error is not None:
            raise error
        assert loaded is not None
        return loaded

    def result(self, timeout: float = TIMEOUT) -> LoadedSite:
        """Wait (at most `timeout` seconds) for the outcome; for start-up and the command line."""
        import select

        deadline = min(self.deadline, time.monotonic() + timeout)
        while not self.on_readable():
            left = deadline - time.monotonic()
            if left <= 0:
                self._stop("timed out")
                break
            select.select([self._fd], [], [], left)
        return self.outcome()

    # ---- internals -----------------------------------------------------------------------------------------

    def _drain(self) -> bool:
        """Read everything available; True at end of file (the child closed the pipe: it exited)."""
        while True:
            try:
                chunk = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            self._chunks.append(chunk)

    def _stop(self, why: str) -> None:
        if self._drain():  # it finished just now after all: its payload decides
            self._reap(kill=False)
        else:
            self._stopped = why
            self._reap(kill=True)
        self.done = True

    def _reap(self, kill: bool) -> None:
        """Collect the child's exit status. `kill` only while its end of the pipe is open: then it has not
        exited, so nobody can have reaped it and its pid is still ours. Never blocks for long: if the master's
        `waitpid(-1)` got there first (ChildProcessError), or the child is slow to die, the payload decides."""
        if self._reaped:
            return
        self._reaped = True
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        give_up = time.monotonic() + _REAP_WAIT[kill]
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                self._status = status
                return
            if time.monotonic() >= give_up:
                return
            time.sleep(0.0005)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _decide(self) -> tuple[LoadedSite | None, ConfigError | None]:
        import pickle

        from forkserve.config.errors import ConfigError, Diagnostic

        def stopped(why: str) -> tuple[None, ConfigError]:
            return None, ConfigError([Diagnostic(self.path, None, None, "",
                                                 f"validation {why}; the site file was not applied")])

        if self._stopped:
            return stopped(self._stopped)
        payload = b"".join(self._chunks)
        self._chunks = []
        try:
            kind, value = pickle.loads(payload)
        except Exception:  # empty or cut short: the child died before it could finish its answer
            return stopped("stopped" if self._status is None else f"stopped ({_describe(self._status)})")
        if kind != "ok":
            return None, ConfigError(value)
        if self._cache_key is not None:
            from forkserve.config import cache

            cache.put(self._cache_key, value)
        return value, None


def validate(data: bytes, path: str) -> Validated | Validation:
    """A cached verdict of the models on this very file (`Validated`), or a child started to validate it."""
    from forkserve.config import cache
    from forkserve.config.paths import Env

    env = Env.from_os()
    key = cache.key(data, path, env)
    loaded = cache.get(key, env.environ) if key is not None else None
    return Validated(data, loaded) if loaded is not None else Validation(data, path, env, key)


def start_validation(site_path: str) -> Validated | Validation | None:
    """Read the site file and start validating it; None when it cannot be read (the master reports that)."""
    path = os.path.abspath(site_path)
    data = read_site(path)
    return None if data is None else validate(data, path)


def load_site(data: bytes, path: str, timeout: float = TIMEOUT) -> LoadedSite:
    """The site file's content -> LoadedSite, waiting for it (a cache hit, or the child). Raises ConfigError."""
    return validate(data, path).result(timeout)


def _load(data: bytes, path: str, env: Env) -> LoadedSite:
    """What the child computes (a module-level name, so that a test can make the child hang)."""
    from forkserve.config.load import load_text_sources
    from forkserve.spec import LoadedSite

    site, sources = load_text_sources(data, path, env)
    return LoadedSite.from_config(site, env.start_dir, sources)


def _child(data: bytes, path: str, env: Env, write_fd: int) -> None:  # pragma: no cover - runs in the child
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

        try:
            result: tuple[str, object] = ("ok", _load(data, path, env))
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


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
