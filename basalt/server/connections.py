"""Limits on what an HTTP client may hold on either port: header bytes, the
time to send them, idle bodies and stalled readers, and the number of
connections.

uvicorn's httptools protocol buffers a request's head without limit and
waits for it for ever; a few clients sending endless headers, or thousands
that connect and send nothing, took memory and every file descriptor. The
protocol class here (:func:`limited_protocol`, passed to ``uvicorn.Config``
as ``http=``) adds, per connection:

- **head size**: the request line and headers may take
  :attr:`ConnectionLimits.max_head_bytes` bytes (``BASALT_MAX_HEADER_BYTES``)
  and :data:`MAX_HEADER_FIELDS` fields; past that the answer is ``431
  Request Header Fields Too Large`` and the connection closes. No more than
  the limit plus one read is ever buffered.
- **head time**: a request's head must be complete within
  :attr:`ConnectionLimits.header_timeout` seconds of its first byte (or of
  the connection; ``BASALT_HEADER_TIMEOUT``), else ``408`` and close.
- **idle keep-alive**: uvicorn's own ``timeout_keep_alive``
  (:data:`KEEP_ALIVE_TIMEOUT`) closes a connection idle between requests.
- **body rate**: a request body that brings fewer than :data:`MIN_BODY_BYTES`
  in :data:`BODY_IDLE_TIMEOUT` seconds (while the app waits for it) closes the
  connection; so does the rest of a body still arriving after its answer was
  sent, past :data:`BODY_LINGER_SECONDS` or :data:`BODY_LINGER_BYTES`.
- **pipelining**: at most :data:`MAX_PIPELINED` requests may wait behind the
  one being answered; a client that sends more is disconnected.
- **stalled reader**: a client that reads none of its response for
  :data:`SEND_STALL_TIMEOUT` seconds is disconnected.

And per process (:class:`ConnectionGuard`, shared by both ports): at most
:attr:`ConnectionLimits.max_connections` open connections
(``BASALT_MAX_CONNECTIONS``, never more than the file-descriptor limit allows,
see :func:`raise_open_file_limit`). A new connection over the limit closes
the connection idle the longest (one waiting for its first request, sending
its head, or idle between requests); when every connection is busy, it closes
one of the client address that holds the most connections, unless that is the
newcomer's own address, which is then refused. So neither a crowd of idle or
half-open connections nor one client's slow requests and silent WebSockets
can keep out a client that is about to send a request. (Behind a reverse
proxy every client has the proxy's address: limit connections per client
there.)

Request bodies held in memory are bounded per process by
:mod:`.body_budget` (``BASALT_REQUEST_BODIES_MB``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .body_budget import MAX_BODY_BYTES_HELD

log = logging.getLogger("basalt.server")

#: Bytes the request line and headers of one request may take. nginx allows
#: four 8 KB buffers; browsers' cookies and a JWT in ``Authorization`` fit easily.
MAX_HEAD_BYTES = 32 * 1024
#: Header fields one request may have (as hyper, Convex's HTTP server, allows).
MAX_HEADER_FIELDS = 100
#: Seconds a client has to send a request's head, from its first byte (or from
#: connecting, for the first request).
HEADER_TIMEOUT = 10.0
#: Seconds a connection may sit idle between requests.
KEEP_ALIVE_TIMEOUT = 5
#: Seconds of a body check: a request body that brings fewer than
#: :data:`MIN_BODY_BYTES` in that time, while the app waits for it, is cut off.
BODY_IDLE_TIMEOUT = 60.0
#: Bytes a request body must bring per :data:`BODY_IDLE_TIMEOUT` while it is read.
MIN_BODY_BYTES = 1024
#: Requests one connection may send ahead of their answers (HTTP pipelining).
MAX_PIPELINED = 16
#: Seconds a client may leave its response unread before it is disconnected.
SEND_STALL_TIMEOUT = 60.0
#: Open connections per process (both ports), at most.
MAX_CONNECTIONS = 10_000
#: File descriptors kept for everything but client connections (database,
#: blobs, the app's own files and sockets).
FD_RESERVE = 256
#: Seconds the guard's count of connections per address may be old.
ADDRESS_COUNT_SECONDS = 1.0
#: Seconds, and bytes, of a refused client's further sending that are read and
#: dropped, so that it gets the 4xx answer rather than a reset; past either
#: the connection is dropped.
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024
#: The same, for the rest of a request body that arrives after its answer was sent.
BODY_LINGER_SECONDS = 5.0
BODY_LINGER_BYTES = 64 << 20


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit (a
    server needs one per client); returns the soft limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return MAX_CONNECTIONS + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return MAX_CONNECTIONS + FD_RESERVE if soft == resource.RLIM_INFINITY else soft


def _env_number(name: str, default: float, *, minimum: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= minimum:
        from .config import ConfigError

        raise ConfigError(f"{name} must be a number of at least {minimum:g}, got {text!r}")
    return value


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one server process applies (see the module docstring)."""

    max_head_bytes: int = MAX_HEAD_BYTES
    max_header_fields: int = MAX_HEADER_FIELDS
    header_timeout: float = HEADER_TIMEOUT
    body_idle_timeout: float = BODY_IDLE_TIMEOUT
    send_stall_timeout: float = SEND_STALL_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    #: bytes of request bodies the process holds at once (see :mod:`.body_budget`)
    request_body_bytes: int = MAX_BODY_BYTES_HELD

    @classmethod
    def from_env(cls, open_files: int) -> ConnectionLimits:
        """Limits from ``BASALT_MAX_HEADER_BYTES``, ``BASALT_HEADER_TIMEOUT``,
        ``BASALT_BODY_TIMEOUT``, ``BASALT_MAX_CONNECTIONS`` and
        ``BASALT_REQUEST_BODIES_MB``; connections
        also stay ``FD_RESERVE`` under ``open_files`` (the process's limit of
        open files)."""
        wanted = int(_env_number("BASALT_MAX_CONNECTIONS", MAX_CONNECTIONS, minimum=1))
        return cls(
            max_head_bytes=int(
                _env_number("BASALT_MAX_HEADER_BYTES", MAX_HEAD_BYTES, minimum=1024)
            ),
            header_timeout=_env_number("BASALT_HEADER_TIMEOUT", HEADER_TIMEOUT, minimum=0.1),
            body_idle_timeout=_env_number("BASALT_BODY_TIMEOUT", BODY_IDLE_TIMEOUT, minimum=0.1),
            max_connections=max(16, min(wanted, open_files - FD_RESERVE)),
            request_body_bytes=int(
                _env_number("BASALT_REQUEST_BODIES_MB", MAX_BODY_BYTES_HELD >> 20, minimum=17)
            )
            << 20,
        )


