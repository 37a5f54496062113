#!/usr/bin/env python3
"""Reload under load: forkserve site-file edits against gunicorn signals, with steady wrk load on two apps.

One run, both servers, one after the other. Each server serves two apps on two ports: `hello` (gevent, 2 workers)
under wrk keep-alive load, and `slow` (gevent, 2 workers; its import takes SLOW_IMPORT_S seconds) under wrk
`Connection: close` load. wrk runs for the whole edit sequence (it is stopped with SIGINT, which makes it print its
report). Meanwhile:

- forkserve: the site file is rewritten atomically (temp file + rename) with a sequence of edits (scale up/down,
  env rolls, a bind added/removed, an app added/removed, an invalid edit and its fix, a module that raises at
  import and its fix). After each write the control socket is polled every 20 ms until the site has converged
  (or reports the invalid edit / the app that cannot boot); the time from the write is the convergence time.
- gunicorn (`-k gevent -w 2`, one master per app): HUP and TTIN/TTOU sent to each master, at fixed intervals.

A probe thread per app sends one `GET /` on a new connection every 20 ms, so a failure or stall can be pinned to
the edit (or signal) during which it happened. See the "Reload" section of bench/README.md.

    .venv/bin/python bench/reload.py --rounds 3
    .venv/bin/python bench/reload.py --quick      # the smoke test's run: about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from run import (  # noqa: E402  (bench/run.py: the throughput benchmark's helpers)
    APPS_DIR,
    HOST,
    App,
    WrkResult,
    executable,
    free_port,
    http_ok,
    launch,
    parse_wrk,
    stop,
    tail,
    to_ms,
    versions,
    wait_first_200,
    wrk_command,
)

from forkserve.config.load import ConfigError, load_text  # noqa: E402
from forkserve.control.client import ControlError, NoMaster, call  # noqa: E402
from forkserve.control.protocol import Request  # noqa: E402
from forkserve.spec import DesiredState  # noqa: E402

BENCH = Path(__file__).resolve().parent
POLL_S = 0.020
PROBE_S = 0.020
WRK_TIMEOUT_S = 5
WRK_LONG_S = 3600  # wrk is stopped by SIGINT long before this
LOAD = (("hello", "keepalive"), ("slow", "close"))
CONVERGED, INVALID, CANNOT_BOOT = "converged", "invalid reported", "cannot boot reported"


# --------------------------------------------------------------------------------------------------- site files


@dataclass(frozen=True)
class AppDef:
    module: str
    ports: tuple[int, ...]
    workers: int = 2
    env: tuple[tuple[str, str], ...] = ()
    raw: tuple[str, ...] = ()  # extra lines, verbatim (used to make the file invalid)


Site = dict[str, AppDef]


def render(site: Site, control: Path) -> str:
    lines = ["[server]", 'log_level = "info"', f'control_socket = "{control}"', "graceful_timeout = 10"]
    for name, app in site.items():
        binds = ", ".join(f'"{HOST}:{p}"' for p in app.ports)
        env = ", ".join(f'{k} = "{v}"' for k, v in app.env)
        lines += ["", f"[apps.{name}]", f'module = "{app.module}"', f"binds = [{binds}]", f"workers = {app.workers}",
                  'worker_class = "gevent"', "worker_connections = 1000", f'chdir = "{APPS_DIR}"',
                  f"env = {{ {env} }}", *app.raw]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """What editors and ConfigMap updates do: a complete new file renamed over the old one."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


@dataclass(frozen=True)
class Edit:
    kind: str
    site: Site
    cannot_boot: str = ""  # the app whose new code cannot boot


def with_app(site: Site, name: str, **changes: Any) -> Site:
    return {**site, name: replace(site[name], **changes)}


