"""Site files are validated in a child process; the caller gets plain values or located diagnostics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forkserve.config.errors import ConfigError
from forkserve.config.isolated import FAST_PATH_MAX_BYTES, Validation, Vouched, load_site, start_validation
from forkserve.spec import LoadedSite

GOOD = b'[server]\nlog_level = "debug"\n[apps.web]\nmodule = "m:app"\nbinds = ["127.0.0.1:8000"]\nworkers = 3\n'


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
    yaml = b"apps:\n  web:\n    module: m:app\n    binds: ['127.0.0.1:8000']\n"  # YAML: always the child
    with pytest.raises(ConfigError) as err:
        load_site(yaml, "/srv/site.yaml", timeout=0.0001)
    assert "validation timed out" in str(err.value)


def test_a_valid_toml_file_needs_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise AssertionError("forked a validating child for a file the fast path vouches for")

    monkeypatch.setattr(os, "fork", no_fork)
    assert load_site(GOOD, "/srv/site.toml").desired.apps["web"].workers == 3


def test_start_validation_vouches_in_process_or_forks_the_child(tmp_path: Path) -> None:
    good, bad, big = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "big.toml"
    good.write_bytes(GOOD)
    bad.write_bytes(GOOD.replace(b"workers = 3", b"workerz = 3"))
    big.write_bytes(GOOD + b"#" * FAST_PATH_MAX_BYTES)  # too large for the fast path: the child parses it
    assert isinstance(start_validation(str(good)), Vouched)
    started = [start_validation(str(p)) for p in (bad, big)]
    assert all(isinstance(v, Validation) for v in started)
    with pytest.raises(ConfigError, match="workerz"):
        started[0].result()  # type: ignore[union-attr]
    assert started[1].result() == start_validation(str(good)).result()  # type: ignore[union-attr]


def test_the_master_side_never_imports_pydantic_or_yaml() -> None:
    probe = ("import sys; import forkserve.master, forkserve.control.plane, forkserve.config.isolated; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core', 'yaml')]; "
             "sys.exit(f'imported: {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
