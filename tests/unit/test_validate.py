"""Site files are validated in a child process, driven as a selector event; the caller gets plain values or
located diagnostics, or a cached earlier verdict of the models."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forkserve.config import validate as validate_module
from forkserve.config.errors import ConfigError
from forkserve.config.paths import Env
from forkserve.config.validate import TIMEOUT, Validated, Validation, load_site, start_validation, validate
from forkserve.spec import LoadedSite

GOOD = b'[server]\nlog_level = "debug"\n[apps.web]\nmodule = "m:app"\nbinds = ["127.0.0.1:8000"]\nworkers = 3\n'
YAML = b"apps:\n  web:\n    module: m:app\n    binds: ['127.0.0.1:8000']\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache directory (never the user's)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FORKSERVE_NO_CACHE", raising=False)
    return tmp_path / "cache" / "forkserve"


def _hang(data: bytes, path: str, env: Env) -> LoadedSite:  # replaces the child's loader: a validation that hangs
    time.sleep(60)
    raise AssertionError("not reached")


def _die(data: bytes, path: str, env: Env) -> LoadedSite:  # a child that dies without answering
    os._exit(3)


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def drive(validation: Validation) -> None:
    """What the master's loop does: wait for EVENT_READ, call on_readable, and expire on its timer."""
    with selectors.DefaultSelector() as selector:
        selector.register(validation, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select(timeout=0.25):
                assert key.fileobj is validation
                if validation.on_readable():
                    break
            if validation.done or validation.expire(time.monotonic()):
                break
        selector.unregister(validation)


def test_a_valid_file_comes_back_as_plain_values() -> None:
    loaded = load_site(GOOD, "/srv/site.toml")
    assert isinstance(loaded, LoadedSite)
    assert loaded.desired.apps["web"].workers == 3
    assert loaded.server.log_level == "debug"


def test_an_invalid_file_comes_back_as_located_diagnostics() -> None:
    with pytest.raises(ConfigError) as err:
        load_site(GOOD.replace(b"workers = 3", b"workerz = 3"), "/srv/site.toml")
    assert "/srv/site.toml:6:1: apps.web.workerz" in str(err.value)


def test_a_validator_that_runs_out_of_time_is_killed_and_reported() -> None:
    with pytest.raises(ConfigError) as err:
        load_site(YAML, "/srv/site.yaml", timeout=0.0001)
    assert "validation timed out" in str(err.value)


def test_a_selector_loop_drives_it_to_the_models_result() -> None:
    started = validate(GOOD, "/srv/site.toml")
    assert isinstance(started, Validation) and not started.done
    assert started.on_readable() is False or started.done  # never blocks, whatever the child has written yet
    drive(started)
    assert started.done and _gone(started.pid)
    assert started.outcome() == validate_module._load(GOOD, "/srv/site.toml", Env.from_os())  # what the child does
    assert started.outcome() == started.outcome()  # asking twice is fine
    assert started.fileno() == -1  # the pipe is closed once the outcome is read


def test_the_diagnostics_come_through_the_selector_loop_too() -> None:
    started = validate(GOOD.replace(b"workers = 3", b"workers = 0"), "/srv/site.toml")
    assert isinstance(started, Validation)
    drive(started)
    with pytest.raises(ConfigError, match=r"/srv/site.toml:6:1: apps.web.workers: expected a value at least 1"):
        started.outcome()


def test_the_outcome_is_not_there_before_it_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "_load", _hang)
    started = Validation(GOOD, "/srv/site.toml")
    try:
        with pytest.raises(RuntimeError):
            started.outcome()
    finally:
        started.cancel()


def test_expire_kills_a_child_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "_load", _hang)
    started = Validation(GOOD, "/srv/site.toml")
    assert started.deadline == pytest.approx(started.started + TIMEOUT)
    assert started.on_readable() is False
    assert started.expire(started.deadline - 1) is False and not _gone(started.pid)
    assert started.expire(started.deadline) is True
    assert started.done and _gone(started.pid)
    with pytest.raises(ConfigError, match="validation timed out; the site file was not applied"):
        started.outcome()


def test_cancel_kills_and_reaps_and_can_be_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "_load", _hang)
    started = Validation(GOOD, "/srv/site.toml")
    started.cancel()
    assert started.done and _gone(started.pid) and started.fileno() == -1
    started.cancel()
    with pytest.raises(ConfigError, match="validation was cancelled"):
        started.outcome()


def test_a_child_that_dies_without_answering_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "_load", _die)
    with pytest.raises(ConfigError, match=r"validation stopped \(exit code 3\)"):
        Validation(GOOD, "/srv/site.toml").result()


def test_the_payload_decides_when_someone_else_reaped_the_child() -> None:
    started = validate(GOOD, "/srv/site.toml")
    assert isinstance(started, Validation)
    os.waitpid(started.pid, 0)  # the master's waitpid(-1, WNOHANG) may collect it first
    drive(started)
    assert started.outcome().desired.apps["web"].workers == 3


def test_a_file_validated_before_needs_no_child(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    first = load_site(GOOD, "/srv/site.toml")
    assert len(os.listdir(private_cache)) == 1

    def no_fork() -> int:
        raise AssertionError("forked a validating child for a file validated before")

    monkeypatch.setattr(os, "fork", no_fork)
    again = validate(GOOD, "/srv/site.toml")
    assert isinstance(again, Validated) and again.data == GOOD
    assert again.result() == again.outcome() == first
    assert load_site(GOOD, "/srv/site.toml") == first


def test_invalid_results_are_never_cached(private_cache: Path) -> None:
    with pytest.raises(ConfigError):
        load_site(GOOD.replace(b"workers = 3", b"workerz = 3"), "/srv/site.toml")
    assert not private_cache.exists() or os.listdir(private_cache) == []


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    monkeypatch.setenv("FORKSERVE_NO_CACHE", "1")
    load_site(GOOD, "/srv/site.toml")
    started = validate(GOOD, "/srv/site.toml")
    assert isinstance(started, Validation)
    started.result()
    assert not private_cache.exists()


def test_start_validation_reads_and_starts(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_bytes(GOOD)
    bad.write_bytes(GOOD.replace(b"workers = 3", b"workerz = 3"))
    assert start_validation(str(tmp_path / "missing.toml")) is None
    assert start_validation(str(tmp_path)) is None  # a directory: not a site file
    first, invalid = start_validation(str(good)), start_validation(str(bad))
    assert isinstance(first, Validation) and isinstance(invalid, Validation)
    with pytest.raises(ConfigError, match="workerz"):
        invalid.result()
    loaded = first.result()
    again = start_validation(str(good))
    assert isinstance(again, Validated) and again.result() == loaded


def test_a_cache_hit_imports_neither_pydantic_nor_yaml(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_bytes(GOOD)
    load_site(GOOD, str(site))  # fills the cache (the fixture's directory, which the probe inherits)
    probe = ("import sys; from forkserve.config.validate import Validated, start_validation; "
             f"v = start_validation({str(site)!r}); assert isinstance(v, Validated), v; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core', 'yaml')]; "
             "sys.exit(f'imported: {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_master_side_never_imports_pydantic_or_yaml() -> None:
    probe = ("import sys; import forkserve.master, forkserve.control.plane, forkserve.config.validate; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core', 'yaml')]; "
             "sys.exit(f'imported: {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
