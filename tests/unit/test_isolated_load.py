"""Site files are validated in a child process; the caller gets plain values or located diagnostics."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forkserve.config.errors import ConfigError
from forkserve.config.isolated import load_site
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
    with pytest.raises(ConfigError) as err:
        load_site(GOOD, "/srv/site.toml", timeout=0.0001)
    assert "validation timed out" in str(err.value)


def test_the_master_side_never_imports_pydantic_or_yaml() -> None:
    probe = ("import sys; import forkserve.master, forkserve.control.plane, forkserve.config.isolated; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core', 'yaml')]; "
             "sys.exit(f'imported: {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