def edit_round(good: Site, rnd: int, extra_port: int, extra_bind: int) -> Iterator[Edit]:
    """One round of edits, starting from and ending with a converged site (`good`: the running one)."""
    hello, slow = good["hello"], good["slow"]
    yield Edit("scale up", with_app(good, "hello", workers=3))
    yield Edit("scale down", good)
    yield Edit("scale up", with_app(good, "slow", workers=3))
    yield Edit("scale down", good)
    good = with_app(good, "hello", env=(("REV", str(rnd)),))
    yield Edit("roll hello (env)", good)
    good = with_app(good, "slow", env=(*slow.env[:1], ("REV", str(rnd))))
    yield Edit("roll slow (env)", good)
    yield Edit("bind added", with_app(good, "hello", ports=(*hello.ports, extra_bind)))
    yield Edit("bind removed", good)
    yield Edit("app added", {**good, "extra": AppDef("hello:app", (extra_port,), workers=1)})
    yield Edit("app removed", good)
    yield Edit("invalid edit", with_app(good, "hello", raw=("wrokers = 3",)))
    yield Edit("invalid edit fixed", good)
    yield Edit("cannot boot", with_app(good, "slow", module="broken_app:app"), cannot_boot="slow")
    yield Edit("cannot boot fixed", good)


# ------------------------------------------------------------------------------------------------- convergence


@dataclass(frozen=True)
class Expectation:
    outcome: str  # CONVERGED, INVALID or CANNOT_BOOT
    site_revision: str
    apps: dict[str, tuple[str, int]]  # name -> (revision, workers)
    app: str = ""


def expectation(text: str, path: Path, previous: Expectation | None, cannot_boot: str) -> Expectation:
    """What the status must show once the master has dealt with `text` (the loader decides if it is valid)."""
    try:
        desired = DesiredState.from_config(load_text(text.encode(), str(path)))
    except ConfigError:
        if previous is None:
            raise
        return replace(previous, outcome=INVALID)
    apps = {name: (spec.revision, spec.workers) for name, spec in desired.apps.items()}
    return Expectation(CANNOT_BOOT if cannot_boot else CONVERGED, desired.revision, apps, cannot_boot)


def app_converged(app: dict[str, Any], revision: str, workers: int) -> bool:
    """Every worker is a ready worker of `revision` (none booting, draining or of another revision)."""
    return (app["revision"] == revision and app["state"] == "running"
            and app["desired"] == app["ready"] == app["updated"] == app["running"] == workers
            and len(app["workers"]) == workers
            and all(w["revision"] == revision and w["ready"] for w in app["workers"])
            and all(b["address"] and not b["error"] for b in app["binds"]))


def cannot_boot_reported(app: dict[str, Any], revision: str) -> bool:
    """The new revision is in crash-loop backoff while the old workers still serve at full strength."""
    return app["revision"] == revision and app["backoff"] is not None and app["ready"] >= app["desired"]


def satisfied(snap: dict[str, Any], want: Expectation) -> bool:
    site = snap["site"]
    if site["revision"] != want.site_revision:
        return False
    if want.outcome == INVALID:
        return bool(site["errors"])
    apps = {a["name"]: a for a in snap["apps"]}
    if site["errors"] or set(apps) != set(want.apps):  # a removed app is listed until its last worker is gone
        return False
    for name, (revision, workers) in want.apps.items():
        ok = (cannot_boot_reported(apps[name], revision) if name == want.app
              else app_converged(apps[name], revision, workers))
        if not ok:
            return False
    return True


def status(sock: Path) -> dict[str, Any] | None:
    try:
        return call(str(sock), Request("status"), timeout=5.0)
    except (NoMaster, ControlError):
        return None


def wait_for(sock: Path, want: Expectation, since: float, timeout: float) -> float | None:
    """Seconds from `since` until the status satisfies `want` (polled every POLL_S), None on timeout."""
    deadline = since + timeout
    while time.monotonic() < deadline:
        snap = status(sock)
        if snap is not None and satisfied(snap, want):
            return time.monotonic() - since
        time.sleep(POLL_S)
    return None


# ------------------------------------------------------------------------------------------------ load + probes


@dataclass
class Load:
    server: str
    app: str
    mode: str
    connections: int
    wrk: WrkResult | None = None
    max_ms: float | None = None
    error: str = ""


class Wrk:
    """A wrk process that runs until stopped (SIGINT: wrk stops its threads and prints its full report)."""

    def __init__(self, load: Load, port: int, raw: Path) -> None:
        self.load, self.raw = load, raw
        self.cmd = wrk_command(App(load.app, "", timeout_s=WRK_TIMEOUT_S), load.mode, port, load.connections,
                               WRK_LONG_S)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self) -> Load:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        output, _ = self.proc.communicate(timeout=30)
        self.raw.write_text(" ".join(self.cmd) + "\n" + output)
        try:
            self.load.wrk = parse_wrk(output)
            self.load.max_ms = max_latency(output)
        except ValueError as exc:
            self.load.error = f"{exc}: {output.strip()[-300:]}"
        return self.load


