"""A test app whose `/crash` request kills the worker serving it: `/crash?exit` calls os._exit(1),
`/crash?segv` sends the process SIGSEGV (as a segfault in a C extension would). Any other path answers its pid."""

import os
import signal


def app(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        if environ.get("QUERY_STRING") == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(1)
    body = f"pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
