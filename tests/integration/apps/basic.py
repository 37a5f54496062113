"""Test apps for integration tests. Each answers with its pid so tests can tell workers apart."""

import os
import time

TAG = os.environ.get("TAG", "v1")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        if os.environ.get("MARK_DIR"):  # lets a test see that the request is in flight, without sleeping
            with open(os.path.join(os.environ["MARK_DIR"], f"slow-{os.getpid()}"), "w"):
                pass
        time.sleep(float(environ.get("QUERY_STRING") or "2"))
    elif path == "/hang":
        while True:  # never yields to anything: the worker stops heartbeating
            pass
    body = f"{TAG} pid={os.getpid()} path={path}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
