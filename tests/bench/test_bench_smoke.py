"""Smoke test of bench/run.py: one tiny run so the script cannot rot. Figures are never asserted."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "run.py"
SERVERS = ("gunicorn-sync", "forkserve-sync")


def _missing_tool() -> str | None:
    if shutil.which("wrk") is None:
        return "wrk is not installed"
    if importlib.util.find_spec("gunicorn") is None or not (Path(sys.executable).parent / "gunicorn").exists():
        return "gunicorn is not installed next to this python"
    return None


@pytest.mark.timeout(120)
def test_bench_runs_once_and_writes_a_table(tmp_path: Path) -> None:
    reason = _missing_tool()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "1", "--warmup", "0", "--rounds", "1", "--apps", "hello",
         "--modes", "keepalive", "--servers", ",".join(SERVERS), "--start-timeout", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=100, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "### hello, keep-alive" in summary
    assert "| server | req/s median |" in summary
    runs = json.loads((out / "runs.json").read_text())
    assert {r["server"] for r in runs} == set(SERVERS)
    started = [r for r in runs if r["started"]]
    assert any(r["server"] == "gunicorn-sync" for r in started), done.stderr[-2000:]
    for run in started:
        wrk = run["wrk"]
        assert wrk is not None, run["error"]
        assert wrk["rps"] > 0 and wrk["requests"] > 0
        assert wrk["p50_ms"] > 0 and wrk["p99_ms"] > 0
        assert run["startup_ms"] > 0
        assert run["memory"]["master"][0] > 0
        assert f"| {run['server']} |" in summary
    for run in runs:
        if not run["started"]:
            assert "failed to start" in run["error"]


@pytest.mark.timeout(120)
def test_startup_script_runs_once() -> None:
    reason = _missing_tool()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "startup.py"), "--starts", "1", "--servers", ",".join(SERVERS)],
        capture_output=True, text=True, timeout=100, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| forkserve-sync (warm cache) |" in done.stdout and "| forkserve-sync (cold cache) |" in done.stdout
    assert "| gunicorn-sync |" in done.stdout
