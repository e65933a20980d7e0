"""The listening sockets of a server: the API port and the HTTP actions port.

A port that cannot be had is a :class:`~.settings.ConfigError` that says which
of the two it is, the option that sets it, and what holds it when that can be
found out: another Basalt server's API (it answers ``/version``), or the
process listening there (from ``/proc`` on Linux, for the user's own
processes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import urllib.request
from pathlib import Path
from typing import NamedTuple

from .settings import ConfigError

#: What each port is, and the option that sets it.
API = ("the API", "--port")
SITE = ("HTTP actions", "--site-port")


def listen(host: str, port: int, role: tuple[str, str]) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port) for ``role``
    (:data:`API` or :data:`SITE`)."""
    what, option = role
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r} (--host): {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(port)
            reason = f"the port is taken by {holder}" if holder else f"{reason} (another program)"
        raise ConfigError(
            f"cannot listen for {what} on {where}: {reason}; choose another port with {option}"
        ) from None
    sock.setblocking(False)
    return sock


class _Listener(NamedTuple):
    address: str
    port: int
    inode: str


def port_holder(port: int) -> str | None:
    """What listens on TCP ``port``, as far as can be found out:
    ``the API of the Basalt server at http://127.0.0.1:3210 (pid 123: basalt serve …)``."""
    listeners = _listeners()
    mine = [entry for entry in listeners if entry.port == port]
    if not mine:
        return _basalt_api(("127.0.0.1", port))
    pid, command = _owner({entry.inode for entry in mine})
    process = f"pid {pid}: {command}" if pid is not None else None
    api = _basalt_api((mine[0].address, port))
    if api is not None:
        return f"{api} ({process})" if process else api
    if pid is not None:
        inodes = _socket_inodes(pid)
        for other in listeners:  # the same process's API: this is its HTTP actions port
            if other.port != port and other.inode in inodes:
                found = _basalt_api((other.address, other.port))
                if found is not None:
                    return f"the HTTP actions of {found.removeprefix('the API of ')} ({process})"
    return process


def _basalt_api(address: tuple[str, int]) -> str | None:
    """``the API of the Basalt server at URL`` if a Basalt API answers there."""
    host = "127.0.0.1" if address[0] in ("0.0.0.0", "") else address[0]
    host = "::1" if host == "::" else host
    url = f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with direct.open(url + "/version", timeout=2) as response:
            text = response.read(200).decode(errors="replace")
    except (OSError, ValueError):
        return None
    is_basalt = text == "basalt" or text.startswith("basalt ")  # the version: admins only
    return f"the API of the Basalt server at {url}" if is_basalt else None


def _listeners() -> list[_Listener]:
    """The listening TCP sockets of this machine (Linux ``/proc/net``; else none)."""
    found = []
    for name, size in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, _, port = fields[1].partition(":")
            with contextlib.suppress(ValueError, OSError):
                raw = bytes.fromhex(address)
                # /proc shows each 32-bit word in host byte order (little-endian).
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if size == 4 else socket.AF_INET6
                found.append(_Listener(socket.inet_ntop(family, words), int(port, 16), fields[9]))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes


def _owner(inodes: set[str]) -> tuple[int | None, str]:
    """The process (of this user) that holds one of the sockets ``inodes``."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None, ""
    for pid in pids:
        if _socket_inodes(pid) & inodes:
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                raw = b""
            command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
            return pid, command[:120] or "?"
    return None, ""
