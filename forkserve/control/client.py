"""`forkserve status|reload|stop|plan|wait`: talk to a running master over its control socket.

Which master: `--socket PATH` when given; otherwise the one of the site file (SITE, default `./site.toml`):
its `[server] control_socket` when the file sets one and is valid, else the default per-site path
(`forkserve.config.paths.default_control_socket`, a hash of the file's absolute path). Run the command with
the same site path (any spelling: it is made absolute) and as the same user as `forkserve up`, or as root.

Exit codes:
    status           0 shown; 2 no master / error.   --ready: 0 every app has its desired ready workers, 1 not
    reload           0 applied or unchanged; 1 the file is invalid or missing (the old site keeps running); 2 error
    wait             0 rolled out; 1 a rollout is failing (new code cannot boot, or the file is invalid); 2 timeout,
                     an app the site does not have, no master, or error (`forkserve/control/wait.py`)
    stop             0 the master is stopping; 2 error
    plan             0 nothing would change; 1 something would; 2 the file is invalid, unreadable, or an error.
                     With no master running, the plan is made against an empty site (everything is added).

Results (`status --json` prints the snapshot documented in `forkserve/status.py`; `plan` reports are
documented in `forkserve/control/planning.py`; the wire format in `forkserve/control/protocol.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

from forkserve.config.load import MAX_BYTES, ConfigError, load, load_text
from forkserve.config.paths import default_control_socket
from forkserve.control import protocol
from forkserve.control.planning import invalid_report, plan_report
from forkserve.control.protocol import Request
from forkserve.outcomes import ReloadOutcome
from forkserve.spec import DesiredState, LoadedSite
from forkserve.state import Observed
from forkserve.status import readiness

DEFAULT_SITE = "site.toml"
TIMEOUT = 30.0

OK, CHANGED, ERROR = 0, 1, 2


class NoMaster(Exception):
    pass


class ControlError(Exception):
    pass


def socket_path(site: str | None, explicit: str | None) -> str:
    if explicit:
        return explicit
    site = site or DEFAULT_SITE
    try:
        configured = load(site).server.control_socket
    except ConfigError:
        configured = None
    return configured or default_control_socket(site)


def call(path: str, request: Request, timeout: float = TIMEOUT) -> dict[str, Any]:
    """One request, one reply. Raises NoMaster when nothing listens at `path`, ControlError on error replies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoMaster(path) from None
        except PermissionError:
            raise ControlError(f"permission denied on the control socket {path} (run as the master's user)") from None
        sock.sendall(protocol.encode(request.to_message()))
        decoder = protocol.Decoder()
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise ControlError(f"no reply from the master within {timeout:.0f}s") from None
            if not data:
                raise ControlError("the master closed the connection without a reply")
            messages = decoder.feed(data)
            if messages:
                reply = messages[0]
                break
    except protocol.ProtocolError as exc:
        raise ControlError(f"bad reply from the master: {exc}") from None
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "the master refused the request")))
    result = reply.get("result")
    return result if isinstance(result, dict) else {}


def run(args: argparse.Namespace) -> int:
    command = args.command
    site = getattr(args, "site", None)
    path = socket_path(site, getattr(args, "socket", None))
    try:
        if command == "plan":
            return _plan(args.site, path)
        if command == "status":
            return _status(path, args)
        if command == "wait":
            return _wait(path, args)
        if command == "upgrade":
            return _upgrade(path)
        if command == "reload":
            reply = call(path, Request("reload", apps=tuple(getattr(args, "apps", ()) or ())))
            print(reply["result"])
            return CHANGED if ReloadOutcome.from_wire(reply).failed else OK
        if command == "stop":
            result = call(path, Request("stop", fast=bool(args.fast)))
            print(f"master stopping ({'fast' if result.get('fast') else 'graceful'})")
            return OK
    except NoMaster as exc:
        where = f" for {os.path.abspath(site or DEFAULT_SITE)}" if not getattr(args, "socket", None) else ""
        print(f"forkserve: no master is running{where} (nothing listens on {exc})", file=sys.stderr)
        return ERROR
    except ControlError as exc:
        print(f"forkserve: {exc}", file=sys.stderr)
        return ERROR
    print(f"forkserve: unknown command {command!r}", file=sys.stderr)
    return ERROR


