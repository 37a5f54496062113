"""Listening sockets: bind, adopt inherited ones (fd://N, systemd socket activation), close. OS calls.

Listeners are opened by the master and inherited by workers through fork; the master keeps its copy for as
long as any desired app names the bind, so an unchanged bind keeps the very same socket across every reload.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from forkserve.config.binds import BindAddress

SD_LISTEN_FDS_START = 3


class BindError(Exception):
    """A listener could not be opened; the message names the bind and what to do."""


@dataclass
class Listener:
    bind: BindAddress
    sock: socket.socket
    address: str  # the real address: port 0 resolved, "unix:/path", "fd://N (tcp://...)"
    owns_path: bool = False  # a unix socket file we created and must remove


def systemd_fds(environ: Mapping[str, str] | None = None) -> list[int]:
    """Sockets passed by systemd socket activation (LISTEN_PID/LISTEN_FDS), when meant for this process."""
    env = os.environ if environ is None else environ
    try:
        if int(env.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(0, count)))


def systemd_names(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """FileDescriptorName= of each activated socket -> fd (LISTEN_FDNAMES, colon-separated)."""
    env = os.environ if environ is None else environ
    fds = systemd_fds(env)
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    return {name: fd for name, fd in zip(names, fds, strict=False) if name}


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode(errors='replace')}"
    if sock.family == socket.AF_INET6:
        return f"tcp://[{name[0]}]:{name[1]}"
    return f"tcp://{name[0]}:{name[1]}"


def _same_address(sock: socket.socket, bind: BindAddress) -> bool:
    try:
        name = sock.getsockname()
    except OSError:
        return False
    if bind.kind == "unix":
        return sock.family == socket.AF_UNIX and name == bind.path
    if bind.kind != "tcp" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    return name[1] == bind.port and name[0] in (bind.host, socket.gethostbyname(bind.host) if not bind.is_ipv6 else "")


def _adopt(fd: int, bind: BindAddress) -> Listener:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise BindError(f"{bind}: file descriptor {fd} is not open (was it passed to forkserve?)") from None
    if not stat.S_ISSOCK(mode):
        raise BindError(f"{bind}: file descriptor {fd} is not a socket")
    sock = socket.socket(fileno=os.dup(fd))
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.close()
        raise BindError(f"{bind}: file descriptor {fd} is a socket but is not listening")
    return Listener(bind, sock, f"fd://{fd} ({describe(sock)})")


def adopt_listener(fd: int, bind: BindAddress) -> Listener:
    """Take over a listening socket the previous master handed over (`forkserve upgrade`): this fd itself, not a
    copy, made close-on-exec again; a unix socket's file is ours to remove when the bind goes."""
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    return Listener(bind, sock, describe(sock), owns_path=bind.kind == "unix")


def _tcp(bind: BindAddress, backlog: int) -> Listener:
    family = socket.AF_INET6 if bind.is_ipv6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(bind.host, bind.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"{bind}: cannot resolve {bind.host!r}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::]:80 and 0.0.0.0:80 are separate binds: keep IPv6 sockets IPv6-only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # accepted sockets inherit it on Linux: no Nagle stall on keep-alive responses
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(infos[0][4])
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_failure(bind, exc)) from None
    return Listener(bind, sock, describe(sock))


def _bind_failure(bind: BindAddress, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{bind}: address already in use (another process listens there; `ss -ltnp` shows which)"
    if exc.errno == errno.EACCES:
        return f"{bind}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{bind}: address not available on this host"
    return f"{bind}: {exc.strerror or exc}"


def _unix(bind: BindAddress, backlog: int, mode: int) -> Listener:
    path = bind.path
    problem = remove_stale_unix_socket(path)
    if problem:
        raise BindError(f"{bind}: {problem}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # created with the right mode, never chmod-ed after (no window)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_failure(bind, exc)) from None
    finally:
        os.umask(old_umask)
    return Listener(bind, sock, f"unix:{path}", owns_path=True)


def remove_stale_unix_socket(path: str) -> str | None:
    """Remove a socket file nobody listens on. Returns why the path cannot be used, or None when it can."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} exists and is not a socket; refusing to replace it"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: left by a process that is gone
        return None
    except OSError as exc:
        return f"cannot check the existing socket file {path}: {exc.strerror}"
    finally:
        probe.close()
    return f"another process is already listening on {path}"


def open_listener(bind: BindAddress, backlog: int, unix_mode: int, inherited: list[int] | None = None) -> Listener:
    """Bind (or adopt) one listener. Systemd-activated sockets whose address matches the bind are adopted."""
    if bind.kind == "fd":
        return _adopt(bind.fd, bind)
    for fd in inherited or []:
        with contextlib.suppress(OSError):
            probe = socket.socket(fileno=os.dup(fd))
            matches = _same_address(probe, bind)
            probe.close()
            if matches:
                return _adopt(fd, bind)
    if bind.kind == "unix":
        return _unix(bind, backlog, unix_mode)
    return _tcp(bind, backlog)


def close_listener(listener: Listener) -> None:
    listener.sock.close()
    if listener.owns_path:
        with contextlib.suppress(OSError):
            os.unlink(listener.bind.path)