def max_latency(text: str) -> float:
    m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)", text, re.MULTILINE)
    if m is None:
        raise ValueError("no Latency line in wrk output")
    return to_ms(m.group(1), m.group(2))


class Probe(threading.Thread):
    """One `GET /` on a new connection every PROBE_S: (start, seconds, ok) per request."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[tuple[float, float, bool]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            start = time.monotonic()
            ok = http_ok(self.port, timeout=WRK_TIMEOUT_S)
            self.samples.append((start, time.monotonic() - start, ok))
            self.halt.wait(PROBE_S)

    def window(self, start: float, end: float) -> tuple[float, int]:
        """Worst latency (ms) and failures of the probes started in [start, end)."""
        inside = [(s, ok) for t, s, ok in self.samples if start <= t < end]
        return max((s * 1000.0 for s, _ in inside), default=0.0), sum(1 for _, ok in inside if not ok)


@dataclass
class Event:
    server: str
    kind: str
    at: float
    converged_s: float | None = None
    outcome: str = ""
    probe: dict[str, tuple[float, int]] = field(default_factory=dict)  # app -> (worst ms, failures)
    wrk: dict[str, tuple[int, float]] = field(default_factory=dict)  # --per-edit: app -> (failed, max ms)


class Traffic:
    """A probe on each app, and wrk on each app: for the whole run, or (`--per-edit`) one pair per edit window."""

    def __init__(self, server: str, ports: dict[str, int], opts: Options) -> None:
        self.server, self.ports, self.opts = server, ports, opts
        self.segments: list[Load] = []
        self.wrks = [] if opts.per_edit else self._start("run")
        self.probes = {app: Probe(port) for app, port in ports.items()}
        for probe in self.probes.values():
            probe.start()

    def _start(self, label: str) -> list[Wrk]:
        return [Wrk(Load(self.server, app, mode, self.opts.connections), self.ports[app],
                    self.opts.out / "raw" / f"{self.server}-{app}-{mode}-{label}.txt") for app, mode in LOAD]

    def open_window(self, label: str) -> list[Wrk]:
        """With --per-edit: a fresh wrk pair for the coming edit, given a moment to connect."""
        if not self.opts.per_edit:
            return []
        wrks = self._start(label)
        time.sleep(self.opts.settle_s)
        return wrks

    def close_window(self, wrks: list[Wrk], event: Event) -> None:
        for load in (w.finish() for w in wrks):
            self.segments.append(load)
            if load.wrk is not None:
                event.wrk[load.app] = (load.wrk.non2xx + load.wrk.socket_errors, load.max_ms or 0.0)

    def finish(self, events: list[Event], end: float) -> list[Load]:
        loads = [w.finish() for w in self.wrks] or merge(self.segments)
        for probe in self.probes.values():
            probe.halt.set()
            probe.join()
        for event, nxt in zip(events, [*(e.at for e in events[1:]), end], strict=True):
            event.probe = {app: p.window(event.at, nxt) for app, p in self.probes.items()}
        return loads


def merge(segments: Sequence[Load]) -> list[Load]:
    """Per-edit wrk runs added up per app: counts summed; p99 and max are the worst segment's."""
    merged: dict[tuple[str, str], Load] = {}
    for seg in segments:
        key = (seg.app, seg.mode)
        total = merged.setdefault(key, Load(seg.server, seg.app, seg.mode, seg.connections,
                                            WrkResult(0.0, 0.0, 0.0, 0, 0, 0, 0, 0, 0), 0.0))
        if seg.wrk is None or total.wrk is None:
            total.error = total.error or seg.error
            continue
        a, b = total.wrk, seg.wrk
        total.wrk = WrkResult(0.0, 0.0, max(a.p99_ms, b.p99_ms), a.requests + b.requests, a.non2xx + b.non2xx,
                              a.connect + b.connect, a.read + b.read, a.write + b.write, a.timeout + b.timeout)
        total.max_ms = max(total.max_ms or 0.0, seg.max_ms or 0.0)
    return list(merged.values())


# --------------------------------------------------------------------------------------------------- forkserve


@dataclass
class Options:
    rounds: int
    connections: int
    slow_import_s: float
    settle_s: float
    converge_timeout: float
    quick: bool
    per_edit: bool
    out: Path


