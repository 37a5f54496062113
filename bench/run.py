#!/usr/bin/env python3
"""Side-by-side benchmark of forkserve against gunicorn (and granian when installed), driven by wrk.

Servers are interleaved in rounds (A B C, A B C, ...). Every run starts the server afresh on a new free port, in
its own process group, measures the time to its first HTTP 200, runs an unrecorded wrk warm-up, samples memory
(RSS/PSS of the master and each worker), runs the measured wrk, then stops the server by pid and process group.
The ratio to the baseline (gunicorn-gevent) is the median of the per-round ratios. See bench/README.md.

Standard library only (plus wrk); run it with the project's venv python so gunicorn is found:

    .venv/bin/python bench/run.py --rounds 3 --duration 10
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS_DIR = BENCH / "apps"
POST_LUA = BENCH / "post.lua"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
BASELINE = "gunicorn-gevent"
STOP_GRACE_S = 10.0
POLL_S = 0.005


# --------------------------------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class App:
    name: str
    module: str
    connections: int | None = None  # fixed connection count (otherwise --connections)
    timeout_s: int = 5
    lua: Path | None = None


@dataclass(frozen=True)
class Server:
    name: str
    kind: str  # "forkserve", "gunicorn" or "granian"
    worker_class: str = ""


APPS: dict[str, App] = {
    "hello": App("hello", "hello:app"),
    "json": App("json", "json_app:app"),
    "sleep": App("sleep", "sleep_app:app", connections=200, timeout_s=10),
    "post64k": App("post64k", "post_app:app", lua=POST_LUA),
}
MODES = ("keepalive", "close")
SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("forkserve-sync", "forkserve", "sync"),
        Server("forkserve-gevent", "forkserve", "gevent"),
        Server("gunicorn-sync", "gunicorn", "sync"),
        Server("gunicorn-gthread", "gunicorn", "gthread"),
        Server("gunicorn-gevent", "gunicorn", "gevent"),
        Server("granian", "granian"),
    )
}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    connect: int
    read: int
    write: int
    timeout: int

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass
class Memory:
    """Kilobytes from /proc/PID/smaps_rollup: (rss, pss) of the master and of each descendant process."""

    master: tuple[int, int]
    workers: list[tuple[int, int]] = field(default_factory=list)

    @property
    def total_rss(self) -> int:
        return self.master[0] + sum(w[0] for w in self.workers)

    @property
    def total_pss(self) -> int:
        return self.master[1] + sum(w[1] for w in self.workers)


@dataclass
class Run:
    round: int
    app: str
    mode: str
    server: str
    started: bool = False
    error: str = ""
    startup_ms: float | None = None
    wrk: WrkResult | None = None
    memory: Memory | None = None


@dataclass
class Options:
    rounds: int
    duration: int
    warmup: int
    workers: int
    connections: int
    start_timeout: float
    apps: list[App]
    modes: list[str]
    servers: list[Server]
    out: Path
    png: bool


# ------------------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def unavailable_reason(server: Server) -> str | None:
    """Why a server cannot run here (None when it can)."""
    if server.kind == "forkserve":
        return None
    exe = server.kind
    if not (VENV_BIN / exe).exists() and shutil.which(exe) is None:
        return f"{exe} is not installed"
    return None


def executable(name: str) -> str:
    local = VENV_BIN / name
    return str(local) if local.exists() else name


def forkserve_site(server: Server, app: App, port: int, workers: int, tmp: Path) -> str:
    lines = [
        "[server]",
        "watch = false",
        'log_level = "warning"',
        f'control_socket = "{tmp / "control.sock"}"',
        "[apps.bench]",
        f'module = "{app.module}"',
        f'binds = ["{HOST}:{port}"]',
        f"workers = {workers}",
        f'worker_class = "{server.worker_class}"',
        f'chdir = "{APPS_DIR}"',
    ]
    if server.worker_class == "gevent":
        lines.append("worker_connections = 1000")  # an error on sync workers
    return "\n".join(lines) + "\n"


def server_command(server: Server, app: App, port: int, workers: int, tmp: Path) -> list[str]:
    if server.kind == "forkserve":
        site = tmp / "site.toml"
        site.write_text(forkserve_site(server, app, port, workers, tmp))
        return [executable("forkserve"), "up", str(site)]  # the console script, as gunicorn is run
    if server.kind == "gunicorn":
        cmd = [executable("gunicorn"), "--chdir", str(APPS_DIR), "-b", f"{HOST}:{port}", "-w", str(workers),
               "--log-level", "warning", "-k", server.worker_class]
        if server.worker_class == "gthread":
            cmd += ["--threads", "4"]
        if server.worker_class == "gevent":
            cmd += ["--worker-connections", "1000"]
        return [*cmd, app.module]
    return [executable("granian"), "--interface", "wsgi", "--workers", str(workers), "--host", HOST,
            "--port", str(port), "--log-level", "warning", "--working-dir", str(APPS_DIR), app.module]


def launch(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def http_ok(port: int, timeout: float) -> bool:
    """One raw `GET /` on a new connection: True when the status line says 200."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = b""
            while len(head) < 12:
                chunk = s.recv(64)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def wait_first_200(proc: subprocess.Popen[bytes], port: int, launched: float, timeout: float) -> float | None:
    """Milliseconds from launch to the first 200, or None if the server died or timed out."""
    deadline = launched + timeout
    while (now := time.monotonic()) < deadline:
        if proc.poll() is not None:
            return None
        if http_ok(port, min(1.0, deadline - now)):
            return (time.monotonic() - launched) * 1000.0
        time.sleep(POLL_S)
    return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM to the master, KILL to its whole process group after the grace period (and for any orphan)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(STOP_GRACE_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the pgid is the master's pid
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------------------------------- memory


def parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces and parentheses
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    children = parent_map()
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def rss_pss(pid: int) -> tuple[int, int] | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.MULTILINE))
    return int(values.get("Rss", 0)), int(values.get("Pss", 0))


