#!/usr/bin/env python3
"""Where each process's RSS goes: forkserve vs gunicorn (gevent workers by default) on the hello app.

    .venv/bin/python bench/worker_memory.py [--servers forkserve-gevent,gunicorn-gevent] [--rounds 3]

For each server (interleaved over rounds): start it with bench/run.py's command line, warm it up with wrk, then
read /proc/PID/smaps of the master and every worker. Prints per process RSS/PSS (and the anon/file split and
thread count from /proc/PID/status), then, for one worker of each server (the last round), a breakdown of RSS
by mapping: [heap], anonymous mappings (mmap'ed arenas, greenlet/thread stacks, Python's obmalloc arenas),
[stack], and file-backed mappings per file (each .so, the python binary, ...), with Private_Dirty (pages this
process wrote: its own) next to RSS. A last table lines the two workers' categories up side by side.

Reuses bench/run.py (server_command, launch, wait_first_200, sample_memory, stop): only the smaps parsing is new.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py, imported as a module

FIELDS = ("Rss", "Pss", "Private_Dirty", "Private_Clean", "Shared_Clean", "Shared_Dirty")
HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


@dataclass
class Region:
    """Summed smaps figures (kB) of every mapping that falls in one category."""

    mappings: int = 0
    size: int = 0
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))


@dataclass
class Process:
    pid: int
    role: str
    rss: int
    pss: int
    status: dict[str, str]
    regions: dict[str, Region]


def category(path: str) -> str:
    """Group a mapping: special names as they are, anonymous as [anon], files by basename."""
    if not path:
        return "[anon]"
    if path.startswith("["):
        return "[stack:thread]" if path.startswith("[stack:") else path
    return Path(path.split(" (deleted)")[0]).name or path


def read_smaps(pid: int) -> dict[str, Region]:
    regions: dict[str, Region] = defaultdict(Region)
    current: Region | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if HEADER.match(line):
            parts = line.split(None, 5)
            current = regions[category(parts[5].strip() if len(parts) > 5 else "")]
            current.mappings += 1
            continue
        if current is None:
            continue
        key, _, rest = line.partition(":")
        if key == "Size":
            current.size += int(rest.split()[0])
        elif key in current.values:
            current.values[key] += int(rest.split()[0])
    return dict(regions)


def read_status(pid: int) -> dict[str, str]:
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads")
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = value.strip().replace(" kB", "")
    return out


def snapshot(pid: int, role: str) -> Process | None:
    try:
        rss_pss = bench.rss_pss(pid)
        regions = read_smaps(pid)
        status = read_status(pid)
    except OSError:
        return None
    if rss_pss is None:
        return None
    return Process(pid, role, rss_pss[0], rss_pss[1], status, regions)


def measure(server: bench.Server, app: bench.App, workers: int, warmup: int, settle: float) -> list[Process]:
    """Start the server, warm it up, snapshot its processes, stop it (by pid and process group)."""
    with tempfile.TemporaryDirectory(prefix="forkserve-mem-") as tmpdir:
        tmp = Path(tmpdir)
        port = bench.free_port()
        launched = time.monotonic()
        proc = bench.launch(bench.server_command(server, app, port, workers, tmp), tmp / "server.log")
        try:
            if bench.wait_first_200(proc, port, launched, 15.0) is None:
                raise SystemExit(f"{server.name} did not start:\n{bench.tail(tmp / 'server.log')}")
            # every worker must have booted before the warm-up, or a late one would be measured cold
            deadline = time.monotonic() + 10.0
            while len(bench.descendants(proc.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.05)
            bench.run_wrk(bench.wrk_command(app, "keepalive", port, 50, warmup), warmup, app.timeout_s)
            time.sleep(settle)  # let a gevent worker's idle callbacks run before sampling
            found = [snapshot(proc.pid, "master")]
            found += [snapshot(pid, "worker") for pid in bench.descendants(proc.pid)]
            return [p for p in found if p is not None]
        finally:
            bench.stop(proc)


def print_processes(results: dict[str, list[list[Process]]]) -> None:
    print("## Per process (kB; median over rounds; workers: median over every worker of every round)\n")
    print("| server | role | RSS | PSS | RssAnon | RssFile | RssShmem | threads | n |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rounds in results.items():
        for role in ("master", "worker"):
            procs = [p for snap in rounds for p in snap if p.role == role]
            if not procs:
                continue

            def med(get: object, procs: list[Process] = procs) -> str:
                return f"{statistics.median(get(p) for p in procs):,.0f}"  # type: ignore[operator]

            print(f"| {name} | {role} | {med(lambda p: p.rss)} | {med(lambda p: p.pss)} "
                  f"| {med(lambda p: int(p.status.get('RssAnon', 0)))} "
                  f"| {med(lambda p: int(p.status.get('RssFile', 0)))} "
                  f"| {med(lambda p: int(p.status.get('RssShmem', 0)))} "
                  f"| {med(lambda p: int(p.status.get('Threads', 0)))} | {len(procs)} |")
    print()


def print_breakdown(name: str, proc: Process, top: int) -> None:
    print(f"## {name}: one worker (pid {proc.pid}), RSS by mapping (kB, largest first)\n")
    print("| mapping | n | size | RSS | PSS | Private_Dirty | Private_Clean | Shared_Clean | Shared_Dirty |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = sorted(proc.regions.items(), key=lambda kv: -kv[1].values["Rss"])
    for key, reg in rows[:top]:
        v = reg.values
        print(f"| {key} | {reg.mappings} | {reg.size:,} | {v['Rss']:,} | {v['Pss']:,} | {v['Private_Dirty']:,} "
              f"| {v['Private_Clean']:,} | {v['Shared_Clean']:,} | {v['Shared_Dirty']:,} |")
    rest = rows[top:]
    if rest:
        print(f"| ({len(rest)} more) | | | {sum(r.values['Rss'] for _, r in rest):,} "
              f"| {sum(r.values['Pss'] for _, r in rest):,} | | | | |")
    print()


def print_comparison(workers: dict[str, Process]) -> None:
    """RSS and Private_Dirty of each category, side by side, sorted by the largest difference."""
    names = list(workers)
    keys = sorted({k for p in workers.values() for k in p.regions})

    def get(name: str, key: str, what: str) -> int:
        reg = workers[name].regions.get(key)
        return reg.values[what] if reg else 0

    diff = {k: get(names[0], k, "Rss") - get(names[-1], k, "Rss") for k in keys}
    print(f"## Worker vs worker: RSS (and Private_Dirty) by mapping, kB, {names[0]} minus {names[-1]}\n")
    print("| mapping | " + " | ".join(f"{n} RSS (dirty)" for n in names) + " | RSS difference |")
    print("|---|" + "---:|" * (len(names) + 1))
    for key in sorted(keys, key=lambda k: -abs(diff[k])):
        if not any(get(n, key, "Rss") for n in names):
            continue
        cells = " | ".join(f"{get(n, key, 'Rss'):,} ({get(n, key, 'Private_Dirty'):,})" for n in names)
        print(f"| {key} | {cells} | {diff[key]:+,} |")
    total = " | ".join(f"{workers[n].rss:,}" for n in names)
    print(f"| **total** | {total} | {workers[names[0]].rss - workers[names[-1]].rss:+,} |")
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="forkserve-gevent,gunicorn-gevent", help="comma list (bench/run.py names)")
    p.add_argument("--app", default="hello", choices=sorted(bench.APPS))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk -c50 keep-alive before sampling")
    p.add_argument("--settle", type=float, default=0.5, help="seconds between the warm-up and the sample")
    p.add_argument("--top", type=int, default=25, help="rows of each worker's breakdown")
    args = p.parse_args(argv)
    servers = [bench.SERVERS[n] for n in bench.pick(args.servers, dict(bench.SERVERS), "servers")]
    app = bench.APPS[args.app]
    results: dict[str, list[list[Process]]] = {s.name: [] for s in servers}
    for rnd in range(args.rounds):
        for server in servers:
            results[server.name].append(measure(server, app, args.workers, args.warmup, args.settle))
            print(f"[round {rnd + 1}] {server.name} sampled", file=sys.stderr, flush=True)
    print(f"# Memory after {args.warmup} s of wrk -c50 keep-alive, app `{app.name}`, {args.workers} workers, "
          f"{args.rounds} round(s)\n")
    print_processes(results)
    last_workers: dict[str, Process] = {}
    for name, rounds in results.items():
        workers = sorted((p for p in rounds[-1] if p.role == "worker"), key=lambda p: p.rss)
        if workers:
            last_workers[name] = workers[len(workers) // 2]
            print_breakdown(name, last_workers[name], args.top)
    if len(last_workers) >= 2:
        print_comparison(last_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
