"""What one sync connection may hold, and the answers the hub remembers for
re-sent mutations."""

from __future__ import annotations

import gc
import json
from typing import Any

from basalt.sync import SyncSession

from .conftest import Env, FakeVerifier

# -- remembered answers ------------------------------------------------------------


async def test_mutations_of_clients_that_never_connect_are_all_applied(env: Env) -> None:
    """Without Connect a client has no session id: its request ids are its own,
    and no other connection's answer may stand in for its mutation."""
    sent: list[dict[str, Any]] = []
    for _ in range(20):
        session = SyncSession(env.hub, FakeVerifier(), sent.append, lambda: None)
        await session.handle(
            json.dumps(
                {
                    "type": "Mutation",
                    "requestId": 0,
                    "udfPath": "items:counted",
                    "args": [{"group": "anonymous"}],
                }
            )
        )
        await session.join_requests()
        session.close()
        del session
        gc.collect()
    results = [m["result"] for m in sent if m["type"] == "MutationResponse"]
    assert results == [float(n) for n in range(1, 21)]
    assert await env.fresh("items:count_ns", {"group": "anonymous"}) == 20.0