# ---- wait ------------------------------------------------------------------------------------------------------


def _wait(path: str, args: argparse.Namespace) -> int:
    from forkserve.control.wait import wait

    if args.timeout <= 0 or args.settle < 0:
        print("forkserve wait: --timeout must be positive and --settle not negative", file=sys.stderr)
        return ERROR
    return wait(lambda: call(path, Request("status"), timeout=min(TIMEOUT, args.timeout)), args.apps,
                timeout=args.timeout, settle=args.settle)


def _upgrade(path: str, timeout: float = 120.0) -> int:
    """Ask for the upgrade, then wait until the re-executed master answers (0), or say why not (2)."""
    before = call(path, Request("status"))["master"]["started_at"]
    reply = call(path, Request("upgrade"), timeout=timeout)
    print(f"master {reply.get('pid')}: the installed forkserve checked the site; re-executing")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            master = call(path, Request("status"), timeout=5)["master"]
        except (NoMaster, ControlError):
            continue  # between the exec and the new master's control socket
        if master["started_at"] != before:
            print(f"upgraded: master {master['pid']} runs the installed forkserve; the previous workers are "
                  f"replaced once the new ones are ready (`forkserve wait`)")
            return OK
    print(f"forkserve: the master did not come back within {timeout:.0f}s", file=sys.stderr)
    return ERROR


# ---- status ----------------------------------------------------------------------------------------------------


def _status(path: str, args: argparse.Namespace) -> int:
    snap = call(path, Request("status"))
    if args.json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    elif args.ready:
        print(readiness(snap))
    else:
        print(format_status(snap, colour=_colour_wanted()))
    if args.ready:
        return OK if snap["ready"] else CHANGED
    return OK


def _colour_wanted() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


_COLOURS = {"running": "32", "idle": "32", "busy": "36", "rolling": "33", "degraded": "33", "booting": "33",
            "draining": "35", "removing": "35", "backoff": "31", "killed": "31", "error": "31"}


def _paint(text: str, key: str, colour: bool) -> str:
    code = _COLOURS.get(key)
    return f"\033[{code}m{text}\033[0m" if colour and code else text


