"""A per-user cache of validated site files: the models' own result, kept so that a start need not repeat it.

Why: validating means importing pydantic and building the models, ~100-150 ms, in a child process (see
`config.validate`). Most starts and reloads see a file that was validated before, unchanged. Rather than a
second, hand-written copy of the rules (an earlier pydantic-free fast path restated them and had to be held
equal to the models by a differential test), this caches the models' verdict: the rules are written in one
place (`config.models`, `config.crosscheck`, `config.load`), and a hit returns exactly what they returned.

The key is a sha256 over everything the result depends on:
- the file's bytes, its path as given and made absolute (relative paths in it resolve against its directory;
  the default control socket is named after it);
- forkserve's own rules: (name, size, mtime_ns) of every .py file in `forkserve/config` and of `forkserve/spec.py`
  (an editable install keeps its version string while the code changes);
- the third-party code they run (pydantic, pydantic-core, PyYAML, tomli...): the stat of each package's
  `__init__.py` and the names of their `*.dist-info` directories (which carry the versions), found on sys.path
  WITHOUT importing them, since importing pydantic is the cost this cache exists to skip;
- the Python version and executable;
- every environment value the loader reads (`config.paths.Env`: XDG_RUNTIME_DIR, the uid, the start directory).

What a result read besides the file cannot be in a key computed before the file is parsed: which variables
`${VAR}` reads and which env_files an app names are known only after. So an entry records them itself
(`LoadedSite.sources`, `config.dependencies`: each variable's name and a digest of its value, or "unset"; each
env_file's path and a digest of its bytes), and `get` uses a hit only while all of them still match: a changed
variable or env_file is a miss, and the child validates again. Values from the environment never reach the
disk: an entry is stored with the env values that came from `${VAR}` or an env_file blanked (`_seal`), and a
hit puts them back (`_unseal`) from the environment and the env_files just read and checked, which is exactly
what the models would compute from them (the standard-library expander and dotenv parser are the ones they use).

Only valid results are stored (a pickled `LoadedSite`): errors are always recomputed by the models, so their
messages come from one place. A pickle runs code when loaded, so the store must be private: a directory of our
own uid, created 0700, entries refused unless they are regular files owned by us and not writable by group or
others; entries are written atomically (temporary file + rename) and their number is bounded. Any failure to
read or write (no HOME, a read-only file system, a corrupt or foreign entry) quietly means "no cache": the child
validates, as it would on a first start. `FORKSERVE_NO_CACHE=1` turns the cache off.

Runs in the master on the start-up critical path: standard library only, pickle and the spec only on a hit.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms on the start-up critical path
if TYPE_CHECKING:
    from collections.abc import Mapping

    from forkserve.config.paths import Env
    from forkserve.spec import LoadedSite

FORMAT = 2  # bump when what an entry holds changes shape
MAX_ENTRIES = 64  # a few sites, a few revisions each; the oldest go first
MAX_ENTRY_BYTES = 16 << 20  # a LoadedSite of even a huge site is far smaller: anything larger is not ours
# Third-party packages whose code decides a result: (import name, dist-info name prefix, lower case).
DEPENDENCIES = (("pydantic", "pydantic-"), ("pydantic_core", "pydantic_core-"), ("annotated_types", "annotated_types-"),
                ("typing_inspection", "typing_inspection-"), ("yaml", "pyyaml-"), ("tomli", "tomli-"))

_CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
_SPEC = os.path.join(os.path.dirname(_CONFIG_DIR), "spec.py")


def enabled() -> bool:
    return os.environ.get("FORKSERVE_NO_CACHE", "") in ("", "0")


def cache_dir() -> str | None:
    """`$XDG_CACHE_HOME/forkserve`, else `~/.cache/forkserve`; None without an absolute home."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "forkserve")


def key(data: bytes, path: str, env: Env) -> str | None:
    """The entry name for this file in this environment; None when the cache is off or a stamp cannot be made."""
    if not enabled():
        return None
    try:
        meta = (FORMAT, path, os.path.abspath(path), _code_stamp(), _dependency_stamp(), sys.version,
                sys.executable, env.key())
    except Exception:
        return None
    digest = hashlib.sha256(repr(meta).encode())
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def get(name: str, environ: Mapping[str, str] | None = None) -> LoadedSite | None:
    """The LoadedSite stored under `name`, or None (missing, unsafe, corrupt, or computed from variables or
    env_files that have changed since: all the same to the caller). `environ`: the variables `${VAR}` reads."""
    directory = cache_dir()
    dir_fd = _open_private_dir(directory) if directory is not None else None
    if dir_fd is None:
        return None
    try:
        blob = _read_entry(name, dir_fd)
        if blob is None:
            return None
        try:
            import pickle

            from forkserve.spec import LoadedSite

            loaded = pickle.loads(blob)
        except Exception:
            return None
        if not isinstance(loaded, LoadedSite):
            return None
        loaded = _unseal(loaded, environ or {})
        if loaded is None:
            return None
        try:
            os.utime(name, dir_fd=dir_fd, follow_symlinks=False)  # recently used: pruned last
        except OSError:
            pass
        return loaded
    finally:
        os.close(dir_fd)


