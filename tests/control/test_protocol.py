"""Control protocol framing: pure encode/decode and the fixed command table."""

from __future__ import annotations

import struct

import pytest

from forkserve.control import protocol
from forkserve.control.protocol import Decoder, ProtocolError, Request, encode, parse_request


def test_round_trip_byte_by_byte() -> None:
    frames = encode({"command": "status"}) + encode({"command": "plan", "path": "/s.toml", "text": "é\n"})
    assert frames[:4] == b"\x00\x00\x00\x14"
    decoder = Decoder()
    got = []
    for i in range(len(frames)):
        got += decoder.feed(frames[i:i + 1])
    assert got == [{"command": "status"}, {"command": "plan", "path": "/s.toml", "text": "é\n"}]
    assert decoder.pending == 0


def test_oversized_frame_is_refused_from_its_header() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        Decoder().feed(struct.pack(">I", protocol.MAX_FRAME + 1))
    with pytest.raises(ProtocolError):
        encode({"text": "x" * (protocol.MAX_FRAME + 1)})


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"{not json", b"[1, 2]", b'"status"', b"NaN"])
def test_garbage_payloads(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(struct.pack(">I", len(payload)) + payload)


@pytest.mark.parametrize(("message", "expected"), [
    ({"command": "status"}, Request("status")),
    ({"command": "reload"}, Request("reload")),
    ({"command": "reload", "apps": ["web", "api"]}, Request("reload", apps=("web", "api"))),
    ({"command": "stop"}, Request("stop", fast=False)),
    ({"command": "stop", "fast": True}, Request("stop", fast=True)),
    ({"command": "plan", "path": "/a", "text": "x"}, Request("plan", path="/a", text="x")),
])
def test_the_command_table(message: dict[str, object], expected: Request) -> None:
    assert parse_request(message) == expected
    assert parse_request(expected.to_message()) == expected


@pytest.mark.parametrize(("message", "error"), [
    ({}, "unknown command"),
    ({"command": "__class__"}, "unknown command '__class__'"),
    ({"command": "restart"}, "known: plan, reload, status, stop, upgrade"),
    ({"command": 3}, "unknown command"),
    ({"command": "stop", "fast": 1}, "must be a bool"),
    ({"command": "stop", "fats": True}, "unexpected argument"),
    ({"command": "plan", "path": "/a"}, "missing argument 'text'"),
    ({"command": "plan", "path": 1, "text": ""}, "must be a str"),
    ({"command": "status", "verbose": True}, "unexpected argument"),
    ({"command": "reload", "apps": "web"}, "must be a list"),
    ({"command": "reload", "apps": ["web", 3]}, "list of at most"),
    ({"command": "reload", "apps": [""]}, "list of at most"),
    ({"command": "reload", "apps": ["x"] * 1001}, "list of at most"),
])
def test_bad_requests(message: dict[str, object], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_request(message)
