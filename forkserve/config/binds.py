"""Bind strings -> `BindAddress` values. Pure: no sockets are opened here.

Accepted spellings (the canonical one is what `canonical_bind` returns):
    HOST:PORT, tcp://HOST:PORT     -> "tcp://HOST:PORT"   (HOST a name, an IPv4 address, or "" / "*" for all)
    [IPv6]:PORT, tcp://[IPv6]:PORT -> "tcp://[ADDR]:PORT" (ADDR compressed, as ipaddress prints it)
    unix:PATH                      -> "unix:PATH"
    fd://N                         -> "fd://N"            (an inherited, already listening socket)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


@dataclass(frozen=True, order=True)
class BindAddress:
    kind: Literal["tcp", "unix", "fd"]
    host: str = ""  # tcp: "" means every address (IPv4 0.0.0.0); IPv6 literals without brackets
    port: int = 0
    path: str = ""  # unix
    fd: int = -1  # fd
    scope: str = ""  # port 0 means "a port of my own": the app's name keeps two apps' ephemeral binds apart

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"tcp://{host}:{self.port}"


def _port(text: str, original: str) -> int:
    if not _PORT_RE.match(text):
        raise ValueError(f"bind {original!r}: port must be 0..65535 in ASCII digits, found {text!r}")
    value = int(text)
    if value > 65535:
        raise ValueError(f"bind {original!r}: port must be 0..65535, found {value}")
    return value


def _tcp(rest: str, original: str) -> BindAddress:
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"bind {original!r}: an IPv6 bind is written [ADDRESS]:PORT")
        import ipaddress  # only for IPv6 binds: the master parses binds on the start-up critical path

        try:
            addr = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bind {original!r}: {host!r} is not an IPv6 address") from None
        return BindAddress("tcp", host=addr.compressed, port=_port(port, original))
    host, sep, port = rest.rpartition(":")
    if not sep:
        raise ValueError(f"bind {original!r}: expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
    if ":" in host:
        raise ValueError(f"bind {original!r}: write IPv6 addresses in brackets, as [{host}]:{port}")
    if host in ("", "*", "0.0.0.0"):
        host = "0.0.0.0"
    elif not _HOST_RE.match(host):
        raise ValueError(f"bind {original!r}: {host!r} is not a host name or IPv4 address")
    return BindAddress("tcp", host=host, port=_port(port, original))


def parse_bind(text: str) -> BindAddress:
    """Parse one bind string; raises ValueError with a message that quotes it."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ValueError(f"bind {text!r}: must be a non-empty string without surrounding spaces")
    if "\0" in text:
        raise ValueError(f"bind {text!r}: contains a NUL character")
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"bind {text!r}: unix: needs a path")
        if len(path.encode()) > 107:
            raise ValueError(f"bind {text!r}: unix socket paths are limited to 107 bytes")
        return BindAddress("unix", path=path)
    if text.startswith("fd://"):
        digits = text[5:]
        if not re.match(r"^[0-9]{1,6}$", digits):
            raise ValueError(f"bind {text!r}: fd://N needs a file descriptor number")
        return BindAddress("fd", fd=int(digits))
    if text.startswith("tcp://"):
        return _tcp(text[6:], text)
    return _tcp(text, text)


def canonical_bind(text: str) -> str:
    return str(parse_bind(text))


def binds_overlap(a: BindAddress, b: BindAddress) -> bool:
    """True when two binds would compete for the same socket (same port on a wildcard and a specific address)."""
    if a.kind != b.kind:
        return False
    if a.kind == "unix":
        return a.path == b.path
    if a.kind == "fd":
        return a.fd == b.fd
    if a.port != b.port or a.port == 0:
        return False
    if a.host == b.host:
        return True
    wild = {"0.0.0.0", "::"}
    same_family = a.is_ipv6 == b.is_ipv6
    return same_family and (a.host in wild or b.host in wild)
