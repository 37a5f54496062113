"""The package type-checks: `mypy` (configured in pyproject.toml's [tool.mypy]) reports nothing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_mypy_reports_no_errors_on_the_package(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the `test` extra)")
    # no paths on the command line: [tool.mypy] `files` says what to check, as for a developer running `mypy`;
    # a fresh cache directory keeps the run independent of (and from writing) any cache in the tree
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, f"mypy exited with {result.returncode}:\n{result.stdout}{result.stderr}"
