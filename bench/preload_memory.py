#!/usr/bin/env python3
"""Memory of one app's workers with and without `preload = true` (an app that imports pydantic and PyYAML).

    .venv/bin/python bench/preload_memory.py [--workers 4]

Starts forkserve twice on a generated site, sends a few requests to every worker, then sums RSS and PSS
(/proc/PID/smaps_rollup) over the app's processes: the workers, plus the preload process when there is one.
PSS is the honest total for forked processes that share pages. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rollup(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(out[::2], out[1::2], strict=True):
        children.setdefault(int(parent), []).append(int(child))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def measure(preload: bool, workers: int) -> tuple[int, int, int, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.toml"
        site.write_text(f'[server]\nwatch = false\nlog_level = "warning"\ncontrol_socket = "{tmp}/c.sock"\n'
                        f'[apps.big]\nmodule = "big_import_app:app"\nchdir = "{APPS}"\n'
                        f'binds = ["127.0.0.1:{port}"]\nworkers = {workers}\npreload = {str(preload).lower()}\n')
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "forkserve", "up", str(site)], start_new_session=True)
        try:
            first = wait_for_200(port, started)
            time.sleep(1.0)  # let every worker finish booting
            for _ in range(workers * 20):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            pids = descendants(proc.pid)
            totals = [rollup(p) for p in pids]
            return len(pids), sum(r for r, _ in totals), sum(p for _, p in totals), first
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def wait_for_200(port: int, started: float) -> float:
    deadline = started + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return time.monotonic() - started
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("forkserve did not answer within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    print("| preload | processes (workers + preload) | sum RSS kB | sum PSS kB | first 200 ms |")
    print("|---|---:|---:|---:|---:|")
    for preload in (False, True):
        count, rss, pss, first = measure(preload, args.workers)
        print(f"| {str(preload).lower()} | {count} | {rss:,} | {pss:,} | {first * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
