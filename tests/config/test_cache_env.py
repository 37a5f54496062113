"""The cache of validated results once values come from the environment: an entry records the variables and
env_files it read, a hit is used only while they are unchanged, and no value from them is written to disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserve.config import cache
from forkserve.config.dependencies import current
from forkserve.config.paths import Env
from forkserve.config.validate import Validated, Validation, _load, load_site, validate


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FORKSERVE_NO_CACHE", raising=False)
    monkeypatch.setenv("DB_PASSWORD", "pw-secret-0815")
    monkeypatch.delenv("MODE", raising=False)
    return tmp_path / "xdg" / "forkserve"


@pytest.fixture
def site(tmp_path: Path) -> tuple[bytes, str]:
    (tmp_path / "app.env").write_text("export TOKEN='file-secret-4711'\nPLAIN=1\n")
    text = (b'[apps.web]\nmodule = "m:app"\nbinds = ["127.0.0.1:8000"]\nenv_file = "app.env"\n'
            b'env = { DB = "pg://u:${DB_PASSWORD}@db", MODE = "${MODE:-plain}", LITERAL = "kept" }\n')
    return text, str(tmp_path / "site.toml")


def _stored(cache_dir: Path) -> bytes:
    entries = list(cache_dir.iterdir())
    assert len(entries) == 1
    return entries[0].read_bytes()


def test_a_hit_needs_the_same_variables_and_env_files(site: tuple[bytes, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data, path = site
    first = load_site(data, path)  # the child validates; the result is stored
    hit = validate(data, path)
    assert isinstance(hit, Validated)
    assert hit.result() == first == _load(data, path, Env.from_os())  # secrets put back exactly
    assert dict(hit.result().desired.apps["web"].env)["TOKEN"] == "file-secret-4711"

    monkeypatch.setenv("UNRELATED", "x")
    assert isinstance(validate(data, path), Validated)  # a variable it never read costs nothing

    monkeypatch.setenv("DB_PASSWORD", "pw-secret-0816")
    miss = validate(data, path)
    assert isinstance(miss, Validation)
    assert dict(miss.result().desired.apps["web"].env)["DB"] == "pg://u:pw-secret-0816@db"

    monkeypatch.setenv("MODE", "fancy")  # unset before (its default was used): now set
    assert isinstance(validate(data, path), Validation)

    (tmp_path / "app.env").write_text("export TOKEN='file-secret-4712'\nPLAIN=1\n")
    miss = validate(data, path)
    assert isinstance(miss, Validation)
    assert dict(miss.result().desired.apps["web"].env)["TOKEN"] == "file-secret-4712"

    (tmp_path / "app.env").unlink()
    assert isinstance(validate(data, path), Validation)  # gone: the models say so, not the cache


def test_no_value_from_the_environment_reaches_the_disk(site: tuple[bytes, str], cache_dir: Path) -> None:
    data, path = site
    loaded = load_site(data, path)
    stored = _stored(cache_dir)
    for secret in (b"pw-secret-0815", b"file-secret-4711"):
        assert secret not in stored
    assert b"kept" in stored  # a value written in the file is stored as is
    assert loaded.sources is not None and current(loaded.sources, Env.from_os().environ)


def test_current_tells_the_master_whether_its_site_still_holds(site: tuple[bytes, str], tmp_path: Path) -> None:
    data, path = site
    loaded = load_site(data, path)
    environ = dict(Env.from_os().environ)
    assert current(loaded.sources, environ)
    assert not current(loaded.sources, {**environ, "DB_PASSWORD": "other"})
    assert not current(loaded.sources, {**environ, "MODE": "set"})
    (tmp_path / "app.env").write_text("TOKEN=changed\n")
    assert not current(loaded.sources, environ)
    assert current(None, {})


def test_a_site_that_reads_nothing_is_cached_as_before(cache_dir: Path) -> None:
    data = b'[apps.web]\nmodule = "m:app"\nbinds = ["127.0.0.1:8000"]\nenv = { A = "$$literal" }\n'
    load_site(data, "/srv/site.toml")
    assert isinstance(validate(data, "/srv/site.toml"), Validated)
    assert cache.key(data, "/srv/site.toml", Env.from_os()) is not None