def forkserve_run(opts: Options) -> tuple[list[Load], list[Event]]:
    # mkdtemp: mode 0700, as the control socket's directory must be; and a short path (AF_UNIX limit)
    with tempfile.TemporaryDirectory(prefix="forkserve-reload-") as tmpdir:
        return forkserve_site_run(opts, Path(tmpdir))


def forkserve_site_run(opts: Options, tmp: Path) -> tuple[list[Load], list[Event]]:
    sock, path = tmp / "control.sock", tmp / "site.toml"
    ports = {"hello": free_port(), "slow": free_port()}
    good: Site = {"hello": AppDef("hello:app", (ports["hello"],)),
                  "slow": AppDef("slow_import_app:app", (ports["slow"],),
                                 env=(("SLOW_IMPORT_S", str(opts.slow_import_s)),))}
    path.write_text(render(good, sock))
    want = expectation(path.read_text(), path, None, "")
    log = opts.out / "logs" / "forkserve.log"
    proc = launch([sys.executable, "-m", "forkserve", "up", str(path)], log)
    try:
        if wait_for(sock, want, time.monotonic(), 30 + 3 * opts.slow_import_s) is None:
            raise SystemExit(f"forkserve did not start:\n{tail(log)}")
        return edit_under_load(opts, ports, path, sock, want, good)
    finally:
        stop(proc)


def edit_under_load(opts: Options, ports: dict[str, int], path: Path, sock: Path, want: Expectation,
                    good: Site) -> tuple[list[Load], list[Event]]:
    traffic = Traffic("forkserve", ports, opts)
    events: list[Event] = []
    time.sleep(opts.settle_s * 2)
    for rnd in range(1, opts.rounds + 1):
        for n, edit in enumerate(edit_round(good, rnd, free_port(), free_port())):
            window = traffic.open_window(f"r{rnd}-{n:02d}")
            text = render(edit.site, sock)
            want = expectation(text, path, want, edit.cannot_boot)
            if want.outcome != INVALID:
                good = edit.site  # the master's desired site from now on (the last edit of a round restores it)
            event = Event("forkserve", edit.kind, time.monotonic(), outcome=want.outcome)
            write_atomically(path, text)
            event.converged_s = wait_for(sock, want, event.at, opts.converge_timeout)
            events.append(event)
            time.sleep(opts.settle_s)
            traffic.close_window(window, event)
            report(event)
    time.sleep(opts.settle_s)
    return traffic.finish(events, time.monotonic()), events


