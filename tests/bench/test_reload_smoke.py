"""Smoke test of bench/reload.py: one `--quick` run so the script cannot rot. Figures are never asserted.

(The zero-failure claim is checked by the integration tests and reported in notes, not here: a loaded shared
machine must not make this test flaky.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "reload.py"


def _missing_tool() -> str | None:
    if shutil.which("wrk") is None:
        return "wrk is not installed"
    if not (Path(sys.executable).parent / "gunicorn").exists():
        return "gunicorn is not installed next to this python"
    return None


@pytest.mark.timeout(120)
def test_reload_bench_runs_once_and_writes_a_summary(tmp_path: Path) -> None:
    reason = _missing_tool()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "## Failed requests and latency under load" in summary
    assert "## forkserve: site-file edits" in summary
    assert "## gunicorn: signals to the master" in summary
    for edit in ("scale up", "roll slow (env)", "bind added", "app removed", "invalid edit", "cannot boot"):
        assert f"| {edit} |" in summary
    data = json.loads((out / "events.json").read_text())
    assert {(x["server"], x["app"]) for x in data["loads"]} == {
        (server, app) for server in ("forkserve", "gunicorn") for app in ("hello", "slow")}
    assert {e["server"] for e in data["events"]} == {"forkserve", "gunicorn"}
