"""gunicorn's request-parsing corpus sent over the wire to forkserve's sync and gevent workers.

gunicorn ships `tests/requests/valid/*.http` and `invalid/*.http` in its source distribution, each with a `.py`
beside it holding the expectation (a request description, or the exception gunicorn raises) and, for some, a
setting (`cfg.set(...)`). This script downloads that sdist at run time (`pip download --no-binary :all:`; nothing
is copied into this repository), turns each `.http` file into bytes with gunicorn's own loader (`tests/treq.py`:
newlines dropped, `\\r\\n`, `\\0`, `\\n`, `\\t` and `\\xHH` escapes decoded), and sends it on a new connection to
forkserve (`forkserve up` with a generated site file, one server per worker class and per limit setting).

Judging: a valid case is right when forkserve answers as many 2xx responses as the case holds requests; an invalid
case is right when no response is a 2xx (a 4xx/5xx, or a close without a 2xx). Cases whose `.py` changes a setting
other than the three request limits (which map to forkserve's keys of the same name) are set aside: they test a
gunicorn-only feature (PROXY protocol, obsolete line folding, header_map, method casefolding, ...).

    .venv/bin/python bench/conformance.py [--version 27.0.1] [--classes sync,gevent] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import APPS_DIR, HOST, free_port, launch, stop

DEFAULT_VERSION = "27.0.1"
LIMITS = ("limit_request_line", "limit_request_fields", "limit_request_field_size")
CHUNK_EXT_WS = re.compile(rb"(?m)^[0-9A-Fa-f]+[ \t]*;[ \t]")  # a chunk size line with BWS after ";"
MAXIMA = {"limit_request_line": 8190, "limit_request_fields": 32768, "limit_request_field_size": 65536}


@dataclass
class Case:
    name: str  # "valid/001"
    valid: bool
    data: bytes
    requests: int  # how many requests a valid case holds
    limits: tuple[tuple[str, int], ...]
    aside: str = ""  # why the case is set aside ("" = applicable)


def download(version: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"gunicorn=={version}", "-d", str(into)], check=True)
    archive = next(into.glob("gunicorn-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return next(p for p in into.iterdir() if p.is_dir() and p.name.startswith("gunicorn-"))


def load_cases(root: Path) -> list[Case]:
    """gunicorn's loader (tests/treq.py, run from the sdist) for the bytes and the expectation."""
    sys.path[:0] = [str(root), str(root / "tests")]
    import treq  # type: ignore[import-not-found,unused-ignore]
    from gunicorn.config import Config  # type: ignore[import-untyped,import-not-found,unused-ignore]

    defaults = Config()
    cases = []
    for kind in ("valid", "invalid"):
        for http in sorted((root / "tests" / "requests" / kind).glob("*.http")):
            mod: dict[str, Any] = treq.load_py(str(http.with_suffix(".py")))
            expect = mod["request"]
            data = treq.request(str(http), expect).data
            cfg = mod["cfg"]
            changed = [k for k in cfg.settings if k != "http_parser"
                       and cfg.settings[k].get() != defaults.settings[k].get()]
            others = [k for k in changed if k not in LIMITS]
            limits = tuple((k, int(cfg.settings[k].get())) for k in changed if k in LIMITS)
            aside = ""
            if others:
                aside = "gunicorn-only setting " + ", ".join(f"{k}={cfg.settings[k].get()!r}" for k in others)
            elif any(v <= 0 or v > MAXIMA[k] for k, v in limits):
                aside = "limit outside forkserve's range (0 means 'the maximum' in forkserve, 'none' in gunicorn): " \
                        + ", ".join(f"{k}={v}" for k, v in limits)
            count = len(expect) if isinstance(expect, list) else 1
            cases.append(Case(f"{kind}/{http.stem}", kind == "valid", data, count, limits, aside))
    return cases


def site_file(tmp: Path, port: int, worker_class: str, limits: tuple[tuple[str, int], ...]) -> str:
    lines = ["[server]", "watch = false", 'log_level = "error"', f'control_socket = "{tmp / "control.sock"}"',
             "[apps.conformance]", 'module = "conformance_app:app"', f'binds = ["{HOST}:{port}"]', "workers = 1",
             f'worker_class = "{worker_class}"', f'chdir = "{APPS_DIR}"', "timeout = 5", "keepalive = 1"]
    lines += [f"{k} = {v}" for k, v in limits]
    return "\n".join(lines) + "\n"


def statuses(port: int, data: bytes, timeout: float = 3.0) -> tuple[list[int], str]:
    """The status codes of the responses to `data`, sent on one connection (write side shut after sending)."""
    codes: list[int] = []

    class Collect:
        def on_message_complete(self) -> None:
            codes.append(parser.get_status_code())

    parser = httptools.HttpResponseParser(Collect())
    note = ""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                parser.feed_data(chunk)
        except TimeoutError:
            note = "timeout"
        except OSError as exc:
            note = type(exc).__name__
        except httptools.HttpParserError as exc:
            note = f"unparsable response: {exc}"
    return codes, note


def hostless(data: bytes) -> bool:
    """Some HTTP/1.1 request in `data` has no Host field."""
    for head in data.split(b"\r\n\r\n"):
        line, _, fields = head.lstrip(b"\r\n").partition(b"\r\n")
        names = [f.split(b":", 1)[0].strip().lower() for f in fields.split(b"\r\n") if b":" in f]
        if line.endswith(b" HTTP/1.1") and b"host" not in names:
            return True
    return False


