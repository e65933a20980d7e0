"""What one sync connection may hold on the server.

Every resource a client controls through the sync protocol has a limit here:

- its **query set**: how many queries it subscribes to at once, and the bytes
  of their arguments, journals and paths. A ``ModifyQuerySet`` that would go
  over either is refused whole, before any of it is applied, with a
  ``FatalError`` naming the count (or size) and the limit: the connection ends.
- its **query results**: the bytes (as JSON, log lines and error data
  included) of the results its queries hold on the server, each query counted
  in full even when another query or connection shares its execution (the
  client is sent each one). A query whose result would take the connection over
  the limit fails with a ``QueryFailed`` naming its size and the limit, and
  holds nothing until the client removes it (or adds it again). A result is
  never refused while the connection holds no other, so one result of any size
  the value limits allow always reaches it. Every ``Transition`` the
  connection is sent is therefore at most this size (or that one result) plus
  its queries' journals.
- its **requests in flight**: mutations and actions it has sent that have not
  been answered yet, counted and measured in bytes. At the limit the server
  stops reading the connection's messages until one is answered (the client
  waits; nothing fails). A single request is always admitted when none is in
  flight, so a request of any size the frame limit allows can run.

A ``Connect``'s session id may be at most :data:`MAX_SESSION_ID_CHARS`
characters (both official clients send a UUID): a longer one is a
``FatalError``.

The defaults are far above what a real app needs; ``basalt serve`` reads
``BASALT_SYNC_MAX_QUERIES`` for the query count and
``BASALT_SYNC_CONNECTION_RESULTS_MB`` for the results (see the README). The bytes of
the messages a connection has not read yet are limited by the server (see
:mod:`basalt.server.sync_queue`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Most queries one connection may subscribe to at once (a page with a few dozen
#: ``useQuery`` calls and many loaded pages of a paginated query stays far below).
MAX_QUERIES = 4096
#: Most bytes (as JSON) of the arguments, journals and paths of one connection's
#: queries together: one maximal function argument, or thousands of ordinary ones.
MAX_QUERY_SET_BYTES = 16 << 20
#: Most bytes (as JSON) of the results one connection's queries hold: two
#: results at the 16 MiB value limit, or thousands of ordinary ones.
MAX_RESULT_BYTES = 32 << 20
#: Longest session id a ``Connect`` may carry (a UUID has 36 characters).
MAX_SESSION_ID_CHARS = 128
#: Most mutations and actions of one connection that may wait or run at once.
MAX_REQUESTS_IN_FLIGHT = 128
#: Most bytes of the messages of those requests (their arguments) held at once.
MAX_REQUEST_BYTES_IN_FLIGHT = 32 << 20


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The limits of one sync connection (defaults: the module constants)."""

    max_queries: int = MAX_QUERIES
    max_query_set_bytes: int = MAX_QUERY_SET_BYTES
    max_result_bytes: int = MAX_RESULT_BYTES
    max_requests: int = MAX_REQUESTS_IN_FLIGHT
    max_request_bytes: int = MAX_REQUEST_BYTES_IN_FLIGHT

    def __post_init__(self) -> None:
        for name in (
            "max_queries",
            "max_query_set_bytes",
            "max_result_bytes",
            "max_requests",
            "max_request_bytes",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"SessionLimits.{name} must be a positive integer, got {value!r}")
