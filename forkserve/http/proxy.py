"""Trusted proxy headers: which peers may speak for the client, and what their forwarding headers change.

`TrustedPeers` is built once per worker from the app's `forwarded_allow_ips` (IPs, CIDRs, or "*"); a
connection asks it once, when it is accepted (the peer address is fixed for the connection's life). Unix-socket
peers are always trusted (as gunicorn does: only local processes that may open the socket reach it).

From a trusted peer, a request that carries any of `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
`X-Forwarded-Port` or `Forwarded` (RFC 7239) goes through `apply_forwarded`, which rewrites the environ:

    REMOTE_ADDR      the rightmost hop that is not itself a trusted proxy (X-Forwarded-For, or the `for=` of the
                     `Forwarded` elements), walking from the right: every proxy appends the address it received
                     from, so entries left of the first untrusted one may be forged by the client. When every hop
                     is trusted (as with "*"), the leftmost one: with "*" this is gunicorn's "first entry".
                     A hop that is not an IP address ("unknown", an obfuscated name, garbage) stops the walk and
                     REMOTE_ADDR stays the peer's. REMOTE_PORT becomes the hop's port when `Forwarded` gives one,
                     else "".
    wsgi.url_scheme  `X-Forwarded-Proto` (its rightmost value: the one the proxy in front of us set) or the
                     `proto=` of the chosen `Forwarded` element; "http" or "https", anything else -> 400; both
                     present and different -> 400 (a proxy chain that disagrees about the scheme is not guessed).
    HTTP_HOST        `X-Forwarded-Host` (rightmost value) or the chosen element's `host=` (`Forwarded` wins when
    SERVER_NAME      both are present); SERVER_NAME / SERVER_PORT follow from it (the port defaults to the
    SERVER_PORT      scheme's); `X-Forwarded-Port` sets SERVER_PORT and the port of HTTP_HOST (the request's own
                     Host when no host is forwarded); HTTP_HOST leaves out the scheme's default port. An invalid
                     authority or port -> 400.

From any other peer these headers stay plain HTTP_* entries and change nothing. A request without any of them
costs five dict lookups in parse.py (and none from an untrusted peer); nothing here runs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

FORWARD_KEYS = frozenset(("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                          "HTTP_X_FORWARDED_PORT", "HTTP_FORWARDED"))
TRUST_CACHE = 1024  # peer addresses whose trust decision is kept per worker
SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# RFC 3986 authority: reg-name (unreserved / pct-encoded / sub-delims) or an IP literal, then an optional port
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::([0-9]{1,5}))?")
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 7239 §4: forwarded-pair = token "=" value, value = token / quoted-string
_PAIR = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)=("(?:[^"\\]|\\.)*"|[!#$%&\'*+\-.^_`|~0-9A-Za-z:\[\]]*)\s*')
_IPV6_PORT = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForwardedError(ValueError):
    """A trusted peer sent forwarding headers that cannot be applied: the request gets 400."""


class TrustedPeers:
    """The app's `forwarded_allow_ips`, asked once per connection (and per hop of X-Forwarded-For)."""

    __slots__ = ("everyone", "known", "networks")

    def __init__(self, allow: Iterable[str]) -> None:
        allow = tuple(allow)
        self.everyone = "*" in allow
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(item.strip(), strict=False) for item in allow if item.strip() != "*")
        self.known: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        """`address` is REMOTE_ADDR as the connection has it: "" for a unix-socket peer (always trusted)."""
        known = self.known.get(address)
        if known is None:
            known = self._decide(address)
            if len(self.known) >= TRUST_CACHE:
                self.known.clear()
            self.known[address] = known
        return known

    def _decide(self, address: str) -> bool:
        if not address:
            return True
        if self.everyone:
            return True
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
        return any(ip in net for net in self.networks)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _rightmost(value: str) -> str:
    return value.rpartition(",")[2].strip()


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 §4: the elements of a Forwarded field (comma-separated), each a dict of lower-cased parameters."""
    elements: list[dict[str, str]] = []
    for element in _split_outside_quotes(value, ","):
        params: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            if not pair.strip():
                continue
            match = _PAIR.fullmatch(pair)
            if match is None:
                raise ForwardedError(f"malformed Forwarded pair {pair!r}")
            raw = match.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[match.group(1).lower()] = raw
        elements.append(params)
    return elements


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    parts, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _node(value: str) -> tuple[str, str] | None:
    """(IP, port) of a Forwarded `for=` node ("192.0.2.1", "192.0.2.1:80", "[2001:db8::1]:80"); None when it is
    "unknown", an obfuscated identifier or not an address."""
    match = _IPV6_PORT.fullmatch(value)
    if match is not None:
        ip, port = match.group(1), match.group(2) or ""
    else:
        ip, _, port = value.partition(":")
    return (ip, port) if _is_ip(ip) else None


def _choose_hop(hops: list[tuple[str, str] | None], peers: TrustedPeers) -> int:
    """Index of the client hop: from the right, the first one not trusted; the leftmost if all are; -1 when an
    entry that is not an address is met first (REMOTE_ADDR then stays the peer's)."""
    for i in range(len(hops) - 1, -1, -1):
        hop = hops[i]
        if hop is None:
            return -1
        if not peers.trusts(hop[0]):
            return i
    return 0 if hops else -1


def apply_forwarded(env: dict[str, Any], peers: TrustedPeers) -> None:
    """Rewrite `env` from the forwarding headers of a trusted peer (see the module docstring). Raises
    ForwardedError (-> 400) for a scheme conflict, an unknown scheme or a malformed value."""
    scheme, host = _apply_client(env, peers)
    xfp = env.get("HTTP_X_FORWARDED_PROTO")
    if xfp is not None:
        value = _rightmost(xfp).lower()
        if scheme is not None and scheme.lower() != value:
            raise ForwardedError(f"conflicting schemes: X-Forwarded-Proto {value!r}, Forwarded proto={scheme!r}")
        scheme = value
    if scheme is not None:
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise ForwardedError(f"unknown forwarded scheme {scheme!r}")
        env["wsgi.url_scheme"] = scheme
    if host is None:
        xfh = env.get("HTTP_X_FORWARDED_HOST")
        if xfh is not None:
            host = _rightmost(xfh)
    _apply_host(env, host)


def _apply_client(env: dict[str, Any], peers: TrustedPeers) -> tuple[str | None, str | None]:
    """REMOTE_ADDR / REMOTE_PORT from Forwarded (else X-Forwarded-For); (proto, host) of the chosen Forwarded
    element."""
    forwarded = env.get("HTTP_FORWARDED")
    if forwarded is not None:
        elements = parse_forwarded(forwarded)
        hops: list[tuple[str, str] | None] = [_node(e["for"]) if "for" in e else None for e in elements]
        index = _choose_hop(hops, peers)
        element = elements[index] if index >= 0 else elements[-1]
        hop = hops[index] if index >= 0 else None
        if hop is not None:
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = hop
        return element.get("proto"), element.get("host")
    xff = env.get("HTTP_X_FORWARDED_FOR")
    if xff is not None:
        entries = [entry.strip() for entry in xff.split(",")]
        index = _choose_hop([(entry, "") if _is_ip(entry) else None for entry in entries], peers)
        if index >= 0:
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = entries[index], ""
    return None, None


def _apply_host(env: dict[str, Any], host: str | None) -> None:
    """HTTP_HOST / SERVER_NAME / SERVER_PORT from the forwarded host and X-Forwarded-Port."""
    port = None
    xfport = env.get("HTTP_X_FORWARDED_PORT")
    if xfport is not None:
        port = _rightmost(xfport)
        if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
            raise ForwardedError(f"invalid X-Forwarded-Port {port!r}")
    if host is None and port is not None:
        host = env.get("HTTP_HOST")  # only the port is forwarded: the request's own Host gets it
    if host is not None:
        match = _AUTHORITY.fullmatch(host)
        if match is None or (match.group(2) is not None and not 0 < int(match.group(2)) < 65536):
            raise ForwardedError(f"invalid forwarded host {host!r}")
        name = match.group(1)
        default = _DEFAULT_PORTS.get(env["wsgi.url_scheme"])
        if port is None:
            port = match.group(2) or default or ""
        env["HTTP_HOST"] = name if port == default else f"{name}:{port}"
        env["SERVER_NAME"] = name.strip("[]")
        env["SERVER_PORT"] = port
    elif port is not None:
        env["SERVER_PORT"] = port
