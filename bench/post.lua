-- wrk script for the post64k scenario: every request is a POST with a 64 KB body.
-- wrk.format() adds the Content-Length header because a body is set.
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
