#!/usr/bin/env python3
"""Launch to first HTTP 200, and nothing else: many starts of each server, interleaved, on one app.

bench/run.py measures the same thing once per (server, app, mode, round) as a side effect of its throughput runs;
this script repeats only the start, so a start-up change can be judged on 20+ starts in a minute. It reuses
bench/run.py's launch, polling and stop code, so the two always measure alike.

    .venv/bin/python bench/startup.py                                  # forkserve and gunicorn, sync and gevent
    .venv/bin/python bench/startup.py --starts 30 --servers forkserve-sync,gunicorn-sync --cache warm

forkserve keeps a per-user cache of validated site files (`forkserve/config/cache.py`), so its start-up has two
cases, measured as two rows: **warm**, a site file validated before (the same file at the same path: a restart,
a reboot, a rollback), and **cold**, a file never seen (the site file is validated by the models in a child
process, ~100 ms more). A warm start reuses one directory and port for every start of that row; a cold start
gets a fresh directory, port and cache directory each time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py, next to this file

DEFAULT_SERVERS = "forkserve-sync,gunicorn-sync,forkserve-gevent,gunicorn-gevent"


@dataclass
class Row:
    server: bench.Server
    cache: str  # "warm" | "cold" | "" (not forkserve)
    directory: Path | None = None  # warm: one site directory and port for every start
    port: int = 0

    @property
    def name(self) -> str:
        return f"{self.server.name} ({self.cache} cache)" if self.cache else self.server.name


def one_start(row: Row, app: bench.App, workers: int, timeout: float) -> float | None:
    """Milliseconds from launch to the first 200 of one start (None: it died or timed out)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory, port = (row.directory, row.port) if row.directory else (Path(tmp), bench.free_port())
        command = bench.server_command(row.server, app, port, workers, directory)
        saved = os.environ.get("XDG_CACHE_HOME")
        if row.cache == "cold":
            os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # nothing validated before
        launched = time.monotonic()
        proc = bench.launch(command, Path(tmp) / "server.log")
        _restore("XDG_CACHE_HOME", saved)
        try:
            return bench.wait_first_200(proc, port, launched, timeout)
        finally:
            bench.stop(proc)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def rows_for(servers: list[bench.Server], cache: str, keep: Path) -> list[Row]:
    rows = []
    for server in servers:
        if not server.name.startswith("forkserve"):
            rows.append(Row(server, ""))
            continue
        if cache in ("warm", "both"):
            directory = keep / server.name
            directory.mkdir()
            rows.append(Row(server, "warm", directory, bench.free_port()))
        if cache in ("cold", "both"):
            rows.append(Row(server, "cold"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--starts", type=int, default=15, help="starts of each server (default 15)")
    p.add_argument("--servers", default=DEFAULT_SERVERS, help=f"comma list (default {DEFAULT_SERVERS})")
    p.add_argument("--app", default="hello", choices=sorted(bench.APPS), help="app to serve (default hello)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for a first 200")
    p.add_argument("--cache", choices=("warm", "cold", "both"), default="both",
                   help="forkserve rows: a site file validated before (warm), never seen (cold), or both")
    args = p.parse_args(argv)
    names = bench.pick(args.servers, dict(bench.SERVERS), "servers")
    servers = [bench.SERVERS[n] for n in names]
    missing = {s.name: why for s in servers if (why := bench.unavailable_reason(s))}
    for name, why in missing.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    servers = [s for s in servers if s.name not in missing]
    bench.compile_bytecode()
    with tempfile.TemporaryDirectory() as keep:
        rows = rows_for(servers, args.cache, Path(keep))
        for row in rows:
            if row.cache == "warm":  # its first start validates and fills the cache; not counted
                one_start(row, bench.APPS[args.app], args.workers, args.timeout)
        times: dict[str, list[float]] = {row.name: [] for row in rows}
        failed: dict[str, int] = dict.fromkeys(times, 0)
        for _ in range(args.starts):  # interleaved: a noisy moment hits every server alike
            for row in rows:
                ms = one_start(row, bench.APPS[args.app], args.workers, args.timeout)
                if ms is None:
                    failed[row.name] += 1
                else:
                    times[row.name].append(ms)
    print(f"Launch to first HTTP 200, app `{args.app}`, {args.workers} workers, {args.starts} interleaved starts\n")
    print("| server | median ms | min ms | max ms | failed starts |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        if values:
            print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} "
                  f"| {failed[name]} |")
        else:
            print(f"| {name} | — | — | — | {failed[name]} |")
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
