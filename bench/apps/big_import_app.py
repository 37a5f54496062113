"""An app that imports something large (pydantic with its core, and PyYAML) before serving: the preload case."""

import pydantic  # noqa: F401
import yaml  # noqa: F401

BODY = b"big"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