def put(name: str, loaded: LoadedSite) -> None:
    """Store a valid result under `name`, atomically; any failure leaves the cache as it was."""
    directory = cache_dir()
    if directory is None:
        return
    try:
        import pickle

        blob = pickle.dumps(_seal(loaded), protocol=pickle.HIGHEST_PROTOCOL)
        _make_private_dir(directory)
    except Exception:
        return
    dir_fd = _open_private_dir(directory)
    if dir_fd is None:
        return
    tmp = f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        _prune(dir_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
    finally:
        os.close(dir_fd)


# --- values from the environment: never on disk ---------------------------------------------------------------

def _secret_keys(loaded: LoadedSite) -> dict[str, set[str]]:
    sources = loaded.sources
    keys: dict[str, set[str]] = {}
    if sources is None:
        return keys
    for app, key, _ in sources.secret_env:
        keys.setdefault(app, set()).add(key)
    for app, _, names in sources.file_env:
        keys.setdefault(app, set()).update(names)
    return keys


def _with_env(loaded: LoadedSite, env: dict[str, dict[str, str]]) -> LoadedSite:
    from dataclasses import replace

    apps = dict(loaded.desired.apps)
    for name, values in env.items():
        apps[name] = replace(apps[name], env=tuple(sorted({**dict(apps[name].env), **values}.items())))
    return replace(loaded, desired=replace(loaded.desired, apps=apps))


def _seal(loaded: LoadedSite) -> LoadedSite:
    """The site as stored: env values that came from the environment or an env_file blanked."""
    keys = _secret_keys(loaded)
    return _with_env(loaded, {app: dict.fromkeys(names, "") for app, names in keys.items()}) if keys else loaded


def _unseal(loaded: LoadedSite, environ: Mapping[str, str]) -> LoadedSite | None:
    """A stored site with its env values put back; None when a variable or env_file it read has changed."""
    from forkserve.config.dependencies import read_current_env_files, variables_current

    sources = loaded.sources
    if not sources:
        return loaded
    if not variables_current(sources, environ):
        return None
    files = read_current_env_files(sources)
    if files is None:
        return None
    from forkserve.config.expand import ExpandError, expand

    env: dict[str, dict[str, str]] = {}
    try:
        for app, path, names in sources.file_env:
            env.setdefault(app, {}).update({name: files[path][name] for name in names})
        for app, key, template in sources.secret_env:
            env.setdefault(app, {})[key] = expand(template, environ)
    except (KeyError, ExpandError):  # cannot happen while the digests match; a miss is always safe
        return None
    return _with_env(loaded, env)


# --- the stamps ---------------------------------------------------------------------------------------------------

def _stat_stamp(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


def _code_stamp() -> tuple[tuple[str, int, int], ...]:
    names = sorted(n for n in os.listdir(_CONFIG_DIR) if n.endswith(".py"))
    return (*(_stat_stamp(os.path.join(_CONFIG_DIR, n)) for n in names), _stat_stamp(_SPEC))


def _dependency_stamp() -> tuple[object, ...]:
    """For each dependency, where the first sys.path entry that has it holds it, and the stat of its
    `__init__.py`; then the dist-info names (with versions) in those directories. No import."""
    found: list[object] = []
    places: set[str] = set()
    for module, _ in DEPENDENCIES:
        for entry in sys.path:
            init = os.path.join(entry or ".", module, "__init__.py")
            try:
                found.append(_stat_stamp(init))
            except OSError:
                continue
            places.add(entry or ".")
            break
        else:
            found.append((module, None))
    prefixes = tuple(prefix for _, prefix in DEPENDENCIES)
    for place in sorted(places):
        found.append(tuple(sorted(n for n in os.listdir(place)
                                  if n.endswith(".dist-info") and n.lower().startswith(prefixes))))
    return tuple(found)


# --- the store -----------------------------------------------------------------------------------------------------

def _safe(st: os.stat_result) -> bool:
    """A regular file of ours that nobody else can write."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def _open_private_dir(directory: str) -> int | None:
    """A descriptor of the cache directory if it is ours and nobody else can write to it (entries are then
    opened relative to it, so the directory checked is the one read, even if the path is swapped meanwhile)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or st.st_uid != os.getuid() or st.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def _make_private_dir(directory: str) -> None:
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass


def _read_entry(name: str, dir_fd: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not _safe(os.fstat(fd)):
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks) or None
            size += len(chunk)
            if size > MAX_ENTRY_BYTES:
                return None
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def _prune(dir_fd: int) -> None:
    """Keep the MAX_ENTRIES most recently used entries (and no temporary file a crash left behind)."""
    entries = []
    with os.scandir(dir_fd) as it:
        for item in it:
            try:
                entries.append((item.stat(follow_symlinks=False).st_mtime_ns, item.name))
            except OSError:
                continue
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(reverse=True)
    for _, name in entries[MAX_ENTRIES:]:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
