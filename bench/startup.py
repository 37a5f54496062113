#!/usr/bin/env python3
"""Launch to first HTTP 200, and nothing else: many starts of each server, interleaved, on one app.

bench/run.py measures the same thing once per (server, app, mode, round) as a side effect of its throughput runs;
this script repeats only the start, so a start-up change can be judged on 20+ starts in a minute. It reuses
bench/run.py's launch, polling and stop code, so the two always measure alike.

    .venv/bin/python bench/startup.py                                  # forkserve and gunicorn, sync and gevent
    .venv/bin/python bench/startup.py --starts 30 --servers forkserve-sync,gunicorn-sync
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py, next to this file

DEFAULT_SERVERS = "forkserve-sync,gunicorn-sync,forkserve-gevent,gunicorn-gevent"


def one_start(server: bench.Server, app: bench.App, workers: int, timeout: float) -> float | None:
    """Milliseconds from launch to the first 200 of one fresh start (None: it died or timed out)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = bench.free_port()
        command = bench.server_command(server, app, port, workers, Path(tmp))
        launched = time.monotonic()
        proc = bench.launch(command, Path(tmp) / "server.log")
        try:
            return bench.wait_first_200(proc, port, launched, timeout)
        finally:
            bench.stop(proc)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--starts", type=int, default=15, help="starts of each server (default 15)")
    p.add_argument("--servers", default=DEFAULT_SERVERS, help=f"comma list (default {DEFAULT_SERVERS})")
    p.add_argument("--app", default="hello", choices=sorted(bench.APPS), help="app to serve (default hello)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for a first 200")
    args = p.parse_args(argv)
    names = bench.pick(args.servers, dict(bench.SERVERS), "servers")
    servers = [bench.SERVERS[n] for n in names]
    missing = {s.name: why for s in servers if (why := bench.unavailable_reason(s))}
    for name, why in missing.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    servers = [s for s in servers if s.name not in missing]
    bench.compile_bytecode()
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    failed: dict[str, int] = dict.fromkeys(times, 0)
    for _ in range(args.starts):  # interleaved: a noisy moment hits every server alike
        for server in servers:
            ms = one_start(server, bench.APPS[args.app], args.workers, args.timeout)
            if ms is None:
                failed[server.name] += 1
            else:
                times[server.name].append(ms)
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
