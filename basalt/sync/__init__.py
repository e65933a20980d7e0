"""Reactive queries: the Convex sync protocol, transport-agnostic.

:class:`SyncHub` shares query executions between subscribers and re-runs only
the ones a commit wrote into; :class:`SyncSession` is one client connection.
The server's WebSocket endpoint feeds frames to a session and sends what it
queues.
"""

from .entry import QueryEntry
from .hub import SyncHub
from .index import SubscriptionIndex
from .limits import SessionLimits
from .messages import ProtocolError
from .session import SyncSession

__all__ = [
    "ProtocolError",
    "QueryEntry",
    "SessionLimits",
    "SubscriptionIndex",
    "SyncHub",
    "SyncSession",
]
