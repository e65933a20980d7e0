"""The answers the hub remembers for re-sent mutations (basalt.sync.remembered):
a re-send gets the answer only when it comes from the same caller, under the
same session and request id, for the same function and arguments; only
committed mutations are remembered; session ids are short; and what is
remembered is bounded in bytes, keys included."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from basalt.sync import ProtocolError
from basalt.sync.limits import MAX_SESSION_ID_CHARS
from basalt.sync.remembered import ENTRY_BYTES, RememberedMutations

from .conftest import Client, Env


async def _on_session(env: Env, session_id: str, name: str, token: str | None = None) -> Client:
    """A connection that says it is session ``session_id`` (as a reconnect does)."""
    c = env.client(name)
    c.session_id = session_id
    await c.connect()
    if token is not None:
        await c.authenticate("User", token)
    return c


async def _send(c: Client, request_id: int, path: str, args: dict[str, Any]) -> dict[str, Any]:
    await c.send({"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [args]})
    await c.session.join_requests()
    return c.response(request_id)


async def test_a_long_session_id_is_refused(env: Env) -> None:
    c = env.client()
    c.session_id = "s" * (MAX_SESSION_ID_CHARS + 1)
    with pytest.raises(ProtocolError) as caught:
        await c.connect()
    assert caught.value.message == (
        f"Connect.sessionId is {MAX_SESSION_ID_CHARS + 1} characters long, over the limit of "
        f"{MAX_SESSION_ID_CHARS} (the official clients send a UUID)"
    )
    # One at the limit is accepted, and its mutations are remembered.
    ok = await _on_session(env, "s" * MAX_SESSION_ID_CHARS, "at the limit")
    assert (await _send(ok, 0, "items:counted", {"group": "long"}))["result"] == 1.0
    again = await _on_session(env, "s" * MAX_SESSION_ID_CHARS, "again")
    assert (await _send(again, 0, "items:counted", {"group": "long"}))["result"] == 1.0
    assert await env.fresh("items:count_ns", {"group": "long"}) == 1.0


async def test_another_caller_never_gets_the_answer(env: Env) -> None:
    """Same session id and request id, another caller: its own mutation runs."""
    session = str(uuid.uuid4())
    alice = await _on_session(env, session, "alice", "user:alice")
    mine = await _send(alice, 7, "items:add", {"group": "alice", "n": 1.0})
    assert mine["success"] is True
    # Anonymous, then bob, re-using alice's session id and request id.
    anonymous = await _on_session(env, session, "anonymous")
    theirs = await _send(anonymous, 7, "items:add", {"group": "alice", "n": 1.0})
    bob = await _on_session(env, session, "bob", "user:bob")
    bobs = await _send(bob, 7, "items:who_mutates", {})
    assert theirs["success"] is True and theirs["result"] != mine["result"]
    assert bobs["result"] == "bob"
    assert len(await env.fresh("items:by_group", {"group": "alice"})) == 2
    # Alice herself, re-sending after a reconnect, gets her answer back.
    back = await _on_session(env, session, "alice again", "user:alice")
    assert await _send(back, 7, "items:add", {"group": "alice", "n": 1.0}) == mine
    assert len(await env.fresh("items:by_group", {"group": "alice"})) == 2


async def test_pre_claimed_request_ids_do_not_swallow_a_mutation(env: Env) -> None:
    """An attacker who knows a session id sends request ids 0-2 first: the
    victim's later mutations under those ids are applied, not answered."""
    session = str(uuid.uuid4())
    attacker = await _on_session(env, session, "attacker")
    for rid in range(3):
        assert (await _send(attacker, rid, "items:add", {"group": "spam", "n": 0.0}))["success"]
    victim = await _on_session(env, session, "victim", "user:bob")
    for rid in range(3):
        answer = await _send(victim, rid, "items:add", {"group": "bob", "n": float(rid)})
        assert answer["success"] is True
    assert [d[1] for d in await env.fresh("items:by_group", {"group": "bob"})] == [0.0, 1.0, 2.0]


async def test_the_same_request_id_with_other_arguments_runs(env: Env) -> None:
    session = str(uuid.uuid4())
    first = await _on_session(env, session, "first")
    one = await _send(first, 0, "items:counted", {"group": "a"})
    other = await _on_session(env, session, "other")
    two = await _send(other, 0, "items:counted", {"group": "b"})
    assert one["result"] == 1.0 and two["result"] == 1.0
    assert await env.fresh("items:count_ns", {"group": "b"}) == 1.0


async def test_a_resend_with_the_module_written_with_js_is_the_same_mutation(env: Env) -> None:
    """The Rust client adds ``.js`` to module names when it re-sends."""
    session = str(uuid.uuid4())
    first = await _on_session(env, session, "first")
    answer = await _send(first, 0, "items:counted", {"group": "js"})
    again = await _on_session(env, session, "again")
    assert await _send(again, 0, "items.js:counted", {"group": "js"}) == answer
    assert await env.fresh("items:count_ns", {"group": "js"}) == 1.0


async def test_a_failed_mutation_is_not_remembered(env: Env) -> None:
    """A failure commits nothing: re-sent (its client never saw the answer), the
    mutation runs again, and may succeed then."""
    session = str(uuid.uuid4())
    first = await _on_session(env, session, "first")
    failed = await _send(first, 0, "items:add_when_open", {"group": "later"})
    assert failed["success"] is False and "not open yet" in failed["result"]
    assert len(env.hub.mutation_results) == 0
    opener = await env.connected("opener")
    await _send(opener, 0, "items:add", {"group": "open", "n": 0.0})
    remembered = len(env.hub.mutation_results)
    again = await _on_session(env, session, "again")
    answer = await _send(again, 0, "items:add_when_open", {"group": "later"})
    assert answer["success"] is True
    assert len(await env.fresh("items:by_group", {"group": "later"})) == 1
    assert len(env.hub.mutation_results) == remembered + 1


async def test_a_resend_while_the_first_runs_waits_for_its_answer(env: Env) -> None:
    session = str(uuid.uuid4())
    first = await _on_session(env, session, "first")
    second = await _on_session(env, session, "second")
    msg = {"type": "Mutation", "requestId": 0, "udfPath": "items:counted", "args": [{"group": "w"}]}
    await first.send(msg)
    await second.send(msg)
    await asyncio.gather(first.session.join_requests(), second.session.join_requests())
    assert first.response(0) == second.response(0)
    assert await env.fresh("items:count_ns", {"group": "w"}) == 1.0


def test_every_remembered_answer_counts_its_key() -> None:
    """An answer of no bytes still costs its key and bookkeeping: the bound in
    bytes holds however small the answers are."""
    loop = asyncio.new_event_loop()
    try:
        remembered = RememberedMutations(max_count=1000, max_bytes=10 * ENTRY_BYTES)
        for i in range(50):
            future = loop.create_future()
            remembered.add(i.to_bytes(32, "little"), future)
            future.set_result(({}, 1))
            remembered.settle(i.to_bytes(32, "little"), future, 0)
        assert len(remembered) == 10
        assert remembered.bytes == 10 * ENTRY_BYTES
        assert remembered.get((49).to_bytes(32, "little")) is not None
        assert remembered.get((39).to_bytes(32, "little")) is None
    finally:
        loop.close()