def table(rows: list[list[str]], keys: list[list[str]] | None = None, colour: bool = False) -> str:
    """Aligned columns (two spaces apart); `keys` names the colour of each cell (padding stays uncoloured)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            padded = cell.ljust(widths[i]) if i < len(row) - 1 else cell
            key = keys[r][i] if keys else ""
            cells.append(_paint(padded, key, colour) if key else padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def format_status(snap: dict[str, Any], colour: bool = False) -> str:
    site, master = snap["site"], snap["master"]
    head = [["site", site["path"] + ("  (file missing)" if site["missing"] else "")],
            ["revision", f"{site['revision']}   master pid {master['pid']}, up {duration(master['uptime'])}"
                         + ("   STOPPING" if master["stopping"] else "")],
            ["last", site["last_result"] or "-"]]
    out = [table(head)]
    if site["errors"]:
        out.append(_paint("the site file is invalid (the last good revision keeps running):", "error", colour))
        out += [f"  {e}" for e in site["errors"]]
    rows = [["APP", "STATE", "DESIRED", "RUNNING", "READY", "UPDATED", "REVISION", "RESTARTS", "BINDS"]]
    keys = [[""] * 9]
    reasons = [(f"{a['name']}: {a['reason']}", a["state"]) for a in snap["apps"] if a.get("reason")]
    for app in snap["apps"]:
        state = app["state"]
        if app["backoff"]:
            state += f" (retry in {duration(app['backoff']['retry_in'])})"
        restarts = " ".join(f"{k}={v}" for k, v in app["restarts"].items() if v) or "-"
        binds = ", ".join(b["address"] or f"{b['bind']} (not bound: {b['error'] or 'pending'})" for b in app["binds"])
        rows.append([app["name"], state, str(app["desired"]), str(app["running"]), str(app["ready"]),
                     str(app["updated"]), app["revision"] or "-", restarts, binds or "-"])
        keys.append(["", app["state"], "", "", "", "", "", "", ""])
    out += ["", table(rows, keys, colour)]
    if reasons:
        out += [""] + [_paint(text, state, colour) for text, state in reasons]
    errors = [f"{a['name']}: {a['backoff']['error']}" for a in snap["apps"] if a["backoff"] and a["backoff"]["error"]]
    if errors:
        out += ["", "last errors:"] + [f"  {e}" for e in errors]
    rows = [["APP", "PID", "REVISION", "STATE", "AGE", "REQUESTS", "RSS"]]
    keys = [[""] * 7]
    for app in snap["apps"]:
        for w in app["workers"]:
            rows.append([app["name"], str(w["pid"]), w["revision"], w["state"], duration(w["age"]),
                         str(w["requests"]), size(w["rss"])])
            keys.append(["", "", "", w["state"], "", "", ""])
    if len(rows) > 1:
        out += ["", table(rows, keys, colour)]
    return "\n".join(out)


# ---- plan ------------------------------------------------------------------------------------------------------


def _read(site: str) -> bytes:
    with open(site, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ControlError(f"{site}: larger than {MAX_BYTES} bytes")
    return data


def _plan(site: str, path: str) -> int:
    absolute = os.path.abspath(site)
    try:
        data = _read(absolute)
    except OSError as exc:
        print(f"forkserve: cannot read {site}: {exc.strerror}", file=sys.stderr)
        return ERROR
    note = ""
    try:
        report = call(path, Request("plan", path=absolute, text=data.decode("utf-8")))
    except UnicodeDecodeError:
        report = local_plan(absolute, data)  # the loader reports where the bad bytes are
    except NoMaster:
        report = local_plan(absolute, data)
        note = f"no master is running (nothing listens on {path}): planning against an empty site"
    print(format_plan(report, note))
    if not report["valid"]:
        return ERROR
    return CHANGED if report["changed"] else OK


def local_plan(path: str, data: bytes) -> dict[str, Any]:
    try:
        config = load_text(data, path)
    except ConfigError as exc:
        return invalid_report(path, [d.format() for d in exc.diagnostics])
    return plan_report(path, LoadedSite.from_config(config), DesiredState(), None, Observed(), time.monotonic())


_SIGNS = {"add": "+", "remove": "-", "needs-restart": "!"}


def format_plan(report: dict[str, Any], note: str = "") -> str:
    out = [note] if note else []
    if not report["valid"]:
        out.append(f"{report['path']} is invalid; nothing can be planned:")
        out += [f"  {e}" for e in report["errors"]]
        return "\n".join(out)
    revision = report["revision"]
    if not report["changes"]:
        out.append(f"No changes: the running site (revision {revision['from'] or '-'}) matches {report['path']}.")
        return "\n".join(out)
    out.append(f"Plan for {report['path']} (site revision {revision['from'] or '-'} -> {revision['to']}):")
    rows = [[_SIGNS.get(c["kind"], "~"), c["app"] or "[server]", c["kind"], c["detail"]] for c in report["changes"]]
    out.append("\n".join("  " + line for line in table(rows).splitlines()))
    if report["first_steps"]:
        out.append("First steps:")
        out += [f"  {step}" for step in report["first_steps"]]
    n = len(report["changes"])
    out.append(f"{n} change{'s' if n > 1 else ''}; nothing was applied (edit the file or `forkserve reload` to apply).")
    return "\n".join(out)
