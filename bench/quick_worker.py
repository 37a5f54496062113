"""Quick harness: fork N forkserve workers (no master) on one TCP listener, for wrk runs while developing.

    .venv/bin/python bench/quick_worker.py --worker-class gevent --workers 2 --port 18080 [--app mod:attr]

The default app is a hello world (`bench.quick_worker:hello`). Ctrl-C or TERM stops the workers.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from forkserve import channel
from forkserve.config.binds import parse_bind
from forkserve.spec import AppSpec

BODY = b"Hello, World!"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def spec_for(args: argparse.Namespace) -> AppSpec:
    return AppSpec(
        name="bench", revision="r1", module=args.app, binds=(parse_bind(f"127.0.0.1:{args.port}"),),
        workers=args.workers, worker_class=args.worker_class, worker_connections=1000, timeout=30.0,
        boot_timeout=30.0, graceful_timeout=5.0, max_requests=0, max_requests_jitter=0, max_surge=1,
        max_unavailable=0, keepalive=args.keepalive, backlog=2048, unix_socket_mode=0o660, chdir=None,
        pythonpath=(), env=(), limit_request_line=4094, limit_request_fields=100, limit_request_field_size=8190,
        access_log=args.access_log, error_log="-", log_level="info",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker-class", default="gevent", choices=["sync", "gevent"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--app", default="bench.quick_worker:hello")
    parser.add_argument("--keepalive", type=float, default=2.0)
    parser.add_argument("--access-log", default=None)
    args = parser.parse_args()
    spec = spec_for(args)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(2048)
    master_pid = os.getpid()
    pids = []
    for _ in range(args.workers):
        _master_end, worker_end, _region = channel.create()
        pid = os.fork()
        if pid == 0:
            try:
                from forkserve.workers.base import run

                run(spec, [listener], worker_end, master_pid)
            finally:
                os._exit(70)
        os.close(worker_end.write_fd)
        pids.append(pid)
    print(f"workers {pids} on 127.0.0.1:{args.port} ({args.worker_class})", flush=True)

    def stop(*_: object) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            os.waitpid(pid, 0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