def sample_memory(master: int) -> Memory | None:
    top = rss_pss(master)
    if top is None:
        return None
    workers = [m for m in (rss_pss(pid) for pid in descendants(master)) if m is not None]
    return Memory(top, workers)


# ---------------------------------------------------------------------------------------------------------- wrk

TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def wrk_command(app: App, mode: str, port: int, connections: int, duration: int) -> list[str]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", f"{app.timeout_s}s", "--latency"]
    if mode == "close":
        cmd += ["-H", "Connection: close"]
    if app.lua is not None:
        cmd += ["-s", str(app.lua)]
    return [*cmd, f"http://{HOST}:{port}/"]


def run_wrk(cmd: list[str], duration: int, timeout_s: int) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 30, check=False)
    return done.stdout + done.stderr


def to_ms(value: str, unit: str) -> float:
    return float(value) * TIME_UNITS_MS[unit]


def _percentile(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if m is None:
        raise ValueError(f"no {pct}% line in wrk output")
    return to_ms(m.group(1), m.group(2))


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output; raises ValueError when it is not a complete report."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    requests = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if rps is None or requests is None:
        raise ValueError("no Requests/sec line in wrk output")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    connect, read, write, timeout = (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)), p50_ms=_percentile(text, "50"), p99_ms=_percentile(text, "99"),
        requests=int(requests.group(1)), non2xx=int(non2xx.group(1)) if non2xx else 0,
        connect=connect, read=read, write=write, timeout=timeout,
    )


# -------------------------------------------------------------------------------------------------------- a run


def connections_for(app: App, opts: Options) -> int:
    return app.connections if app.connections is not None else opts.connections


def measure(run: Run, app: App, port: int, master: int, opts: Options) -> None:
    """Warm-up (not recorded), memory sample, measured wrk run; fills run.memory and run.wrk or run.error."""
    conns = connections_for(app, opts)
    if opts.warmup > 0:
        run_wrk(wrk_command(app, run.mode, port, conns, opts.warmup), opts.warmup, app.timeout_s)
    run.memory = sample_memory(master)
    cmd = wrk_command(app, run.mode, port, conns, opts.duration)
    output = run_wrk(cmd, opts.duration, app.timeout_s)
    raw = opts.out / "raw" / f"{run.app}-{run.mode}-{run.server}-r{run.round}.txt"
    raw.write_text(" ".join(cmd) + "\n" + output)
    try:
        run.wrk = parse_wrk(output)
    except ValueError as exc:
        run.error = f"{exc}: {output.strip()[-300:]}"