class ConnectionGuard:
    """Counts the open connections of the servers of one process and makes
    room when a new one would exceed the limit: it closes the longest-idle
    connection or, when all are busy, one of the address that holds the most
    (if that is not the newcomer's own)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        #: connections waiting for a request head, oldest first
        self.idle: dict[LimitedHttpProtocol, None] = {}
        self._states: list[ServerState] = []
        #: connections closed by the guard whose close has not yet been reported
        self.closing = 0
        #: connections closed to make room, and new ones refused (for the log)
        self.evicted = 0
        self.refused = 0
        #: connections per client address, counted at most once a second while
        #: the server is full (the counting walks every connection)
        self._per_address: Counter[str] = Counter()
        self._counted_at = -ADDRESS_COUNT_SECONDS

    def watch(self, state: ServerState) -> None:
        if not any(known is state for known in self._states):
            self._states.append(state)

    def open_connections(self) -> int:
        """Open connections on every port (WebSockets included)."""
        return sum(len(state.connections) for state in self._states) - self.closing

    def make_room(self, newcomer: LimitedHttpProtocol) -> bool:
        """Called for a new connection (already counted): close the longest-idle
        connection, or else a busy one of the heaviest address, if the limit is
        exceeded; False if none could be closed (the newcomer is refused)."""
        if self.open_connections() <= self.limits.max_connections:
            return True
        for victim in self.idle:
            if victim is not newcomer:
                self.evicted += 1
                if self.evicted % 1000 == 1:
                    log.warning(
                        "%d connections open (the limit): closing the longest idle ones "
                        "(%d so far)",
                        self.open_connections(),
                        self.evicted,
                    )
                victim.drop()
                return True
        if self._evict_from_heaviest(newcomer):
            return True
        self.refused += 1
        if self.refused % 1000 == 1:
            log.warning(
                "%d connections open (the limit), all busy: refusing new ones (%d so far)",
                self.open_connections(),
                self.refused,
            )
        return False

    def _evict_from_heaviest(self, newcomer: LimitedHttpProtocol) -> bool:
        """Close a busy connection of the address with the most connections, if
        it has more than the newcomer's address: one client (or one proxy) that
        fills the server with slow requests or idle WebSockets cannot keep
        everybody else out."""
        counts = self._address_counts(newcomer)
        if not counts:
            return False
        heaviest, most = counts.most_common(1)[0]
        mine = _address(newcomer)
        if mine is None or most <= counts[mine]:
            return False
        for state in self._states:
            for victim in state.connections:
                if victim is not newcomer and _address(victim) == heaviest:
                    counts[heaviest] -= 1
                    self.evicted += 1
                    if self.evicted % 1000 == 1:
                        log.warning(
                            "%d connections open (the limit), all busy: closing ones of the "
                            "address with the most (%d so far)",
                            self.open_connections(),
                            self.evicted,
                        )
                    if isinstance(victim, LimitedHttpProtocol):
                        victim.drop()
                    else:  # a WebSocket: its own protocol reports the close
                        self.closing += 1
                        victim.transport.abort()
                        newcomer.loop.call_soon(self._foreign_closed)
                    return True
        return False

    def _foreign_closed(self) -> None:
        self.closing -= 1

    def _address_counts(self, newcomer: LimitedHttpProtocol) -> Counter[str]:
        now = newcomer.loop.time()
        if now - self._counted_at >= ADDRESS_COUNT_SECONDS:
            self._counted_at = now
            self._per_address = Counter(
                address
                for state in self._states
                for connection in state.connections
                if (address := _address(connection)) is not None
            )
        else:
            mine = _address(newcomer)
            if mine is not None:
                self._per_address[mine] += 1
        return self._per_address


def _address(connection: Any) -> str | None:
    """The client's address of a uvicorn protocol object (HTTP or WebSocket):
    its IPv4 address, or the /64 network of its IPv6 address (one host is
    usually given a whole /64)."""
    client = getattr(connection, "client", None)
    if not client:
        return None
    host: str = client[0]
    if ":" in host:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_network(f"{host}/64", strict=False))
    return host


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._header_fields = 0
        self._reading_head = True
        self._refused = False
        self._dropped = False
        self._timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        #: bytes of the request body received since the last body check
        self._body_bytes = 0
        #: bytes a client may still send after its last answer (see _refuse_further)
        self._linger_left = 0

    # -- connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.watch(self.server_state)
        if not guard.make_room(self):
            self.drop()
            return
        guard.idle[self] = None
        self._arm(self.guard.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self.guard.idle.pop(self, None)
        if self._dropped:
            self._dropped = False
            self.guard.closing -= 1
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close the connection at once, discarding anything unsent."""
        if self._dropped or self.transport.is_closing():
            return
        self._dropped = True
        self.guard.closing += 1
        self.guard.idle.pop(self, None)
        self._disarm()
        self.transport.abort()

    # -- reading ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after an answer: read and drop, up to a point
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self.drop()
            return
        if not self._reading_head:
            super().data_received(data)
            return
        if self._timer is None:
            self._arm(self.guard.limits.header_timeout, self._head_timed_out)
        limit = self.guard.limits.max_head_bytes
        while data:
            room = limit - self._head_bytes
            if room <= 0:
                self._refuse(431, f"the request line and headers exceed {limit} bytes")
                return
            piece, data = (data[:room], data[room:]) if len(data) > room else (data, b"")
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._refused or self.transport.is_closing():
                return
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                self._disarm()
                self.guard.idle.pop(self, None)
                return
            if not self._reading_head:  # the head ended inside this piece
                if data:
                    super().data_received(data)
                return
        if self._head_bytes >= limit:
            self._refuse(431, f"the request line and headers exceed {limit} bytes")

    # -- parser callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self._header_fields = 0
        super().on_message_begin()

    # (Once a request is refused, the rest of what the parser already holds is
    # ignored: no request reaches the app.)
    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_fields += 1
        if self._header_fields > self.guard.limits.max_header_fields:
            limit = self.guard.limits.max_header_fields
            self._refuse(431, f"the request has more than {limit} header fields")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if len(self.pipeline) >= MAX_PIPELINED:
            log.info(
                "disconnecting a client that sent over %d requests ahead of their answers",
                MAX_PIPELINED,
            )
            self._refused = True  # the parser's further callbacks are ignored
            self.drop()
            return
        self._reading_head = False
        self.guard.idle.pop(self, None)
        self._disarm()
        self._body_bytes = 0
        self._arm(self.guard.limits.body_idle_timeout, self._body_check)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            self._body_bytes += len(body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._reading_head = True
        self._head_bytes = 0  # the next request's head starts
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or not self.cycle.response_complete:
            return
        if self._reading_head:
            self.guard.idle[self] = None  # idle from now on: the newest idle connection
        elif not self.pipeline:
            # Answered before its body ended (refused, or a route that takes
            # none): read and drop the rest for a moment, then close.
            self._refuse_further(BODY_LINGER_SECONDS, BODY_LINGER_BYTES)

    # -- writing ------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(
                self.guard.limits.send_stall_timeout, self._stalled
            )

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().resume_writing()

    def _stalled(self) -> None:
        self._stall_timer = None
        log.info("disconnecting a client that has not read its response for a while")
        self.drop()

    # -- timers and refusals ----------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is being produced: the next request's head may wait for it.
            self.cycle.keep_alive = False
            return
        if self._head_bytes:
            seconds = self.guard.limits.header_timeout
            self._refuse(408, f"the request headers did not arrive within {seconds:g} s")
        else:
            self.drop()

    def _body_check(self) -> None:
        self._timer = None
        if self._reading_head or self.transport.is_closing():
            return
        limits = self.guard.limits
        if self._body_bytes < MIN_BODY_BYTES and not self.flow.read_paused:
            log.info(
                "closing a connection whose request body brought under %d bytes in %g s",
                MIN_BODY_BYTES,
                limits.body_idle_timeout,
            )
            self.drop()
            return
        # Enough arrived, or the app is not reading (the client cannot send):
        # the next period starts.
        self._body_bytes = 0
        self._arm(limits.body_idle_timeout, self._body_check)

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` and close, reading and dropping
        whatever the client still sends for a moment (so that it can read the
        answer instead of getting a reset)."""
        if self._refused or self.transport.is_closing():
            return
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self._refuse_further(LINGER_SECONDS, LINGER_BYTES)

    def _refuse_further(self, seconds: float, size: int) -> None:
        """Send nothing more and close: read and drop what the client still
        sends for up to ``seconds`` and ``size`` bytes (so that it can read
        what it was sent instead of getting a reset), then drop it."""
        self._refused = True
        self.guard.idle.pop(self, None)
        self._disarm()
        self._linger_left = size
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._timer = self.loop.call_later(seconds, self.drop)
        else:  # pragma: no cover - TCP transports can
            self.transport.close()


def limited_protocol(guard: ConnectionGuard) -> type[LimitedHttpProtocol]:
    """The HTTP protocol class for ``uvicorn.Config(http=...)`` whose
    connections ``guard`` counts (one guard for every port of a process)."""
    return type("BasaltHttpProtocol", (LimitedHttpProtocol,), {"guard": guard})
