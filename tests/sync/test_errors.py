"""Malformed client messages: a ProtocolError naming what is wrong (a FatalError
at the transport), while other connections keep working and committed data
stays intact (ARCHITECTURE.md, "Bad input ... gets a clear error")."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from basalt.server.websocket import serve_sync
from basalt.sync import ProtocolError, SyncSession
from basalt.sync import messages as m

from .conftest import Env, FakeVerifier


def _add(**fields: Any) -> str:
    mod = {"type": "Add", "queryId": 5, "udfPath": "items:by_group", "args": [{"group": "a"}]}
    mod.update(fields)
    mod = {k: v for k, v in mod.items() if v is not DROP}
    return json.dumps(
        {"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2, "modifications": [mod]}
    )


def _mutation(**fields: Any) -> str:
    msg = {
        "type": "Mutation",
        "requestId": 3,
        "udfPath": "items:add",
        "args": [{"group": "a", "n": 1}],
    }
    msg.update(fields)
    return json.dumps({k: v for k, v in msg.items() if v is not DROP})


DROP = object()

# (frame, words the error message must contain)
BAD_FRAMES = [
    pytest.param("{not json", ["not valid JSON"], id="bad-json"),
    pytest.param(b"\xff\xfe", ["not valid JSON"], id="bad-utf8"),
    pytest.param("[1, 2]", ["JSON object"], id="not-an-object"),
    pytest.param('"Connect"', ["JSON object"], id="a-string"),
    pytest.param('{"type": "Subscribe"}', ["unknown message type", "Subscribe"], id="unknown-type"),
    pytest.param('{"sessionId": "x"}', ["type"], id="no-type"),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 2, "modifications": []}',
        ["baseVersion", "0", "1"],
        id="modify-wrong-base",
    ),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 1, "modifications": []}',
        ["newVersion"],
        id="modify-new-not-greater",
    ),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 0, "modifications": []}',
        ["newVersion"],
        id="modify-new-below",
    ),
    pytest.param(
        '{"type": "ModifyQuerySet", "newVersion": 2, "modifications": []}',
        ["baseVersion"],
        id="modify-no-base",
    ),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2}',
        ["modifications"],
        id="modify-no-modifications",
    ),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2, "modifications": {}}',
        ["modifications"],
        id="modify-modifications-not-array",
    ),
    pytest.param(_add(queryId=0), ["query 0", "already"], id="add-existing-query"),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2,'
        ' "modifications": [{"type": "Remove", "queryId": 9}]}',
        ["query 9", "not in the query set"],
        id="remove-unknown-query",
    ),
    pytest.param(
        '{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2,'
        ' "modifications": [{"type": "Replace", "queryId": 0}]}',
        ["modifications[0].type"],
        id="unknown-modification",
    ),
    pytest.param(_add(queryId=DROP), ["queryId"], id="add-no-query-id"),
    pytest.param(_add(queryId=-1), ["queryId"], id="add-negative-query-id"),
    pytest.param(_add(queryId=True), ["queryId"], id="add-boolean-query-id"),
    pytest.param(_add(queryId=2**32), ["queryId"], id="add-query-id-over-u32"),
    pytest.param(_add(udfPath=DROP), ["udfPath"], id="add-no-path"),
    pytest.param(_add(udfPath=7), ["udfPath"], id="add-path-not-a-string"),
    pytest.param(_add(args=DROP), ["args"], id="add-no-args"),
    pytest.param(_add(args=[]), ["args", "one-element"], id="add-args-empty"),
    pytest.param(_add(args=[{}, {}]), ["args", "one-element"], id="add-args-two"),
    pytest.param(_add(args=["a"]), ["args", "object"], id="add-args-not-object"),
    pytest.param(_add(args=[{"$set": []}]), ["args", "$set"], id="add-args-set"),
    pytest.param(_mutation(args=[{"x": {"$set": [1]}}]), ["args", "$set"], id="mutation-args-set"),
    pytest.param(
        _mutation(args=[{"x": {"$integer": "AA"}}]), ["args", "$integer"], id="bad-integer"
    ),
    pytest.param(_mutation(requestId=DROP), ["requestId"], id="mutation-no-request-id"),
    pytest.param(_mutation(requestId="1"), ["requestId"], id="mutation-request-id-string"),
    pytest.param(_mutation(udfPath=DROP), ["udfPath"], id="mutation-no-path"),
    pytest.param(_mutation(args=[]), ["args", "one-element"], id="mutation-args-empty"),
    pytest.param(_mutation(type="Action", args=DROP), ["args"], id="action-no-args"),
    pytest.param(
        '{"type": "Authenticate", "baseVersion": 1, "tokenType": "None"}',
        ["baseVersion", "1", "0"],
        id="auth-wrong-base",
    ),
    pytest.param(
        '{"type": "Authenticate", "tokenType": "None"}', ["baseVersion"], id="auth-no-base"
    ),
    pytest.param(
        '{"type": "Authenticate", "baseVersion": 0, "tokenType": "Password", "value": "x"}',
        ["tokenType"],
        id="auth-bad-token-type",
    ),
    pytest.param(
        '{"type": "Authenticate", "baseVersion": 0, "tokenType": "User"}',
        ["value"],
        id="auth-user-no-value",
    ),
    pytest.param(
        '{"type": "Connect", "connectionCount": 0, "lastCloseReason": null}',
        ["sessionId"],
        id="connect-no-session",
    ),
    pytest.param(
        '{"type": "Connect", "sessionId": "s", "connectionCount": 0,'
        ' "maxObservedTimestamp": "not base64!"}',
        ["maxObservedTimestamp"],
        id="connect-bad-timestamp",
    ),
    pytest.param(
        '{"type": "Connect", "sessionId": "s", "connectionCount": 0,'
        ' "maxObservedTimestamp": "AAAA"}',
        ["maxObservedTimestamp", "8 bytes"],
        id="connect-short-timestamp",
    ),
]


@pytest.mark.parametrize(("frame", "words"), BAD_FRAMES)
async def test_bad_frame(env: Env, frame: str | bytes, words: list[str]) -> None:
    # A client with one query (id 0) and a bystander with a subscription.
    bad = await env.connected("bad")
    await bad.subscribe("items:by_group", {"group": "a"})
    bystander = await env.connected("bystander")
    watched = await bystander.subscribe("items:by_group", {"group": "a"})
    await bystander.mutation("items:add", {"group": "a", "n": 1.0})
    await env.settle()
    entries_before = dict(env.hub.entries)
    received_before = bad.mark()

    with pytest.raises(ProtocolError) as info:
        await bad.session.handle(frame)
    for word in words:
        assert word in info.value.message, (word, info.value.message)
    assert info.value.code == "BadClientMessage"
    # The transport answers with a FatalError and closes (see the transport test);
    # the session itself sent nothing.
    assert bad.since(received_before) == []
    assert env.hub.entries == entries_before, "a refused message changes no subscription"
    bad.session.close()

    # Everyone else keeps working, and what was committed is intact.
    await bystander.mutation("items:add", {"group": "a", "n": 2.0})
    await env.settle()
    assert bystander.value(watched) == [["a", 1.0, None], ["a", 2.0, None]]
    assert await env.fresh("items:by_group", {"group": "a"}) == bystander.value(watched)
    newcomer = await env.connected("newcomer")
    q = await newcomer.subscribe("items:everything")
    await env.settle()
    assert newcomer.value(q) == [["a", 1.0, None], ["a", 2.0, None]]


async def test_refused_query_set_changes_nothing(env: Env) -> None:
    """A ModifyQuerySet is checked as a whole before any of it applies."""
    c = await env.connected()
    await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    frame = {
        "type": "ModifyQuerySet",
        "baseVersion": 1,
        "newVersion": 2,
        "modifications": [
            {"type": "Add", "queryId": 1, "udfPath": "items:everything", "args": [{}]},
            {"type": "Remove", "queryId": 0},
            {"type": "Add", "queryId": 1, "udfPath": "items:everything", "args": [{}]},
        ],
    }
    with pytest.raises(ProtocolError, match="query 1"):
        await c.send(frame)
    assert set(c.session.queries) == {0}
    assert c.session.query_set_version == 1
    assert [e.path for e in env.hub.entries.values()] == ["items:by_group"]


async def test_remove_and_add_back_in_one_message(env: Env) -> None:
    c = await env.connected()
    await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    await c.modify(
        [
            {"type": "Remove", "queryId": 0},
            {"type": "Add", "queryId": 0, "udfPath": "items:by_group", "args": [{"group": "b"}]},
        ]
    )
    await env.runtime.mutation("items:add", {"group": "b", "n": 1.0})
    await env.settle()
    assert c.value(0) == [["b", 1.0, None]]


def test_server_messages_shapes() -> None:
    assert m.encode_ts(0) == "AAAAAAAAAAA="
    assert m.decode_ts(m.encode_ts(2**63 - 1), "ts") == 2**63 - 1
    failed = m.query_failed(1, "boom", [], None, (False, None))
    assert "errorData" not in failed
    assert m.query_failed(1, "boom", [], None, (True, None))["errorData"] is None
    ok = m.mutation_response(1, success=True, result=None, ts=5, log_lines=[])
    assert ok["ts"] == m.encode_ts(5) and "errorData" not in ok
    assert m.mutation_response(1, success=False, result="x", ts=None, log_lines=[])["ts"] is None
    action = m.action_response(1, success=True, result=1.0, log_lines=["[LOG] x"])
    assert "ts" not in action and action["logLines"] == ["[LOG] x"]


def test_parse_accepts_what_the_clients_send() -> None:
    connect = m.parse(
        '{"type":"Connect","sessionId":"884e6752","connectionCount":1,'
        '"lastCloseReason":"InactiveServer","maxObservedTimestamp":"WWRH0Gw36hg=","clientTs":1}'
    )
    assert isinstance(connect, m.Connect)
    assert connect.max_observed_ts == int.from_bytes(base64.b64decode("WWRH0Gw36hg="), "little")
    npm_add = m.parse(
        '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add",'
        '"queryId":0,"udfPath":"counter:get","args":[{}],"journal":null,"componentPath":null}]}'
    )
    assert isinstance(npm_add, m.ModifyQuerySet)
    assert npm_add.modifications == [m.AddQuery(0, "counter:get", {}, None, None)]
    action = m.parse(
        '{"type":"Action","requestId":1,"udfPath":"a:b","args":[{"x":{"$integer":"BwAAAAAAAAA="}}]}'
    )
    assert action == m.FunctionRequest("action", 1, "a:b", {"x": 7}, None)
    assert m.parse(
        '{"type":"Connect","sessionId":"s","connectionCount":0.0,"lastCloseReason":null}'
    )
    assert m.parse('{"type":"Event","eventType":"ClientConnect","event":{}}') == m.Event(
        "ClientConnect"
    )


# -- the transport ----------------------------------------------------------------


async def test_websocket_answers_a_bad_frame_with_a_fatal_error(env: Env) -> None:
    """Through the ASGI endpoint: frames before the bad one are served, the bad one
    gets a FatalError naming the problem, then the socket closes."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outgoing: list[MutableMapping[str, Any]] = []
    closed = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        outgoing.append(message)
        if message["type"] == "websocket.close":
            closed.set()

    def frame(msg: dict[str, Any] | str) -> None:
        text = msg if isinstance(msg, str) else json.dumps(msg)
        incoming.put_nowait({"type": "websocket.receive", "text": text})

    incoming.put_nowait({"type": "websocket.connect"})
    frame({"type": "Connect", "sessionId": "s1", "connectionCount": 0, "lastCloseReason": None})
    frame(
        {
            "type": "ModifyQuerySet",
            "baseVersion": 0,
            "newVersion": 1,
            "modifications": [
                {"type": "Add", "queryId": 0, "udfPath": "items:by_group", "args": [{"group": "a"}]}
            ],
        }
    )
    task = asyncio.create_task(
        serve_sync({"type": "websocket"}, receive, send, env.hub, FakeVerifier())
    )
    # Let the subscription produce its first Transition, then send garbage.
    for _ in range(1000):
        if any("Transition" in o.get("text", "") for o in outgoing):
            break
        await env.hub.cycle()
        await asyncio.sleep(0)
    frame('{"type": "ModifyQuerySet", "baseVersion": 5, "newVersion": 6, "modifications": []}')
    await closed.wait()
    await task
    texts = [json.loads(o["text"]) for o in outgoing if o["type"] == "websocket.send"]
    assert outgoing[0] == {"type": "websocket.accept"}
    assert texts[0]["type"] == "Transition"
    assert texts[-1]["type"] == "FatalError"
    assert "baseVersion" in texts[-1]["error"]
    assert outgoing[-1]["type"] == "websocket.close"
    assert not env.hub.entries, "the closed connection's subscriptions are gone"
    assert all(not isinstance(s, SyncSession) or s.queries == {} for s in env.hub.sessions)
