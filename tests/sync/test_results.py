"""The memory query results hold (basalt.sync.hub): each connection may hold a
bounded number of bytes of results, and the hub as a whole too. A query over
its connection's limit fails for that connection alone; a result over the
hub's limit is refused until there is room. Every Transition is bounded by the
same measure."""

from __future__ import annotations

import json
from typing import Any

from basalt.sync import SessionLimits, SyncHub

from .conftest import Client, Env

KB = 1000


async def _fill(env: Env, group: str, count: int) -> None:
    """``count`` items in ``group``: ``items:sized`` on it returns ``count`` KB."""
    writer = await env.connected("writer")
    for i in range(count):
        await writer.mutation("items:add", {"group": group, "n": float(i)})
    await env.settle()


def _failure(c: Client, qid: int) -> str:
    result = c.results[qid]
    assert result[0] == "error", result
    message: str = result[1]
    return message


def _transition_sizes(c: Client) -> list[int]:
    return [len(json.dumps(m)) for m in c.of_type("Transition")]


async def test_a_connection_holds_a_bounded_amount_of_results(env: Env) -> None:
    """Twelve queries of 10 KB each, differing only by float noise in their
    arguments (each a distinct execution), against a limit of 45 KB: four are
    served, the others fail with the sizes and the limit, and the Transition
    stays within the limit."""
    await _fill(env, "big", 10)
    limit = 45 * KB
    c = await env.connected("greedy", SessionLimits(max_result_bytes=limit))
    await c.modify(
        [
            {"type": "Add", "queryId": i, "udfPath": "items:sized", "args": [args]}
            for i, args in enumerate({"group": "big", "salt": i * 1e-9} for i in range(12))
        ]
    )
    await env.settle()
    served = [q for q in range(12) if c.results[q][0] == "value"]
    refused = [q for q in range(12) if c.results[q][0] == "error"]
    assert len(served) == 4 and len(refused) == 8
    for qid in refused:
        message = _failure(c, qid)
        assert "ResultsTooLarge: this query's result (10002 bytes as JSON) would make" in message
        assert f"over the limit of {limit} bytes per connection" in message
    assert c.session.result_bytes <= limit
    assert max(_transition_sizes(c)) < limit + 5 * KB
    # Its entries over the limit are gone: the hub keeps the four served.
    assert env.hub.result_bytes < 5 * 10 * KB
    # Removing a served query makes room: a refused one added again is served.
    await c.modify(
        [
            {"type": "Remove", "queryId": served[0]},
            {"type": "Remove", "queryId": refused[0]},
            {"type": "Add", "queryId": 100, "udfPath": "items:sized", "args": [{"group": "big"}]},
        ]
    )
    await env.settle()
    assert c.value(100) == "x" * 10 * KB


async def test_a_result_alone_is_never_refused(env: Env) -> None:
    await _fill(env, "big", 10)
    c = await env.connected("small limit", SessionLimits(max_result_bytes=KB))
    qid = await c.subscribe("items:sized", {"group": "big"})
    await env.settle()
    assert c.value(qid) == "x" * 10 * KB
    other = await c.subscribe("items:sized", {"group": "big", "salt": 1.0})
    await env.settle()
    assert "over the limit of 1000 bytes per connection" in _failure(c, other)


async def test_a_shared_execution_is_charged_to_every_subscriber(env: Env) -> None:
    """Two connections share one execution: one over its limit gets a failure,
    the other keeps the result; subscribing the same query twice costs twice
    (each copy is sent)."""
    await _fill(env, "big", 10)
    roomy = await env.connected("roomy")
    tight = await env.connected("tight", SessionLimits(max_result_bytes=15 * KB))
    first = await tight.subscribe("items:sized", {"group": "big"})
    mine = await roomy.subscribe("items:sized", {"group": "big"})
    await env.settle()
    second = await tight.subscribe("items:sized", {"group": "big"})
    await env.settle()
    assert tight.value(first) == "x" * 10 * KB
    assert "over the limit of 15000 bytes per connection" in _failure(tight, second)
    assert roomy.value(mine) == "x" * 10 * KB
    assert len({id(e) for e in env.hub.entries.values()}) == 1


async def test_a_result_that_grows_past_the_limit_fails_for_that_connection(env: Env) -> None:
    await _fill(env, "grows", 2)
    c = await env.connected("tight", SessionLimits(max_result_bytes=5 * KB))
    small = await c.subscribe("items:sized", {"group": "other", "extra": 1000.0})
    growing = await c.subscribe("items:sized", {"group": "grows"})
    await env.settle()
    assert c.value(growing) == "x" * 2 * KB
    writer = await env.connected("writer")
    for i in range(3):
        await writer.mutation("items:add", {"group": "grows", "n": 10.0 + i})
    await env.settle()
    assert "ResultsTooLarge" in _failure(c, growing)
    assert c.value(small) == "x" * 1000
    assert c.session.result_bytes < 5 * KB
    # The failure stays until the client asks again (the hub keeps nothing for it).
    await writer.mutation("items:add", {"group": "grows", "n": 100.0})
    await env.settle()
    assert "ResultsTooLarge" in _failure(c, growing)


async def _hub(env: Env, **kwargs: Any) -> SyncHub:
    hub = SyncHub(env.runtime, **kwargs)
    hub.start()
    return hub


async def test_the_hub_refuses_results_over_its_limit_until_there_is_room(env: Env) -> None:
    await _fill(env, "big", 10)
    hub = await _hub(env, max_result_bytes=25 * KB)
    try:
        clients = [Client(hub, f"c{i}") for i in range(3)]
        for c in clients:
            await c.connect()
        for i, c in enumerate(clients):
            await c.subscribe("items:sized", {"group": "big", "salt": float(i)})
            await hub.cycle()
        assert clients[0].value(0) == "x" * 10 * KB
        assert clients[1].value(0) == "x" * 10 * KB
        message = _failure(clients[2], 0)
        assert "ResultsTooLarge: this query's result (10002 bytes as JSON)" in message
        assert "over its limit of 25000 bytes" in message
        assert hub.result_bytes <= 25 * KB
        # A small result still fits.
        small = await clients[2].subscribe("items:sized", {"group": "none", "extra": 10.0})
        await hub.cycle()
        assert clients[2].value(small) == "x" * 10
        # One leaves: the refused query runs again and is served.
        clients[0].session.close()
        while hub.has_pending:
            await hub.cycle()
        assert clients[2].value(0) == "x" * 10 * KB
        assert hub.result_bytes <= 25 * KB
    finally:
        for c in clients:
            c.session.close()
        await hub.stop()


async def test_results_are_counted_until_their_last_subscriber_leaves(env: Env) -> None:
    await _fill(env, "big", 10)
    a = await env.connected("a")
    b = await env.connected("b")
    qa = await a.subscribe("items:sized", {"group": "big"})
    qb = await b.subscribe("items:sized", {"group": "big"})
    await env.settle()
    assert env.hub.result_bytes == a.session.result_bytes == b.session.result_bytes > 10 * KB
    await a.unsubscribe(qa)
    await env.settle()
    assert env.hub.result_bytes == b.session.result_bytes and a.session.result_bytes == 0
    await b.unsubscribe(qb)
    await env.settle()
    assert env.hub.result_bytes == 0 and b.session.result_bytes == 0
