"""What one sync connection may hold (basalt.sync.limits): its query set, in
queries and in bytes, and its mutations and actions in flight; and the answers
the hub remembers for re-sent mutations."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from typing import Any

import pytest

from basalt.sync import ProtocolError, SessionLimits, SyncSession

from . import app
from .conftest import Env, FakeVerifier, wait_for


def _add(query_id: int, group: str = "a", **extra: Any) -> dict[str, Any]:
    return {
        "type": "Add",
        "queryId": query_id,
        "udfPath": "items:by_group",
        "args": [{"group": group}],
        **extra,
    }


# -- the query set -----------------------------------------------------------------


async def test_queries_up_to_the_limit_then_a_fatal_error(env: Env) -> None:
    c = await env.connected(limits=SessionLimits(max_queries=5))
    await c.modify([_add(i) for i in range(5)])
    await env.settle()
    assert set(c.results) == {0, 1, 2, 3, 4}
    # Replacing a query in one message (remove first) stays within the limit.
    await c.modify([{"type": "Remove", "queryId": 0}, _add(5)])
    await env.settle()
    assert set(c.results) == {1, 2, 3, 4, 5}
    # One more is refused, whole: the message's other changes are not applied.
    with pytest.raises(ProtocolError) as caught:
        await c.modify([{"type": "Remove", "queryId": 1}, _add(6), _add(7)])
    assert "would make the query set hold 6 queries" in caught.value.message
    assert "over the limit of 5 queries per connection" in caught.value.message
    assert sorted(c.session.queries) == [1, 2, 3, 4, 5]
    assert c.session.query_set_version == 2


async def test_a_query_added_before_one_is_removed_counts(env: Env) -> None:
    """The limit holds at every point of a message: add-then-remove at the limit
    would hold one query too many in between."""
    c = await env.connected(limits=SessionLimits(max_queries=2))
    await c.modify([_add(0), _add(1)])
    with pytest.raises(ProtocolError, match="hold 3 queries, over the limit of 2"):
        await c.modify([_add(2), {"type": "Remove", "queryId": 0}])


async def test_query_set_bytes_are_limited(env: Env) -> None:
    c = await env.connected(limits=SessionLimits(max_query_set_bytes=3000))
    big = "x" * 2000
    await c.modify([_add(0, big)])
    await env.settle()
    assert c.value(0) == []
    with pytest.raises(ProtocolError) as caught:
        await c.modify([_add(1, "y" * 900, journal="j" * 100)])
    message = caught.value.message
    assert "adding query 1 (" in message and "bytes of arguments, journal and path)" in message
    assert "over the limit of 3000 bytes per connection" in message
    assert sorted(c.session.queries) == [0]
    # Removing a query frees its bytes.
    again = await env.connected(limits=SessionLimits(max_query_set_bytes=3000))
    await again.modify([_add(0, big)])
    await again.modify([{"type": "Remove", "queryId": 0}, _add(1, "y" * 900, journal="j" * 100)])
    await again.modify([_add(2, "z" * 1000)])
    await env.settle()
    assert sorted(again.results) == [1, 2]
    assert again.session.query_set_bytes < 3000


# -- requests in flight ------------------------------------------------------------


def _held(key: str, pad: str = "") -> dict[str, Any]:
    return {"key": key, "pad": pad}


async def test_requests_in_flight_wait_for_a_free_slot(env: Env) -> None:
    key = uuid.uuid4().hex
    c = await env.connected(limits=SessionLimits(max_requests=3))

    async def send_all() -> list[int]:
        return [await c.action("items:held", _held(key)) for _ in range(10)]

    sender = asyncio.create_task(send_all())
    await wait_for(lambda: app.HELD.get(key, [0])[0] == 3, "three actions to run")
    for _ in range(50):
        await asyncio.sleep(0)
    # The fourth request waits (and so does the client's next message).
    assert app.HELD[key] == [3, 3] and not sender.done()
    # A mutation on another connection is answered meanwhile.
    other = await env.connected()
    rid = await other.mutation("items:add", {"group": "other", "n": 1.0})
    await other.session.join_requests()
    assert other.response(rid)["success"] is True
    app.RELEASED.add(key)
    rids = await sender
    await env.settle()
    assert [c.response(r)["success"] for r in rids] == [True] * 10
    assert app.HELD[key] == [0, 3]


async def test_request_bytes_in_flight_are_limited(env: Env) -> None:
    key = uuid.uuid4().hex
    pad = "p" * 1000
    c = await env.connected(limits=SessionLimits(max_request_bytes=2500))

    async def send_all() -> list[int]:
        return [await c.action("items:held", _held(key, pad)) for _ in range(5)]

    sender = asyncio.create_task(send_all())
    await wait_for(lambda: app.HELD.get(key, [0])[0] == 2, "two actions to run")
    for _ in range(50):
        await asyncio.sleep(0)
    assert app.HELD[key] == [2, 2] and not sender.done()
    app.RELEASED.add(key)
    rids = await sender
    await env.settle()
    assert [c.response(r)["success"] for r in rids] == [True] * 5
    assert app.HELD[key][1] == 2


async def test_one_request_over_the_byte_limit_still_runs(env: Env) -> None:
    key = uuid.uuid4().hex
    app.RELEASED.add(key)
    c = await env.connected(limits=SessionLimits(max_request_bytes=500))
    rid = await c.action("items:held", _held(key, "p" * 2000))
    await env.settle()
    assert c.response(rid)["success"] is True


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
