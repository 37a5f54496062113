"""The cache of validated results: a hit is exactly the models' result; anything it depends on changes the key;
an entry that is corrupt, foreign or writable by others is ignored; a cache that cannot be used is no cache."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from forkserve.config import cache
from forkserve.config.load import load_text_sources
from forkserve.config.paths import Env
from forkserve.config.validate import Validated, Validation, load_site, validate
from forkserve.spec import LoadedSite

GOOD = b'[apps.web]\nmodule = "m:app"\nbinds = ["127.0.0.1:8000", "unix:web.sock"]\nworkers = 3\n'
PATH = "/srv/site/site.toml"
ENV = Env("/run/user/1000", 1000)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FORKSERVE_NO_CACHE", raising=False)
    return tmp_path / "xdg" / "forkserve"


def models(data: bytes = GOOD, path: str = PATH) -> LoadedSite:
    """What the validating child computes (the start directory and the sources included)."""
    env = Env.from_os()
    site, sources = load_text_sources(data, path, env)
    return LoadedSite.from_config(site, env.start_dir, sources)


def filled(data: bytes = GOOD, path: str = PATH) -> Path:
    """Validate once (the child; the result is stored) and return the entry's path."""
    load_site(data, path)
    key = cache.key(data, path, Env.from_os())
    assert key is not None
    entry = Path(cache.cache_dir() or "") / key
    assert entry.is_file()
    return entry


def test_a_hit_is_exactly_what_the_models_return(cache_dir: Path) -> None:
    entry = filled()
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert not entry.stat().st_mode & 0o077
    hit = validate(GOOD, PATH)
    assert isinstance(hit, Validated)
    assert hit.result() == models()
    assert cache.get(entry.name) == models()


def test_the_key_changes_with_everything_the_result_depends_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = cache.key(GOOD, PATH, ENV)
    assert base is not None and base == cache.key(GOOD, PATH, Env("/run/user/1000", 1000))
    others = {
        "bytes": cache.key(GOOD + b"\n", PATH, ENV),
        "path": cache.key(GOOD, "/srv/other/site.toml", ENV),
        "relative path": cache.key(GOOD, "site.toml", ENV),
        "runtime dir": cache.key(GOOD, PATH, Env("/run/user/1001", 1000)),
        "no runtime dir": cache.key(GOOD, PATH, Env(None, 1000)),
        "uid": cache.key(GOOD, PATH, Env("/run/user/1000", 1001)),
    }
    # forkserve's own code: an edited spec.py (an editable install keeps its version string)
    spec = tmp_path / "spec.py"
    spec.write_text("x = 1\n")
    monkeypatch.setattr(cache, "_SPEC", str(spec))
    before = cache.key(GOOD, PATH, ENV)
    os.utime(spec, ns=(0, 12345))
    others["code"] = cache.key(GOOD, PATH, ENV)
    assert before != others["code"]
    # another pydantic first on sys.path
    fake = tmp_path / "site" / "pydantic"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (tmp_path / "site" / "pydantic-9.9.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    others["pydantic"] = cache.key(GOOD, PATH, ENV)
    monkeypatch.setattr(cache.sys, "version", sys.version + " (another build)")
    others["python"] = cache.key(GOOD, PATH, ENV)
    assert len({base, before, *others.values()}) == len(others) + 2, others


def test_the_environment_reaches_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "a"))
    first = validate(GOOD, PATH)
    assert isinstance(first, Validation)
    first.result()
    assert isinstance(validate(GOOD, PATH), Validated)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "b"))
    other = validate(GOOD, PATH)
    assert isinstance(other, Validation)
    other.cancel()


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x05garbage", b"\x80\x04K\x01."])  # last: an int
def test_a_corrupt_entry_is_ignored_and_replaced(content: bytes) -> None:
    entry = filled()
    entry.write_bytes(content)
    assert cache.get(entry.name) is None
    again = validate(GOOD, PATH)
    assert isinstance(again, Validation)
    assert again.result() == models()
    assert cache.get(entry.name) == models()  # the valid outcome was written again


def test_an_entry_writable_by_others_is_ignored() -> None:
    entry = filled()
    for mode in (0o620, 0o602):
        entry.chmod(mode)
        assert cache.get(entry.name) is None
        assert isinstance(validate(GOOD, PATH), Validation)
    entry.chmod(0o600)
    assert cache.get(entry.name) == models()


def test_an_entry_or_directory_of_another_user_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = filled()
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)  # as seen by someone else: not theirs
    assert cache.get(entry.name) is None


def test_a_directory_writable_by_others_is_not_read(cache_dir: Path) -> None:
    entry = filled()
    cache_dir.chmod(0o777)
    try:
        assert cache.get(entry.name) is None
    finally:
        cache_dir.chmod(0o700)
    assert cache.get(entry.name) == models()


def test_a_symlinked_entry_is_not_followed(cache_dir: Path) -> None:
    entry = filled()
    target = cache_dir.parent / "elsewhere"
    entry.rename(target)
    entry.symlink_to(target)
    assert cache.get(entry.name) is None


def test_an_unusable_cache_still_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for xdg, home in ((str(blocker / "cache"), None), ("", None), ("relative", "relative-home")):
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        if home is None:
            monkeypatch.delenv("HOME", raising=False)
        else:
            monkeypatch.setenv("HOME", home)
        assert load_site(GOOD, PATH) == models()
        assert isinstance(validate(GOOD, PATH), Validation)  # nothing was stored, nothing breaks
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_site(GOOD, PATH)  # ~/.cache/forkserve when XDG_CACHE_HOME says nothing usable
    assert len(os.listdir(tmp_path / "home" / ".cache" / "forkserve")) == 1


def test_the_number_of_entries_is_bounded(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    loaded = models()
    for n in range(6):
        cache.put(f"{n:064x}", loaded)
        os.utime(cache_dir / f"{n:064x}", ns=(n * 10**9, n * 10**9))
    names = sorted(os.listdir(cache_dir))
    assert len(names) == 3 and names[-1] == f"{5:064x}"
    assert all(cache.get(name) == loaded for name in names)


def test_turned_off_there_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORKSERVE_NO_CACHE", "1")
    assert cache.key(GOOD, PATH, ENV) is None
    monkeypatch.setenv("FORKSERVE_NO_CACHE", "0")
    assert cache.key(GOOD, PATH, ENV) is not None