def with_host(data: bytes) -> bytes:
    """`data` with a Host field added to every HTTP/1.1 request head that has none."""
    heads = data.split(b"\r\n\r\n")
    for i, head in enumerate(heads[:-1]):
        if head.lstrip(b"\r\n").partition(b"\r\n")[0].endswith(b" HTTP/1.1") and hostless(head + b"\r\n\r\n"):
            line, sep, rest = head.partition(b"\r\n")
            heads[i] = line + b"\r\nHost: example.org" + (sep + rest if rest else b"")
    return b"\r\n\r\n".join(heads)


def deliberate(case: Case) -> str:
    """Why forkserve deliberately judges this case otherwise than gunicorn ("" when it does not)."""
    head, _, body = case.data.partition(b"\r\n\r\n")
    if case.valid and hostless(case.data):
        return "stricter: an HTTP/1.1 request without Host is refused (RFC 9112 §3.2: a server MUST respond 400)"
    if not case.valid and case.data.startswith(b"\r\n\r\n"):
        return "laxer: empty lines before the request line are ignored (RFC 9112 §2.2: at least one SHOULD be)"
    length = [f.split(b":", 1)[1].strip() for f in head.split(b"\r\n") if f.lower().startswith(b"content-length:")]
    if case.valid and length and length[0].isdigit() and int(length[0]) > len(body):
        return (f"corpus artifact: the body ({len(body)} bytes) is shorter than its Content-Length ({int(length[0])});"
                " over the wire the server waits for the rest")
    return ""


def judge(case: Case, codes: list[int], worker_class: str) -> bool:
    ok = [200 <= c < 300 for c in codes]
    if case.valid:
        # the sync worker answers one request per connection and closes (as gunicorn's sync worker does)
        wanted = 1 if worker_class == "sync" else case.requests
        return len(codes) >= wanted and all(ok[:wanted])
    return not (codes and all(ok))


def answering(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """The server answers HTTP (any status: a tiny limit may refuse even the probe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            if sock.recv(16).startswith(b"HTTP/"):
                return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def server(worker_class: str, limits: tuple[tuple[str, int], ...]) -> Iterator[int]:
    with tempfile.TemporaryDirectory(prefix="fs-conformance-") as name:
        tmp = Path(name)
        port = free_port()
        site = tmp / "site.toml"
        site.write_text(site_file(tmp, port, worker_class, limits))
        proc = launch([sys.executable, "-m", "forkserve", "up", str(site)], tmp / "log")
        try:
            if not answering(proc, port, 30.0):
                raise SystemExit(f"forkserve ({worker_class}, {limits}) did not start:\n{(tmp / 'log').read_text()}")
            yield port
        finally:
            stop(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", default=DEFAULT_VERSION, help="gunicorn sdist version (default %(default)s)")
    ap.add_argument("--classes", default="sync,gevent")
    ap.add_argument("--verbose", action="store_true", help="print every case, not only the misses")
    opts = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fs-gunicorn-sdist-") as name:
        cases = load_cases(download(opts.version, Path(name)))
    applicable = [c for c in cases if not c.aside]
    print(f"gunicorn {opts.version}: {len(cases)} cases, {len(applicable)} applicable, "
          f"{len(cases) - len(applicable)} set aside")
    for case in cases:
        if case.aside:
            print(f"  set aside {case.name}: {case.aside}")
    groups = sorted({c.limits for c in applicable})
    failed = False
    for worker_class in opts.classes.split(","):
        right = {"valid": [0, 0], "invalid": [0, 0]}
        misses = []
        hosted = [0, 0]  # Host-less HTTP/1.1 cases judged right once a Host is added
        for limits in groups:
            with server(worker_class, limits) as port:
                for case in (c for c in applicable if c.limits == limits):
                    codes, note = statuses(port, case.data)
                    good = judge(case, codes, worker_class)
                    tally = right["valid" if case.valid else "invalid"]
                    tally[0] += good
                    tally[1] += 1
                    line = f"{case.name}: expected {'2xx' if case.valid else 'refusal'}, got {codes or 'no response'}" \
                           + (f" ({note})" if note else "")
                    if not good:
                        why = deliberate(case)
                        if why.startswith("stricter: an HTTP/1.1 request without Host"):
                            again = judge(case, statuses(port, with_host(case.data))[0], worker_class)
                            why += f"; with a Host added: {'right' if again else 'still wrong'}"
                            if not again and CHUNK_EXT_WS.search(case.data.partition(b"\r\n\r\n")[2]):
                                why += (" (not yet: llhttp refuses whitespace after ';' in a chunk extension, which"
                                        " RFC 9112 §7.1.1 allows as BWS)")
                            hosted[0] += again
                            hosted[1] += 1
                        misses.append(line + (f" -- deliberate: {why}" if why else ""))
                    elif opts.verbose:
                        print(f"  ok {worker_class} {line}")
        total = sum(t[0] for t in right.values()), sum(t[1] for t in right.values())
        print(f"{worker_class}: {total[0]}/{total[1]} right (valid {right['valid'][0]}/{right['valid'][1]}, "
              f"invalid {right['invalid'][0]}/{right['invalid'][1]}); Host-less HTTP/1.1 valid cases refused by "
              f"rule: {hosted[1]}, of which {hosted[0]} are right once a Host is added; "
              f"so {total[0] + hosted[0]}/{total[1]} right but for the Host rule")
        for line in misses:
            print(f"  differs {line}")
        failed = failed or any("deliberate" not in m or "still wrong" in m for m in misses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