def report(event: Event) -> None:
    took = "NOT converged" if event.converged_s is None else f"{event.converged_s * 1000:.0f} ms"
    took = f"{event.outcome} in {took}" if event.outcome else "sent"
    failed = "".join(f", wrk {app}: {n} failed, max {m:.0f} ms" for app, (n, m) in event.wrk.items())
    print(f"[{event.server}] {event.kind}: {took}{failed}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- gunicorn


def gunicorn_signals(opts: Options) -> list[tuple[str, signal.Signals, float]]:
    """(app, signal, seconds to wait after it) for one round."""
    fast, slow = (1.0, opts.slow_import_s + 2.0) if opts.quick else (2.0, opts.slow_import_s + 3.0)
    hups = 1 if opts.quick else 3
    return [*[("hello", signal.SIGHUP, fast)] * hups, ("hello", signal.SIGTTIN, fast), ("hello", signal.SIGTTOU, fast),
            *[("slow", signal.SIGHUP, slow)] * max(1, hups - 1),
            ("slow", signal.SIGTTIN, slow), ("slow", signal.SIGTTOU, slow)]


def gunicorn_command(module: str, port: int) -> list[str]:
    return [executable("gunicorn"), "--chdir", str(APPS_DIR), "-b", f"{HOST}:{port}", "-w", "2", "-k", "gevent",
            "--worker-connections", "1000", "--graceful-timeout", "10", "--log-level", "info", module]


def gunicorn_run(opts: Options) -> tuple[list[Load], list[Event]]:
    ports = {"hello": free_port(), "slow": free_port()}
    modules = {"hello": "hello:app", "slow": "slow_import_app:app"}
    os.environ["SLOW_IMPORT_S"] = str(opts.slow_import_s)  # inherited by gunicorn's workers
    procs = {app: launch(gunicorn_command(modules[app], port), opts.out / "logs" / f"gunicorn-{app}.log")
             for app, port in ports.items()}
    try:
        for app, proc in procs.items():
            if wait_first_200(proc, ports[app], time.monotonic(), 30 + 3 * opts.slow_import_s) is None:
                raise SystemExit(f"gunicorn ({app}) did not start:\n{tail(opts.out / 'logs' / f'gunicorn-{app}.log')}")
        time.sleep(opts.slow_import_s + 1)  # every worker booted, not just the first
        return signal_under_load(opts, ports, {app: p.pid for app, p in procs.items()})
    finally:
        for proc in procs.values():
            stop(proc)


def signal_under_load(opts: Options, ports: dict[str, int],
                      masters: dict[str, int]) -> tuple[list[Load], list[Event]]:
    traffic = Traffic("gunicorn", ports, opts)
    events: list[Event] = []
    time.sleep(opts.settle_s * 2)
    for rnd in range(1, opts.rounds + 1):
        for n, (app, sig, wait) in enumerate(gunicorn_signals(opts)):
            window = traffic.open_window(f"r{rnd}-{n:02d}")
            events.append(Event("gunicorn", f"{sig.name} {app}", time.monotonic()))
            os.kill(masters[app], sig)
            time.sleep(wait)
            traffic.close_window(window, events[-1])
            report(events[-1])
    return traffic.finish(events, time.monotonic()), events


# ------------------------------------------------------------------------------------------------------ summary


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def load_table(loads: Sequence[Load]) -> str:
    lines = ["| server | app, load | requests | non-2xx | socket errors c/r/w/t | failed total | p99 ms | max ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for ld in loads:
        what = f"{ld.app}, {'keep-alive' if ld.mode == 'keepalive' else 'Connection: close'} -c{ld.connections}"
        w = ld.wrk
        if w is None:
            lines.append(f"| {ld.server} | {what} | {ld.error.splitlines()[0] if ld.error else 'no result'} "
                         "| | | | | |")
            continue
        lines.append(f"| {ld.server} | {what} | {w.requests:,} | {w.non2xx} "
                     f"| {w.connect}/{w.read}/{w.write}/{w.timeout} | {w.non2xx + w.socket_errors} "
                     f"| {w.p99_ms:,.1f} | {ms(ld.max_ms)} |")
    return "\n".join(lines)


def grouped(events: Sequence[Event]) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.kind, []).append(event)
    return groups


APPS = ("hello", "slow")


def probe_cells(events: Sequence[Event]) -> str:
    worst = [ms(max(e.probe.get(a, (0.0, 0))[0] for e in events)) for a in APPS]
    failures = [str(sum(e.probe.get(a, (0.0, 0))[1] for e in events)) for a in APPS]
    return f"{' / '.join(worst)} | {' / '.join(failures)}"


def wrk_cells(events: Sequence[Event]) -> str:
    """--per-edit only: wrk failures and max latency of the windows of these events."""
    if not any(e.wrk for e in events):
        return ""
    failed = [str(sum(e.wrk.get(a, (0, 0.0))[0] for e in events)) for a in APPS]
    worst = [ms(max(e.wrk.get(a, (0, 0.0))[1] for e in events)) for a in APPS]
    return f" {' / '.join(failed)} | {' / '.join(worst)} |"


WRK_HEAD = (" wrk failed hello / slow | wrk max ms hello / slow |", "---:|---:|")


def edit_table(events: Sequence[Event]) -> str:
    extra = any(e.wrk for e in events)
    lines = ["| edit | waited for | n | p50 ms | max ms | not converged | probe worst ms hello / slow "
             "| probe failures hello / slow |" + (WRK_HEAD[0] if extra else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|" + (WRK_HEAD[1] if extra else "")]
    for kind, group in grouped(events).items():
        done = [e.converged_s * 1000.0 for e in group if e.converged_s is not None]
        p50 = statistics.median(done) if done else None
        lines.append(f"| {kind} | {group[0].outcome} | {len(group)} | {ms(p50)} | {ms(max(done, default=None))} "
                     f"| {len(group) - len(done)} | {probe_cells(group)} |{wrk_cells(group)}")
    return "\n".join(lines)


def signal_table(events: Sequence[Event]) -> str:
    extra = any(e.wrk for e in events)
    lines = ["| signal | n | probe worst ms hello / slow | probe failures hello / slow |"
             + (WRK_HEAD[0] if extra else ""), "|---|---:|---:|---:|" + (WRK_HEAD[1] if extra else "")]
    for kind, group in grouped(events).items():
        lines.append(f"| {kind} | {len(group)} | {probe_cells(group)} |{wrk_cells(group)}")
    return "\n".join(lines)


def log_problems(log: Path, limit: int = 15) -> list[str]:
    """forkserve's WARNING/ERROR lines (first line of each), for attributing any failure."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [line for line in lines if "[WARNING]" in line or "[ERROR]" in line]
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])


def summary(opts: Options, loads: Sequence[Load], events: Sequence[Event]) -> str:
    fork = [e for e in events if e.server == "forkserve"]
    guni = [e for e in events if e.server == "gunicorn"]
    parts = [
        f"# Reload under load, {time.strftime('%Y-%m-%d %H:%M:%S')}", "",
        f"`{' '.join([Path(sys.executable).name, *sys.argv])}`", "",
        f"{opts.rounds} round(s); apps `hello` and `slow` (import takes {opts.slow_import_s:g} s), gevent, "
        f"2 workers each; wrk -t1 --timeout {WRK_TIMEOUT_S}s "
        f"{'restarted for each edit/signal (--per-edit)' if opts.per_edit else 'for the whole edit/signal sequence'}; "
        f"{os.cpu_count()} CPUs. {versions()}.", "",
        "## Failed requests and latency under load (wrk, whole run)", "", load_table(loads), "",
    ]
    if fork:
        parts += ["## forkserve: site-file edits (write → converged; status polled every 20 ms)", "", edit_table(fork),
                  ""]
    if guni:
        parts += ["## gunicorn: signals to the master", "", signal_table(guni), ""]
    parts += [
        "Probe: one `GET /` on a new connection every 20 ms per app, by this script; a probe belongs to the "
        "edit/signal during whose window (until the next one) it started. Latencies include wrk's CPU "
        "contention on a shared machine.",
    ]
    problems = log_problems(opts.out / "logs" / "forkserve.log")
    if problems:
        parts += ["", "## forkserve WARNING/ERROR log lines (the cannot-boot edit produces some)", "", "```",
                  *problems, "```"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", "--edits", type=int, default=2, help="repetitions of the edit/signal sequence (2)")
    p.add_argument("--connections", type=int, default=20, help="wrk connections per app (default 20)")
    p.add_argument("--slow-import", type=float, default=2.0, help="seconds the slow app's import takes (2)")
    p.add_argument("--servers", default="forkserve,gunicorn", help="comma list of forkserve, gunicorn")
    p.add_argument("--per-edit", action="store_true",
                   help="a fresh wrk pair per edit/signal (pins wrk's failures on an edit; load restarts at each)")
    p.add_argument("--quick", action="store_true", help="one short round, slow import 1 s (the smoke test)")
    p.add_argument("--out", type=Path, help="output directory (default bench/results/reload-<timestamp>)")
    return p.parse_args(argv)


def build_options(args: argparse.Namespace) -> Options:
    out = args.out or BENCH / "results" / time.strftime("reload-%Y%m%d-%H%M%S")
    return Options(rounds=1 if args.quick else args.rounds, connections=10 if args.quick else args.connections,
                   slow_import_s=1.0 if args.quick else args.slow_import, settle_s=0.3 if args.quick else 0.5,
                   converge_timeout=30.0, quick=args.quick, per_edit=args.per_edit,
                   out=out.resolve())


RUNNERS: dict[str, Callable[[Options], tuple[list[Load], list[Event]]]] = {
    "forkserve": forkserve_run, "gunicorn": gunicorn_run}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = build_options(args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if unknown := [s for s in servers if s not in RUNNERS]:
        raise SystemExit(f"unknown servers: {', '.join(unknown)}")
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    for sub in ("raw", "logs"):
        (opts.out / sub).mkdir(parents=True, exist_ok=True)
    loads: list[Load] = []
    events: list[Event] = []
    for server in servers:
        more_loads, more_events = RUNNERS[server](opts)
        loads += more_loads
        events += more_events
    text = summary(opts, loads, events)
    (opts.out / "summary.md").write_text(text)
    (opts.out / "events.json").write_text(json.dumps({"loads": [asdict(x) for x in loads],
                                                      "events": [asdict(e) for e in events]}, indent=1) + "\n")
    print(text)
    print(f"Results in {opts.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
