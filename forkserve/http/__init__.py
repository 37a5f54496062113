"""The request path shared by every worker class: parse, build the PEP 3333 environ, call the app, write.

Modules:
    context     the per-worker `Context` (app, limits, counters, caches, clock) and the per-listener environ
    parse       httptools (llhttp) callbacks -> queued (environ, keep_alive, wsgi.input) per request; limits
    body        wsgi.input: the request body read lazily from the socket as the app reads it (bounded memory)
    response    status lines, header blocks and their per-worker cache, the Date header's clock, file_wrapper
    writer      one response: start_response, framing, list / iterable / sendfile bodies, socket writes
    connection  the per-connection loop: pipelined requests in order, keep-alive, 100-continue, HEAD, errors
    accesslog   the buffered access log
    proxy       trusted peers (`forwarded_allow_ips`) and what their X-Forwarded-* / Forwarded headers set
No module keeps state of its own: what the request path caches belongs to the worker's `Context`.

Why httptools (llhttp, the parser of Node.js) and not gevent.pywsgi's parser or a hand-written one:
    * strict where it matters for request smuggling: it rejects Content-Length together with Transfer-Encoding,
      an unknown or non-final Transfer-Encoding, a signed or otherwise malformed Content-Length ("+5"), and
      duplicate Content-Length headers, bad chunk sizes and bare LF line endings. gevent.pywsgi falls back to
      Content-Length for an unknown Transfer-Encoding, accepts "+5", takes the first of duplicate lengths and
      keeps the connection open after CL+TE: each of those is a desync between a proxy and the server.
    * fast: the state machine is C, it is fed whole recv() buffers (pipelined requests parse in one call), and
      it never copies the body: chunked decoding happens in C and we get the payload slices.
    * well kept: llhttp is maintained by the Node.js project and fuzzed; httptools is maintained by MagicStack
      (uvloop/uvicorn) and ships wheels.
    What it does not do, we do in `parse`: the request-line / header-count / header-size limits (414 / 431), the
    HTTP_* environ mapping, a bound on the bytes fed while a header block is incomplete, the RFC 9110/9112 rules it
    leaves to its user (versions -> 505, Host, fields that appear once, forbidden trailers, request-target forms,
    Transfer-Encoding in HTTP/1.0 -> 400), and methods outside its fixed list (parsed again with a placeholder).
"""