def bench_one(server: Server, app: App, run: Run, opts: Options) -> None:
    with tempfile.TemporaryDirectory(prefix="forkserve-bench-") as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        log_path = opts.out / "logs" / f"{run.app}-{run.mode}-{run.server}-r{run.round}.log"
        launched = time.monotonic()
        proc = launch(server_command(server, app, port, opts.workers, tmp), log_path)
        try:
            run.startup_ms = wait_first_200(proc, port, launched, opts.start_timeout)
            if run.startup_ms is None:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "no 200 within timeout"
                run.error = f"failed to start ({state}):\n{tail(log_path)}"
                return
            run.started = True
            measure(run, app, port, proc.pid, opts)
            if proc.poll() is not None:
                run.error = f"server exited during the run ({proc.returncode})"
        finally:
            stop(proc)


def describe(run: Run) -> str:
    if run.wrk is None:
        return run.error.splitlines()[0] if run.error else "no result"
    w = run.wrk
    return (f"{w.rps:,.0f} req/s  p50 {w.p50_ms:.2f} ms  p99 {w.p99_ms:.2f} ms  non-2xx {w.non2xx}  "
            f"socket errors {w.socket_errors}")


def run_all(opts: Options) -> list[Run]:
    runs: list[Run] = []
    failed: dict[tuple[str, str], str] = {}  # (server, app) that failed to start: not retried
    for rnd in range(1, opts.rounds + 1):
        for app in opts.apps:
            for mode in opts.modes:
                for server in opts.servers:
                    run = Run(rnd, app.name, mode, server.name)
                    key = (server.name, app.name)
                    if key in failed:
                        run.error = failed[key]
                    else:
                        bench_one(server, app, run, opts)
                        if not run.started:
                            failed[key] = run.error
                    print(f"[round {rnd}] {app.name}/{mode} {server.name}: {describe(run)}", file=sys.stderr,
                          flush=True)
                    runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------------------ reports


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def median_or_none(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


def select(runs: Sequence[Run], **where: str) -> list[Run]:
    return [r for r in runs if all(getattr(r, k) == v for k, v in where.items())]


def round_ratios(runs: Sequence[Run], app: str, mode: str, server: str, baseline: str = BASELINE) -> list[float]:
    base = {r.round: r.wrk.rps for r in select(runs, app=app, mode=mode, server=baseline) if r.wrk and r.wrk.rps}
    return [r.wrk.rps / base[r.round] for r in select(runs, app=app, mode=mode, server=server)
            if r.wrk is not None and r.round in base]


def failure_note(rows: Sequence[Run]) -> str:
    error = next((r.error for r in rows if r.error), "no result")
    return error.splitlines()[0].rstrip(":").replace("|", "/")


def scenario_row(runs: Sequence[Run], app: App, mode: str, server: str, conns: int, aim: str | None) -> str:
    rows = select(runs, app=app.name, mode=mode, server=server)
    done = [r.wrk for r in rows if r.wrk is not None]
    if not done:
        return f"| {server} | {failure_note(rows)} | | | | | | | |{' |' if aim else ''}"
    rps = [w.rps for w in done]
    med = statistics.median(rps)
    ratio = median_or_none(round_ratios(runs, app.name, mode, server))
    to_aim = f"| {fmt(median_or_none(round_ratios(runs, app.name, mode, server, aim)), 2)} " if aim else ""
    errs = "/".join(str(sum(getattr(w, k) for w in done)) for k in ("connect", "read", "write", "timeout"))
    return (f"| {server} | {med:,.0f} | {min(rps):,.0f}..{max(rps):,.0f} "
            f"| {fmt(statistics.median(w.p50_ms for w in done), 2)} | {fmt(statistics.median(w.p99_ms for w in done))} "
            f"| {fmt(conns / med * 1000.0 if med else None, 2)} "
            f"| {fmt(ratio, 2)} {to_aim}"
            f"| {sum(w.non2xx for w in done)} | {errs} |")


def scenario_table(runs: Sequence[Run], app: App, mode: str, opts: Options) -> str:
    conns = connections_for(app, opts)
    # granian, when in the run, is the aim beyond gunicorn: its own ratio column
    aim = "granian" if any(s.name == "granian" for s in opts.servers) else None
    head = [
        f"### {app.name}, {'keep-alive' if mode == 'keepalive' else 'Connection: close'} (wrk -t1 -c{conns})",
        "",
        "| server | req/s median | min..max | p50 ms | p99 ms | conns/rps ms | ratio to gunicorn-gevent "
        + (f"| ratio to {aim} " if aim else "") + "| non-2xx | socket errors c/r/w/t |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if aim else ""),
    ]
    rows = [scenario_row(runs, app, mode, s.name, conns, aim) for s in opts.servers]
    return "\n".join(head + rows)


def memory_row(runs: Sequence[Run], server: str) -> str | None:
    mems = [r.memory for r in runs if r.server == server and r.memory is not None]
    if not mems:
        return None
    worker_rss = [w[0] for m in mems for w in m.workers]
    return (f"| {server} | {statistics.median(m.master[0] for m in mems):,.0f} "
            f"| {fmt(median_or_none(worker_rss), 0)} | {statistics.median(len(m.workers) for m in mems):.0f} "
            f"| {statistics.median(m.total_rss for m in mems):,.0f} "
            f"| {statistics.median(m.total_pss for m in mems):,.0f} | {len(mems)} |")


def memory_table(runs: Sequence[Run], opts: Options) -> str:
    head = [
        "### Memory after warm-up (kB, medians over runs; from /proc/PID/smaps_rollup)",
        "",
        "| server | master RSS | each worker RSS | processes below master | total RSS | total PSS | samples |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    blocks = []
    for app in opts.apps:
        rows = [row for s in opts.servers if (row := memory_row(select(runs, app=app.name), s.name))]
        if rows:
            blocks.append("\n".join([f"App `{app.name}`:", "", *head[2:], *rows]))
    return "\n\n".join([head[0], *blocks]) if blocks else head[0] + "\n\nNo samples."


def startup_table(runs: Sequence[Run], opts: Options) -> str:
    lines = [
        "### Launch to first HTTP 200 (ms; raw-socket GET polled every ~5 ms; every start of every app)",
        "",
        "| server | median | min | max | starts |",
        "|---|---:|---:|---:|---:|",
    ]
    for server in opts.servers:
        times = [r.startup_ms for r in runs if r.server == server.name and r.startup_ms is not None]
        if times:
            lines.append(f"| {server.name} | {statistics.median(times):.0f} | {min(times):.0f} | {max(times):.0f} "
                         f"| {len(times)} |")
        else:
            lines.append(f"| {server.name} | — | — | — | 0 |")
    return "\n".join(lines)


def versions() -> str:
    parts = [f"Python {sys.version.split()[0]}"]
    for dist in ("forkserve", "gunicorn", "gevent", "granian"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    parts.append((wrk.stdout + wrk.stderr).split(" [")[0].strip() or "wrk")
    return ", ".join(parts)


def summary(runs: Sequence[Run], opts: Options, skipped: dict[str, str]) -> str:
    parts = [
        f"# forkserve benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"`{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        f"{opts.rounds} interleaved round(s), {opts.duration} s measured after {opts.warmup} s warm-up, "
        f"{opts.workers} workers, {os.cpu_count()} CPUs. {versions()}.",
        "Ratio = median over rounds of (server req/s ÷ gunicorn-gevent req/s in the same round). "
        "Latencies are wrk's (coordinated-omission corrected); conns/rps is the Little's-law mean latency.",
    ]
    parts += [f"\nSkipped {name}: {why}." for name, why in skipped.items()]
    for app in opts.apps:
        for mode in opts.modes:
            parts += ["", scenario_table(runs, app, mode, opts)]
    parts += ["", memory_table(runs, opts), "", startup_table(runs, opts)]
    failures = {(r.server, r.app): r.error for r in runs if not r.started and r.error}
    if failures:
        parts += ["", "### Failures", ""]
        for (server, app), error in failures.items():
            parts += [f"{server} on {app}:", "", "```", error, "```", ""]
    return "\n".join(parts).rstrip() + "\n"


def draw_png(runs: Sequence[Run], opts: Options, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = [(a.name, m) for a in opts.apps for m in opts.modes]
    width = 0.8 / max(1, len(opts.servers))
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(scenarios)), 4))
    for i, server in enumerate(opts.servers):
        heights = [median_or_none(r.wrk.rps for r in select(runs, app=a, mode=m, server=server.name) if r.wrk) or 0
                   for a, m in scenarios]
        ax.bar([x + i * width for x in range(len(scenarios))], heights, width, label=server.name)
    ax.set_xticks([x + width * (len(opts.servers) - 1) / 2 for x in range(len(scenarios))])
    ax.set_xticklabels([f"{a}\n{m}" for a, m in scenarios])
    ax.set_ylabel("req/s (median)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_outputs(runs: Sequence[Run], opts: Options, skipped: dict[str, str]) -> str:
    text = summary(runs, opts, skipped)
    (opts.out / "summary.md").write_text(text)
    (opts.out / "runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=1) + "\n")
    if opts.png and draw_png(runs, opts, opts.out / "summary.png"):
        text += f"\nChart: {opts.out / 'summary.png'}\n"
    return text


# ---------------------------------------------------------------------------------------------------------- cli


def pick(names: str, table: dict[str, object], what: str) -> list[str]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in table]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(table)})")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; use >=5 for <15%% gaps)")
    p.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded wrk warm-up (default 2; 0 = none)")
    p.add_argument("--workers", type=int, default=2, help="worker processes for every server (default 2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50; sleep always 200)")
    p.add_argument("--apps", default=",".join(APPS), help=f"comma list of {', '.join(APPS)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of keepalive, close")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma list of {', '.join(SERVERS)}")
    p.add_argument("--start-timeout", type=float, default=15.0, help="seconds to wait for the first 200")
    p.add_argument("--out", type=Path, help="output directory (default bench/results/<timestamp>)")
    p.add_argument("--png", action="store_true", help="also draw summary.png (needs matplotlib; skipped if absent)")
    return p.parse_args(argv)


def build_options(args: argparse.Namespace) -> tuple[Options, dict[str, str]]:
    servers = [SERVERS[n] for n in pick(args.servers, dict(SERVERS), "servers")]
    skipped = {s.name: why for s in servers if (why := unavailable_reason(s))}
    out = args.out or BENCH / "results" / time.strftime("%Y%m%d-%H%M%S")
    opts = Options(
        rounds=args.rounds, duration=args.duration, warmup=args.warmup, workers=args.workers,
        connections=args.connections, start_timeout=args.start_timeout,
        apps=[APPS[n] for n in pick(args.apps, dict(APPS), "apps")],
        modes=pick(args.modes, dict.fromkeys(MODES), "modes"),
        servers=[s for s in servers if s.name not in skipped], out=out.resolve(), png=args.png,
    )
    return opts, skipped


def compile_bytecode() -> None:
    """Compile forkserve's and the bench apps' bytecode first, as `pip install` does for an installed package.

    This checkout is an editable install, whose modules would otherwise be compiled from source on every start
    when bytecode is not written (PYTHONDONTWRITEBYTECODE, a read-only tree): ~50 ms that gunicorn, installed
    with its bytecode, does not pay. Both servers import the same app files, now compiled too."""
    import compileall

    import forkserve

    for directory in (Path(forkserve.__file__).parent, APPS_DIR):
        compileall.compile_dir(str(directory), quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    opts, skipped = build_options(parse_args(argv))
    compile_bytecode()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    for sub in ("raw", "logs"):
        (opts.out / sub).mkdir(parents=True, exist_ok=True)
    runs = run_all(opts)
    print(write_outputs(runs, opts, skipped))
    print(f"Results in {opts.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
