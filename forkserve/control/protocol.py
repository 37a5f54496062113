"""The control socket's wire format: framed JSON. Pure: bytes in, values out; no sockets here.

Framing
-------
Every message, in either direction, is one frame::

    +----------------------+-------------------------------------+
    | length: 4 bytes,     | payload: `length` bytes of UTF-8    |
    | unsigned big-endian  | JSON; the top level is an object    |
    +----------------------+-------------------------------------+

`length` counts the payload only and is at most `MAX_FRAME` (4 MiB: a 1 MiB site file sent by `plan`, even
with every byte escaped as JSON, fits). A peer that announces more, sends a payload that is not UTF-8 JSON, or
whose top level is not an object gets one error reply and the connection is closed.

Requests (client -> master); a fixed set of commands, each with a fixed set of arguments::

    {"command": "status"}
    {"command": "reload", "apps": ["web"]}       # apps: optional; the apps whose code to roll (default: all)
    {"command": "stop", "fast": false}
    {"command": "upgrade"}                       # re-execute with the installed forkserve (see master/upgrade.py)
    {"command": "plan", "path": "/srv/site.toml", "text": "<the file's content>"}

`fast` defaults to false. `plan` carries the file's content (the client reads it, so the master never opens
a path a client names) and its path (for diagnostics and to resolve relative paths in it). Unknown commands,
unknown or mistyped arguments are errors. Any other key in a request is an error too (a typo must not be
silently ignored).

Replies (master -> client), exactly one per request, in order::

    {"ok": true, "result": {...}}
    {"ok": false, "error": "unknown command 'restart' (known: plan, reload, status, stop)"}

The `result` of each command is described in `forkserve/control/client.py`: `status`, the document of
`forkserve/status.py`; `reload`, {"result": "<the master's result line>", "outcome": "applied", "revision":
"...", "rolled": ["web"]} (`forkserve.outcomes.ReloadOutcome.to_wire`); `stop`, {"stopping": true, "fast":
bool}; `upgrade`, {"upgrading": true, "pid": N} once the installed code has checked the site (the reply is sent
before the exec); `plan`, see `forkserve/control/planning.py`.

Example, bytes on the wire for a status request::

    b'\\x00\\x00\\x00\\x14{"command":"status"}'
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

MAX_FRAME = 4 * 1024 * 1024
MAX_LIST = 1000  # names in a list argument (`reload`'s apps)
HEADER = struct.Struct(">I")

# The whole command set: name -> {argument: (type, required)}. Nothing is looked up by name elsewhere.
COMMANDS: dict[str, dict[str, tuple[type, bool]]] = {
    "status": {},
    "reload": {"apps": (list, False)},
    "stop": {"fast": (bool, False)},
    "upgrade": {},
    "plan": {"path": (str, True), "text": (str, True)},
}


class ProtocolError(Exception):
    """A malformed frame or request; the message is safe to send back to the peer."""


@dataclass(frozen=True)
class Request:
    command: str
    fast: bool = False
    path: str = ""
    text: str = ""
    apps: tuple[str, ...] = ()

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"command": self.command}
        if self.command == "reload" and self.apps:
            message["apps"] = list(self.apps)
        elif self.command == "stop":
            message["fast"] = self.fast
        elif self.command == "plan":
            message["path"] = self.path
            message["text"] = self.text
        return message


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding `message`. Raises ProtocolError when it would exceed MAX_FRAME."""
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"frame must hold a JSON object, not {type(message).__name__}")
    return message


class Decoder:
    """Incremental frame decoder: feed bytes as they arrive, take whole messages out.

    Rejects an oversized frame as soon as its header is seen, so a peer cannot make us buffer it.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not form a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")
            if len(self._buffer) < HEADER.size + length:
                break
            payload = bytes(self._buffer[HEADER.size:HEADER.size + length])
            del self._buffer[:HEADER.size + length]
            messages.append(decode_payload(payload))
        return messages


def parse_request(message: dict[str, Any]) -> Request:
    """Validate a decoded request against COMMANDS."""
    command = message.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        shown = repr(command) if isinstance(command, str) else "missing or not a string"
        raise ProtocolError(f"unknown command {shown} (known: {known})")
    spec = COMMANDS[command]
    extra = sorted(k for k in message if k != "command" and k not in spec)
    if extra:
        raise ProtocolError(f"{command}: unexpected argument(s) {', '.join(extra)}")
    args: dict[str, Any] = {}
    for name, (kind, required) in spec.items():
        if name not in message:
            if required:
                raise ProtocolError(f"{command}: missing argument {name!r}")
            continue
        value = message[name]
        if type(value) is not kind:  # exact: true is not an int, 1 is not a bool
            raise ProtocolError(f"{command}: argument {name!r} must be a {kind.__name__}")
        if isinstance(value, list):
            if len(value) > MAX_LIST or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in value):
                raise ProtocolError(f"{command}: argument {name!r} must be a list of at most {MAX_LIST} names")
            value = tuple(value)
        args[name] = value
    return Request(command, **args)


def ok(result: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}
