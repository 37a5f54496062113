"""httptools (llhttp) callbacks that turn bytes into queued requests, with forkserve's limits.

One `RequestParser` per connection. `feed(data)` runs llhttp over a whole recv() buffer; every request whose
header block completes is appended to `requests` as (environ, keep_alive, wsgi.input), in order, so pipelined
requests are answered in order. Body bytes go to the wsgi.input of the request being parsed (`current`).

The environ is built directly in the callbacks (one dict copy of the per-listener base, one store per header).
Limits (gunicorn's meaning):
    request target longer than limit_request_line          -> 414
    more than limit_request_fields header fields           -> 431
    a header field line ("name: value" + CRLF) > limit_request_field_size -> 431
    a header block that keeps growing past what the limits allow    -> 431 (bounds the parser's own buffers)
    a Content-Length above limit_request_body (0: no limit)          -> 413 before any body byte is read
    a chunked body whose decoded size passes limit_request_body      -> 413 (the app never gets the bytes past it)
Forwarding headers (X-Forwarded-*, Forwarded) of a request from a trusted peer (`trusted`, decided once per
connection) rewrite the environ through `forkserve.http.proxy`; a conflict or a malformed value -> 400. Checked
only when one of them is present: five dict lookups per request from a trusted peer, none from others.
Checks after llhttp's callbacks (RFC 9110/9112; the app is not called, the connection closes):
    a version other than HTTP/1.0 and HTTP/1.1                                        -> 505 (RFC 9110 §15.6.6)
    HTTP/1.1 without Host; two Host or two Content-Type fields                        -> 400 (RFC 9112 §3.2, 9110 §5.3)
    Transfer-Encoding in HTTP/1.0                                                     -> 400 (RFC 9112 §6.1)
    Host, Content-Length, Transfer-Encoding, TE, Authorization in a trailer          -> 400 (RFC 9110 §6.5.1)
    "*" with a method other than OPTIONS, "host:port" other than with CONNECT         -> 400 (RFC 9112 §3.2.3-4)
A method llhttp does not know (it has a fixed list) but that is a token (RFC 9110 §9.1) is accepted: the request is
parsed again with a placeholder method and given the real one (only requests with such a method pay for it),
when it starts a read or follows one that ended in LF (so that no part of it is already inside llhttp); one that
is pipelined behind another request in the same read gets 400.
CONNECT host:port reaches the app (RAW_URI "host:port", PATH_INFO ""); the connection closes after the answer, as
no tunnel is offered. OPTIONS * reaches the app with PATH_INFO "*". Chunk sizes may be followed by spaces (BWS).
Anything llhttp rejects (bad syntax, CL+TE, "+5", duplicate Content-Length, unknown Transfer-Encoding, bad chunk
framing, bare LF) -> 400. After an error the parser is dead: the connection answers what was queued before it,
then the error, then closes.

Header names containing "_" are dropped: HTTP_X_FOO must not be spoofable by sending "X_Foo" next to "X-Foo".

Decoded header names, methods and request targets are cached in a `ParseCache` that the worker's `Context` owns
and every parser of that worker shares (a dict lookup instead of decoding); no module-level state.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from forkserve.http.body import EMPTY, InputStream
from forkserve.http.proxy import FORWARD_KEYS, ForwardedError, TrustedPeers, apply_forwarded

REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

URLS_CACHE = 1024  # request targets whose split and decoded form is kept
KEYS_CACHE = 2048  # raw header names whose environ key is kept
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}  # any other version -> 505 (RFC 9110 §15.6.6)
# RFC 9110 §5.3: fields whose value is a single member: a second field line cannot be combined -> 400
SINGLETONS = frozenset(("HTTP_HOST", "CONTENT_TYPE"))
# RFC 9110 §6.5.1: a trailer must not carry fields that frame, route, authenticate or modify the request -> 400
# (gunicorn's list less "Trailer", which names trailers and is harmless where it stands)
FORBIDDEN_TRAILERS = frozenset((b"host", b"content-length", b"transfer-encoding", b"authorization", b"te"))
# RFC 9110 §5.6.2: tchar; a method is a token (§9.1), any token
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
PLACEHOLDER = b"GET"  # what llhttp is shown instead of a method it does not know (framing does not depend on it)


class ParseCache:
    """What the parser has already decoded, kept per worker (bounded) and shared by its connections: clients
    send the same header names, methods and request targets again and again."""

    __slots__ = ("keys", "methods", "urls")

    def __init__(self) -> None:
        self.keys: dict[bytes, str] = {}  # raw header name -> environ key ("" = dropped)
        self.methods: dict[bytes, str] = {}
        self.urls: dict[bytes, tuple[str, str, str]] = {}

    def environ_key(self, name: bytes) -> str:
        key = self.keys.get(name)
        if key is None:
            key = environ_key(name)
            if len(self.keys) < KEYS_CACHE:
                self.keys[name] = key
        return key

    def method(self, raw: bytes) -> str:
        text = raw.decode("ascii")
        self.methods[raw] = text  # llhttp accepts a fixed set of methods: bounded
        return text

    def split_url(self, url: bytes) -> tuple[str, str, str]:
        entry = split_url(url)
        if len(self.urls) >= URLS_CACHE:
            self.urls.clear()
        self.urls[url] = entry
        return entry


def environ_key(name: bytes) -> str:
    """The environ key of a header name: HTTP_<NAME>, CONTENT_TYPE / CONTENT_LENGTH, "" for a name with "_"."""
    text = name.decode("latin-1").upper()
    if "_" in text:
        return ""
    key = text.replace("-", "_")
    return key if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH" else "HTTP_" + key


class ParseError(Exception):
    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"{status} {REASONS.get(status, '')}: {detail}")
        self.status = status


class RequestParser:
    __slots__ = ("_parser", "base", "cache", "chunk_left", "conn", "current", "env", "error", "failed_stream",
                 "fed", "limit_body", "limit_field", "limit_fields", "limit_header_bytes", "limit_line", "nfields",
                 "peers", "requests", "stash", "tail", "trusted", "upgraded", "url")

    def __init__(self, conn: Any, base: dict[str, Any], limit_line: int, limit_fields: int,
                 limit_field: int, cache: ParseCache, limit_body: int = 0, peers: TrustedPeers | None = None,
                 ) -> None:
        self.conn = conn
        self.base = base
        self.cache = cache
        self.limit_line = limit_line
        self.limit_fields = limit_fields
        self.limit_field = limit_field
        self.limit_header_bytes = limit_line + 4 + limit_fields * (limit_field + 2) + 2
        self.limit_body = limit_body  # 0: no limit
        self.chunk_left = -1  # decoded chunked-body bytes the current request may still send (-1: not counted)
        self.peers = peers
        # the peer may set REMOTE_ADDR / scheme / host through forwarding headers: decided once per connection
        self.trusted = peers is not None and peers.trusts(base.get("REMOTE_ADDR", ""))
        self.requests: deque[tuple[dict[str, Any], bool, Any]] = deque()
        self.current: Any = None  # wsgi.input receiving body bytes (None between messages)
        self.env: dict[str, Any] | None = None  # environ under construction
        self.url = b""
        self.nfields = 0
        self.fed = 0  # bytes fed while a header block is incomplete
        self.error: ParseError | None = None  # set once: the parser is dead
        self.upgraded = False  # an Upgrade/CONNECT request: serve what is queued, then close
        self.failed_stream: Any = None  # wsgi.input of a queued request whose body was malformed
        self.stash = b""  # the start of an unknown method whose end has not arrived yet
        self.tail = 10  # the last byte fed: LF when the bytes fed so far may end at a request's end
        self._parser = httptools.HttpRequestParser(self)

    @property
    def idle(self) -> bool:
        """No partial request buffered: closing now loses nothing the client sent."""
        return self.env is None and self.current is None and not self.requests

    def feed(self, data: bytes) -> None:
        if self.error is not None or self.upgraded:
            return
        if self.stash:
            data = self.stash + data
            self.stash = b""
        tail = self.tail  # LF: the previous read may have ended at a request's end (not inside a method token)
        self.tail = data[-1]
        if self.current is None:  # inside (or before) a header block: bound the bytes llhttp buffers for us
            fed = self.fed + len(data)
            if fed > self.limit_header_bytes:
                self._fail(ParseError(431, "header block too large"))
                return
            self.fed = fed
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True  # not supported: the request is answered as plain HTTP, then we close
            if self.current is not None:  # the upgrade request's body will not be read as HTTP
                self.current.complete = True
                self.current = None
        except httptools.HttpParserInvalidMethodError:
            # data starts the request: nothing before it in this read (all of it counted as header bytes, no request
            # queued) and no part of it in the previous one
            boundary = tail == 10 and self.fed == len(data) and not self.requests and self.current is None
            renamed = unknown_method(data) if boundary else None
            if renamed is None and boundary and len(data) < 64 and _TCHAR.issuperset(data):
                self.stash = data  # an unknown method cut short: wait for the rest of the request line
                self.fed = 0
                self.tail = 10
                self._parser = httptools.HttpRequestParser(self)
                return
            if renamed is None:
                self._fail(ParseError(400, "invalid method"))
                return
            self.fed = 0
            self.tail = 10
            self._parser = httptools.HttpRequestParser(Renamed(self, renamed[0]))
            self.feed(renamed[1])
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, ParseError) else ParseError(400, str(exc)))

    def _fail(self, error: ParseError) -> None:
        self.error = error
        self.failed_stream = self.current
        if self.current is not None:
            self.current.complete = True  # the app reading it sees the end; the connection closes
            self.current = None
        self.env = None

    # -- llhttp callbacks (hot path) --

    def on_url(self, url: bytes) -> None:
        if self.env is None:
            self.env = self.base.copy()
            self.url = url
            self.nfields = 0
        else:
            self.url += url
        # "METHOD SP url SP HTTP/1.1" must fit in limit_request_line
        size = len(self.url)
        if size + 20 > self.limit_line and len(self._parser.get_method()) + size + 10 > self.limit_line:
            raise ParseError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.nfields += 1
        if self.nfields > self.limit_fields:
            raise ParseError(431, "too many header fields")
        if len(name) + len(value) + 4 > self.limit_field:  # "name: value\r\n", as gunicorn counts it
            raise ParseError(431, "header field too large")
        env = self.env
        if env is None:  # a trailer field of a chunked body: not passed to the app (WSGI has no place for it)
            if name.lower() in FORBIDDEN_TRAILERS:
                raise ParseError(400, "framing or routing field in a trailer")
            return
        key = self.cache.keys.get(name)
        if key is None:
            key = self.cache.environ_key(name)
        if key:
            text = value.decode("latin-1")
            if key in env:
                if key in SINGLETONS:
                    raise ParseError(400, "field that may appear once appears twice")
                env[key] += "," + text
            else:
                env[key] = text

    def on_headers_complete(self) -> None:
        env = self.env
        assert env is not None
        self.env = None
        version = self._parser.get_http_version()
        protocol = _PROTOCOLS.get(version)
        if protocol is None:
            raise ParseError(505, "HTTP version")
        if version == "1.1" and "HTTP_HOST" not in env:
            raise ParseError(400, "no Host")
        self.fed = 0
        parser = self._parser
        cache = self.cache
        url = self.url
        method = parser.get_method()
        env["REQUEST_METHOD"] = name = cache.methods.get(method) or cache.method(method)
        env["SERVER_PROTOCOL"] = protocol
        if url[:1] != b"/":
            check_target(name, url)
        env["RAW_URI"], env["PATH_INFO"], env["QUERY_STRING"] = cache.urls.get(url) or cache.split_url(url)
        if self.trusted and not env.keys().isdisjoint(FORWARD_KEYS):  # 5 lookups (the shorter side)
            try:
                apply_forwarded(env, self.peers)  # type: ignore[arg-type]
            except ForwardedError as exc:
                raise ParseError(400, str(exc)) from None
        length = env.get("CONTENT_LENGTH")
        if (length is None or length == "0") and "HTTP_TRANSFER_ENCODING" not in env:
            stream: Any = EMPTY
        else:
            limit = self.limit_body
            if "HTTP_TRANSFER_ENCODING" in env:
                if version == "1.0":  # RFC 9112 §6.1: faulty framing
                    raise ParseError(400, "Transfer-Encoding in HTTP/1.0")
                parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)  # BWS, RFC 9112 §7.1.1
                self.chunk_left = limit if limit else -1
            else:
                self.chunk_left = -1
                if limit and int(length) > limit:  # type: ignore[arg-type]  # llhttp checked its syntax
                    raise ParseError(413, "Content-Length above limit_request_body")
            expect = env.get("HTTP_EXPECT")
            stream = InputStream(self.conn, expect is not None and expect.lower() == "100-continue"
                                 and version == "1.1")
        env["wsgi.input"] = stream
        self.current = stream
        self.requests.append((env, parser.should_keep_alive(), stream))

    def on_body(self, body: bytes) -> None:
        stream = self.current
        left = self.chunk_left
        if left >= 0:  # a chunked body under limit_request_body
            left -= len(body)
            if left < 0:
                raise ParseError(413, "chunked body above limit_request_body")
            self.chunk_left = left
        if not stream.discard:
            stream.buf += body

    def on_message_complete(self) -> None:
        stream = self.current
        if stream is not EMPTY:
            stream.complete = True
        self.current = None


def split_url(url: bytes) -> tuple[str, str, str]:
    """(RAW_URI, PATH_INFO, QUERY_STRING) of a request target."""
    if url[:1] == b"/":
        path, _, query = url.partition(b"?")
        if b"#" in url:
            path = path.partition(b"#")[0]
            query = query.partition(b"#")[0]
    elif url == b"*":  # asterisk-form: PATH_INFO "*", as gunicorn gives it
        path, query = b"*", b""
    elif b"/" not in url:  # authority-form (CONNECT, see check_target): no path
        path, query = b"", b""
    else:  # absolute-form (a proxy request): keep path and query
        parsed = httptools.parse_url(url)
        path, query = parsed.path or b"/", parsed.query or b""
    if b"%" in path:
        path = unquote_to_bytes(path)
    return url.decode("latin-1"), path.decode("latin-1"), query.decode("latin-1")


def check_target(method: str, url: bytes) -> None:
    """The request-target forms of RFC 9112 §3.2 that depend on the method (targets not starting with "/")."""
    if url == b"*":
        if method != "OPTIONS":
            raise ParseError(400, "asterisk-form with a method other than OPTIONS")  # RFC 9112 §3.2.4
    elif b"/" not in url and method != "CONNECT":  # authority-form: only with CONNECT (RFC 9112 §3.2.3)
        raise ParseError(400, "authority-form with a method other than CONNECT")


def unknown_method(data: bytes) -> tuple[str, bytes] | None:
    """(method, the request with PLACEHOLDER as its method) when `data` starts with a request line whose method is
    a token llhttp does not know (RFC 9110 §9.1: any token is a method); None when it is not a token."""
    end = data.find(b" ")
    if end <= 0 or not _TCHAR.issuperset(data[:end]):
        return None
    return data[:end].decode("ascii"), PLACEHOLDER + data[end:]


class Renamed:
    """llhttp's callbacks for a parser fed a request whose unknown method was replaced by PLACEHOLDER: the first
    request's REQUEST_METHOD is set back to the real method; the rest go straight to the RequestParser."""

    __slots__ = ("method", "on_body", "on_header", "on_message_complete", "on_url", "parser")

    def __init__(self, parser: RequestParser, method: str) -> None:
        self.parser = parser
        self.method = method
        self.on_url = parser.on_url
        self.on_header = parser.on_header
        self.on_body = parser.on_body
        self.on_message_complete = parser.on_message_complete

    def on_headers_complete(self) -> None:
        parser = self.parser
        parser.on_headers_complete()
        if self.method:
            parser.requests[-1][0]["REQUEST_METHOD"] = self.method
            self.method = ""
