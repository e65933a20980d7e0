"""What a sync client is told of failures and log lines: everything for an admin
(and for every client of ``basalt dev``), Convex's ``[Request ID: …] Server
Error`` and no log lines for anyone else — per session, even when an admin and
an anonymous client share one execution of the same query."""

from __future__ import annotations

import logging
import re

import pytest

from basalt.runtime import logs

from . import app as app_module
from .conftest import ADMIN_KEY, MISSING, Client, Env

SECRET = "SECRET_DB_PASSWORD=hunter2"
REDACTED = re.compile(r"\[Request ID: ([0-9a-f]+)\] Server Error")


def request_id_of(message: str) -> str:
    """The request id of a message that says nothing more than Convex's production one."""
    match = REDACTED.fullmatch(message)
    assert match, f"not Convex's redacted message: {message!r}"
    return match.group(1)


def last_update(c: Client, qid: int) -> dict[str, object]:
    for msg in reversed(c.of_type("Transition")):
        for mod in msg["modifications"]:
            if mod["queryId"] == qid:
                return dict(mod)
    raise AssertionError(f"no update of query {qid}")


async def admin(env: Env) -> Client:
    c = await env.connected("admin")
    await c.authenticate("Admin", ADMIN_KEY)
    return c


async def test_one_shared_failing_query_is_told_in_each_clients_measure(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    logs.install()  # pytest swaps sys.stdout between fixture setup and the test
    anonymous = await env.connected("anonymous")
    boss = await admin(env)
    q_anon = await anonymous.subscribe("items:leaky", {"group": "g"})
    q_admin = await boss.subscribe("items:leaky", {"group": "g"})
    await env.settle()
    assert anonymous.value(q_anon) == boss.value(q_admin) == 0.0
    assert last_update(anonymous, q_anon)["logLines"] == []
    assert last_update(boss, q_admin)["logLines"] == [
        "[LOG] checked g: 0",
        "[WARN] 0 items in g",
    ]
    runs = app_module.CALLS["leaky"]
    assert runs == 1  # one execution serves both

    with caplog.at_level(logging.ERROR, logger="basalt.functions"):
        await env.runtime.mutation("items:add", {"group": "g", "n": -1.0})
        await env.settle()
    assert app_module.CALLS["leaky"] == runs + 1  # still one execution for both

    kind, message, data = anonymous.results[q_anon]
    assert kind == "error" and data is MISSING
    rid = request_id_of(message)
    failed = last_update(anonymous, q_anon)
    assert failed["logLines"] == []
    assert SECRET not in str(anonymous.received) and "ValueError" not in str(anonymous.received)

    kind, message, data = boss.results[q_admin]
    assert kind == "error" and data is MISSING
    assert message.startswith(f"[Request ID: {rid}] Server Error\nUncaught ValueError: {SECRET}")
    assert "app.py" in message  # where it was raised
    assert last_update(boss, q_admin)["logLines"] == ["[LOG] checked g: 1", "[WARN] 1 items in g"]

    # The server log has it all, under the request id the clients were given.
    [record] = [r for r in caplog.records if rid in r.getMessage()]
    assert SECRET in record.getMessage() and "items:leaky" in record.getMessage()
    assert record.exc_info is not None


async def test_log_lines_alone_changing_are_not_resent_to_anonymous_clients(env: Env) -> None:
    logs.install()
    anonymous = await env.connected("anonymous")
    boss = await admin(env)
    q_anon = await anonymous.subscribe("items:leaky", {"group": "h"})
    q_admin = await boss.subscribe("items:leaky", {"group": "h"})
    await env.settle()
    anon_mark, admin_mark = anonymous.mark(), boss.mark()
    # A zero item changes what the query prints, not what it returns.
    await env.runtime.mutation("items:add", {"group": "h", "n": 0.0})
    await env.settle()
    updated = [
        mod["queryId"]
        for msg in boss.since(admin_mark)
        if msg["type"] == "Transition"
        for mod in msg["modifications"]
    ]
    assert updated == [q_admin]
    assert not [
        mod
        for msg in anonymous.since(anon_mark)
        if msg["type"] == "Transition"
        for mod in msg["modifications"]
        if mod["queryId"] == q_anon
    ]


async def test_mutation_and_action_failures(env: Env) -> None:
    logs.install()
    anonymous = await env.connected("anonymous")
    boss = await admin(env)
    for kind in ("mutation", "action"):
        path = f"items:leaky_{kind}"
        anon_rid = await anonymous.request(kind.capitalize(), path)
        admin_rid = await boss.request(kind.capitalize(), path)
        await env.settle()
        told = anonymous.response(anon_rid)
        assert told["success"] is False and "errorData" not in told
        request_id_of(told["result"])
        assert told["logLines"] == []
        full = boss.response(admin_rid)
        assert f"Uncaught ValueError: {SECRET}" in full["result"]
        assert full["logLines"] == ["[LOG] about to fail"]
    assert SECRET not in str(anonymous.received)


async def test_a_convex_error_keeps_its_data_and_its_message(env: Env) -> None:
    c = await env.connected()
    rid = await c.action("items:refuse_action", {"code": "A_FAIL"})
    qid = await c.subscribe("items:refuse", {"code": "Q_FAIL"})
    await env.settle()
    response = c.response(rid)
    assert response["errorData"] == {"code": "A_FAIL"}
    assert re.fullmatch(
        r'\[Request ID: [0-9a-f]+\] Server Error\nUncaught ConvexError: \{"code": "A_FAIL"\}',
        response["result"],
    )
    _, message, data = c.results[qid]
    assert data == {"code": "Q_FAIL"}
    assert message.endswith('Uncaught ConvexError: {"code": "Q_FAIL"}')
    assert "app.py" not in message


async def test_internal_and_missing_queries_get_the_same_answer(env: Env) -> None:
    c = await env.connected()
    internal = await c.subscribe("items:secret")
    missing = await c.subscribe("items:no_such_thing")
    m_internal = await c.request("Mutation", "items:secret")
    await env.settle()

    def told(message: str) -> str:
        return REDACTED.sub("[Request ID: …] Server Error", message)

    _, about_internal, _ = c.results[internal]
    _, about_missing, _ = c.results[missing]
    assert told(about_internal).replace("items:secret", "items:no_such_thing") == told(
        about_missing
    )
    assert "Could not find public function for 'items:secret'" in about_internal
    assert "internal" not in about_internal and "items:leaky" not in about_missing
    assert told(c.response(m_internal)["result"]) == told(about_internal)


async def test_development_hub_tells_every_client_everything(dev_env: Env) -> None:
    logs.install()
    c = await dev_env.connected()
    qid = await c.subscribe("items:leaky", {"group": "d"})
    hidden = await c.subscribe("items:secret")
    await dev_env.runtime.mutation("items:add", {"group": "d", "n": -1.0})
    await dev_env.settle()
    _, message, _ = c.results[qid]
    assert f"Uncaught ValueError: {SECRET}" in message
    assert last_update(c, qid)["logLines"] == ["[LOG] checked d: 1", "[WARN] 1 items in d"]
    _, about_internal, _ = c.results[hidden]
    assert "internal function" in about_internal  # the hint is for developers only


async def test_becoming_admin_resends_what_was_held_back(env: Env) -> None:
    c = await env.connected()
    await env.runtime.mutation("items:add", {"group": "b", "n": -1.0})
    qid = await c.subscribe("items:leaky", {"group": "b"})
    await env.settle()
    request_id_of(c.results[qid][1])
    await c.authenticate("Admin", ADMIN_KEY)
    await env.settle()
    assert SECRET in c.results[qid][1]
    await c.authenticate("None")
    await env.settle()
    request_id_of(c.results[qid][1])
