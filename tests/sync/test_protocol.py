"""The sync protocol as the official clients rely on it (protocol.md §3):
query sets, version chaining, mutation and action responses, auth, paths.

Every message a session sends goes through :class:`Client`, which checks its
shape and that every Transition starts where the previous one ended."""

from __future__ import annotations

from typing import Any

from basalt.runtime import logs
from basalt.sync import ProtocolError

from . import app
from .conftest import ADMIN_KEY, MISSING, Client, Env, decode_ts, wait_for

# -- query sets -------------------------------------------------------------------


async def test_add_then_remove(env: Env) -> None:
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    [t1] = c.of_type("Transition")
    assert t1["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
    assert t1["endVersion"]["querySet"] == 1
    assert t1["endVersion"]["identity"] == 0
    assert decode_ts(t1["endVersion"]["ts"]) >= await env.runtime.storage.latest_ts() > 0
    assert t1["modifications"] == [
        {"type": "QueryUpdated", "queryId": qid, "value": [], "logLines": [], "journal": None}
    ]
    await c.unsubscribe(qid)
    await env.settle()
    t2 = c.of_type("Transition")[-1]
    assert t2["startVersion"] == t1["endVersion"]
    assert t2["endVersion"]["querySet"] == 2
    assert t2["modifications"] == [{"type": "QueryRemoved", "queryId": qid}]
    assert c.results == {}
    assert not env.hub.entries, "the last subscriber left: the execution is dropped"
    assert len(env.hub.index) == 0


async def test_several_modifications_in_one_message(env: Env) -> None:
    c = await env.connected()
    await env.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    await c.modify(
        [
            {"type": "Add", "queryId": 0, "udfPath": "items:by_group", "args": [{"group": "a"}]},
            {"type": "Add", "queryId": 1, "udfPath": "items:everything", "args": [{}]},
        ]
    )
    await env.settle()
    [t] = c.of_type("Transition")
    assert t["endVersion"]["querySet"] == 1
    assert {m["queryId"] for m in t["modifications"]} == {0, 1}
    assert c.value(0) == c.value(1) == [["a", 1.0, None]]
    # Remove one and add another in the same message; query ids need not be dense.
    await c.modify(
        [
            {"type": "Remove", "queryId": 0},
            {"type": "Add", "queryId": 7, "udfPath": "items:count_ns", "args": [{"group": "a"}]},
        ]
    )
    await env.settle()
    t = c.of_type("Transition")[-1]
    assert t["endVersion"]["querySet"] == 2
    assert sorted((m["type"], m["queryId"]) for m in t["modifications"]) == [
        ("QueryRemoved", 0),
        ("QueryUpdated", 7),
    ]
    assert c.results == {1: ("value", [["a", 1.0, None]]), 7: ("value", 1.0)}


async def test_args_as_an_object_and_encoded_values(env: Env) -> None:
    c = await env.connected()
    # protocol.md §7: accept args as an object as well as [object].
    await c.modify(
        [{"type": "Add", "queryId": 0, "udfPath": "items:by_group", "args": {"group": "a"}}]
    )
    await env.settle()
    assert c.value(0) == []
    rid = await c.mutation("items:add", {"group": "a", "n": 1.0, "label": "\u00e9\u0000"})
    await env.settle()
    assert c.response(rid)["success"] is True
    assert c.value(0) == [["a", 1.0, "\u00e9\u0000"]]


async def test_query_ids_are_per_session(env: Env) -> None:
    a, b = await env.connected("a"), await env.connected("b")
    qa = await a.subscribe("items:by_group", {"group": "x"})
    qb = await b.subscribe("items:by_group", {"group": "y"})
    assert qa == qb == 0
    await env.runtime.mutation("items:add", {"group": "y", "n": 1.0})
    await env.settle()
    assert a.value(0) == []
    assert b.value(0) == [["y", 1.0, None]]


# -- mutations --------------------------------------------------------------------


def _transitions_after(c: Client, index: int) -> list[dict[str, Any]]:
    return [m for m in c.received[index + 1 :] if m["type"] == "Transition"]


async def test_mutation_response_then_transition_at_its_ts(env: Env) -> None:
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    rid = await c.mutation("items:add", {"group": "a", "n": 1.0})
    await env.settle()
    response = c.response(rid)
    assert response["success"] is True
    assert isinstance(response["result"], str) and len(response["result"]) == 32
    assert response["logLines"] == []
    assert "errorData" not in response
    ts = decode_ts(response["ts"])
    position = c.received.index(response)
    after = _transitions_after(c, position)
    assert after, "a Transition must follow every MutationResponse"
    # npm resolves the mutation at the first Transition after the response that
    # reaches its ts; by then the client must see its own write.
    resolving = next(t for t in after if decode_ts(t["endVersion"]["ts"]) >= ts)
    model = Client(env.hub, "replay")
    for msg in c.received[: c.received.index(resolving) + 1]:
        if msg["type"] == "Transition":
            model._apply(msg)
    assert model.value(qid) == [["a", 1.0, None]]


async def test_mutation_without_subscriptions_still_gets_a_transition(env: Env) -> None:
    c = await env.connected()
    rid = await c.mutation("items:add", {"group": "a", "n": 1.0})
    await env.settle()
    response = c.response(rid)
    after = _transitions_after(c, c.received.index(response))
    assert len(after) == 1
    assert after[0]["modifications"] == []
    assert decode_ts(after[0]["endVersion"]["ts"]) >= decode_ts(response["ts"])


async def test_convex_error_mutation(env: Env) -> None:
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "rejected"})
    await env.settle()
    rid = await c.mutation(
        "items:reject", {"data": {"code": "NOPE", "n": {"$integer": "BwAAAAAAAAA="}}}
    )
    await env.settle()
    response = c.response(rid)
    assert response["success"] is False
    assert response["ts"] is None
    assert response["logLines"] == []
    assert response["errorData"] == {"code": "NOPE", "n": {"$integer": "BwAAAAAAAAA="}}
    assert response["result"].startswith("[Request ID: ")
    assert "Uncaught ConvexError" in response["result"]
    # Rust resolves a ConvexError mutation on the next Transition: one must follow.
    assert _transitions_after(c, c.received.index(response))
    # A failed mutation leaves no trace.
    assert c.value(qid) == []
    assert await env.fresh("items:by_group", {"group": "rejected"}) == []


async def test_convex_error_with_string_data(env: Env) -> None:
    c = await env.connected()
    rid = await c.mutation("items:reject", {"data": "plain"})
    await env.settle()
    assert c.response(rid)["errorData"] == "plain"


async def test_failed_mutation_has_no_error_data(dev_env: Env) -> None:
    env = dev_env  # the messages in full, as `basalt dev` tells them
    c = await env.connected()
    rid = await c.mutation("items:crash")
    await env.settle()
    response = c.response(rid)
    assert response["success"] is False
    assert response["ts"] is None
    assert "errorData" not in response
    assert "the mutation broke" in response["result"]
    assert _transitions_after(c, c.received.index(response))
    assert await env.fresh("items:by_group", {"group": "crashed"}) == []


async def test_unknown_mutation_fails_without_closing(env: Env) -> None:
    c = await env.connected()
    rid = await c.mutation("items:nope")
    await env.settle()
    response = c.response(rid)
    assert response["success"] is False
    assert "items:nope" in response["result"]
    assert "errorData" not in response
    assert not c.close_requested
    assert _transitions_after(c, c.received.index(response))


async def test_mutations_of_one_connection_run_in_order(env: Env) -> None:
    c = await env.connected()
    rids = [await c.mutation("items:counted", {"group": "g"}) for _ in range(5)]
    await env.settle()
    assert [c.response(r)["result"] for r in rids] == [1.0, 2.0, 3.0, 4.0, 5.0]
    stamps = [decode_ts(c.response(r)["ts"]) for r in rids]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    last_transition = c.of_type("Transition")[-1]
    assert decode_ts(last_transition["endVersion"]["ts"]) >= stamps[-1]


async def test_resent_mutation_is_not_applied_twice(env: Env) -> None:
    first = env.client("first socket")
    await first.connect()
    rid = await first.mutation("items:counted", {"group": "once"})
    await env.settle()
    original = first.response(rid)
    assert original["result"] == 1.0
    # npm keeps its sessionId across reconnects and re-sends in-flight mutations
    # with their original requestId.
    first.session.close()
    second = env.client("second socket")
    second.session_id = first.session_id
    await second.connect()
    await second.send(
        {
            "type": "Mutation",
            "requestId": rid,
            "udfPath": "items:counted",
            "args": [{"group": "once"}],
        }
    )
    await env.settle()
    again = second.response(rid)
    assert again == original
    assert _transitions_after(second, second.received.index(again))
    assert await env.fresh("items:count_ns", {"group": "once"}) == 1.0
    # Another session using the same request id is a different mutation.
    other = await env.connected("other")
    rid_other = await other.mutation("items:counted", {"group": "once"})
    assert rid_other == rid
    await env.settle()
    assert other.response(rid_other)["result"] == 2.0


async def test_resent_while_the_first_is_still_running(env: Env) -> None:
    first = env.client("first")
    await first.connect()
    second = env.client("second")
    second.session_id = first.session_id
    await second.connect()
    msg = {"type": "Mutation", "requestId": 0, "udfPath": "items:counted", "args": [{"group": "g"}]}
    await first.send(msg)
    await second.send(msg)
    await env.settle()
    assert first.response(0) == second.response(0)
    assert await env.fresh("items:count_ns", {"group": "g"}) == 1.0


async def test_mutation_runs_as_the_identity_it_was_sent_with(env: Env) -> None:
    c = await env.connected()
    await c.authenticate("User", "user:alice")
    rid = await c.mutation("items:who_mutates")
    # The client signs out right after sending the mutation (no await in between
    # that would let the mutation start).
    await c.authenticate("None")
    await env.settle()
    assert c.response(rid)["result"] == "alice"


# -- actions ----------------------------------------------------------------------


async def test_action_response(dev_env: Env) -> None:
    env = dev_env  # the messages in full, as `basalt dev` tells them
    logs.install()  # pytest swaps sys.stdout between fixture setup and the test
    c = await env.connected()
    rid = await c.action("items:shout", {"text": "ws"})
    await env.settle()
    response = c.response(rid)
    assert response["success"] is True
    assert response["result"] == {"shout": "WS"}
    assert response["logLines"] == ["[LOG] shouting ws"]
    assert "errorData" not in response


async def test_a_transition_follows_an_action(env: Env) -> None:
    """As after a mutation (the real server schedules a query update after every
    mutation or action result)."""
    c = await env.connected()
    rid = await c.action("items:shout", {"text": "x"})
    await env.settle()
    response = c.response(rid)
    assert c.received.index(response) == 0
    assert [m["type"] for m in c.received] == ["ActionResponse", "Transition"]


async def test_action_errors(dev_env: Env) -> None:
    env = dev_env  # the messages in full, as `basalt dev` tells them
    c = await env.connected()
    r1 = await c.action("items:refuse_action", {"code": "A_FAIL"})
    r2 = await c.action("items:broken_action")
    r3 = await c.action("items:by_group", {"group": "a"})  # a query, not an action
    await env.settle()
    failed = c.response(r1)
    assert failed["success"] is False
    assert failed["errorData"] == {"code": "A_FAIL"}
    assert "Uncaught ConvexError" in failed["result"]
    broken = c.response(r2)
    assert broken["success"] is False and "errorData" not in broken
    assert "the action broke" in broken["result"]
    wrong_kind = c.response(r3)
    assert wrong_kind["success"] is False and "errorData" not in wrong_kind
    assert not c.close_requested


# -- query results ----------------------------------------------------------------


async def test_query_failures(dev_env: Env) -> None:
    env = dev_env  # the messages in full, as `basalt dev` tells them
    c = await env.connected()
    q_boom = await c.subscribe("items:boom")
    q_refuse = await c.subscribe("items:refuse", {"code": "Q_FAIL"})
    q_missing = await c.subscribe("items:no_such_query")
    q_missing_module = await c.subscribe("nomodule:fn")
    q_mutation = await c.subscribe("items:add", {"group": "a", "n": 1.0})
    q_ok = await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    assert not c.close_requested, "an unknown function is not a fatal error"
    kind, message, data = c.results[q_boom]
    assert kind == "error" and "kaboom" in message and data is MISSING
    kind, message, data = c.results[q_refuse]
    assert kind == "error" and "ConvexError" in message and data == {"code": "Q_FAIL"}
    for qid, path in [
        (q_missing, "items:no_such_query"),
        (q_missing_module, "nomodule:fn"),
        (q_mutation, "items:add"),
    ]:
        kind, message, data = c.results[qid]
        assert kind == "error" and path in message and data is MISSING
    assert c.value(q_ok) == []
    # Nothing was written by subscribing to a mutation.
    assert await env.fresh("items:everything") == []


async def test_log_lines_of_queries(dev_env: Env) -> None:
    env = dev_env  # the messages in full, as `basalt dev` tells them
    logs.install()
    c = await env.connected()
    qid = await c.subscribe("items:logs", {"group": "a"})
    await env.settle()
    [update] = c.of_type("Transition")[-1]["modifications"]
    assert update["queryId"] == qid
    assert update["logLines"] == ["[LOG] looking at a"]


async def test_error_in_a_query_is_retried_after_a_write(env: Env) -> None:
    c = await env.connected()
    doc_id = await env.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    qid = await c.subscribe("items:get", {"id": doc_id})
    bad = await c.subscribe("items:get", {"id": "not an id"})
    await env.settle()
    assert c.value(qid) == ["a", 1.0, None]
    assert c.results[bad][0] == "error"
    await env.runtime.mutation("items:remove", {"id": doc_id})
    await env.settle()
    assert c.value(qid) is None


async def test_paths_are_canonicalised(env: Env) -> None:
    c = await env.connected()
    q1 = await c.subscribe("items:by_group", {"group": "a"})
    q2 = await c.subscribe("items.js:by_group", {"group": "a"})
    q3 = await c.subscribe("counter")
    q4 = await c.subscribe("counter.js")
    await env.settle()
    assert c.value(q1) == c.value(q2) == []
    assert c.value(q3) == c.value(q4) == "the default export"
    assert len({id(e) for e in env.hub.entries.values()}) == 2
    assert app.CALLS["by_group"] == 1, "both spellings share one execution"
    rid = await c.mutation("items.js:add", {"group": "a", "n": 2.0})
    await env.settle()
    assert c.response(rid)["success"] is True
    assert c.value(q1) == c.value(q2) == [["a", 2.0, None]]


# -- versions and timestamps ------------------------------------------------------


async def test_versions_chain_through_everything(env: Env) -> None:
    """Every Transition starts at the previous end (checked by Client on receipt);
    query set and identity versions count what the client sent."""
    c = await env.connected()
    await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    await c.authenticate("User", "user:alice")
    await env.settle()
    await c.mutation("items:add", {"group": "a", "n": 1.0})
    await c.subscribe("items:whoami")
    await env.settle()
    await c.authenticate("None")
    await c.unsubscribe(0)
    await env.settle()
    await env.runtime.mutation("items:add", {"group": "b", "n": 1.0})
    await c.mutation("items:reject", {"data": "no"})
    await env.settle()
    versions = [(t["endVersion"]) for t in c.of_type("Transition")]
    assert versions[-1]["querySet"] == 3
    assert versions[-1]["identity"] == 2
    stamps = [decode_ts(v["ts"]) for v in versions]
    assert stamps == sorted(stamps)
    assert c.value(1) is None


async def test_connect_with_a_timestamp_from_the_future_is_refused(env: Env) -> None:
    c = env.client()
    latest = await env.runtime.storage.latest_ts()
    try:
        await c.connect(max_observed_ts=latest + 10**12)
    except ProtocolError as exc:
        assert "maxObservedTimestamp" in exc.message or "timestamp" in exc.message
    else:
        raise AssertionError("Connect from the future was accepted")
    ok = env.client()
    await ok.connect(max_observed_ts=latest)


async def test_transition_timestamps_start_at_the_data(env: Env) -> None:
    """The first Transition's ts is the data's latest commit, not 0 and not wall time
    (protocol.md §3.4: it must not decrease across restarts)."""
    await env.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    latest = await env.runtime.storage.latest_ts()
    c = await env.connected()
    await c.subscribe("items:everything")
    await env.settle()
    assert decode_ts(c.of_type("Transition")[0]["endVersion"]["ts"]) == latest


# -- authentication ---------------------------------------------------------------


async def test_authenticate_user_and_none(env: Env) -> None:
    c = await env.connected()
    qid = await c.subscribe("items:whoami")
    await env.settle()
    assert c.value(qid) is None
    await c.authenticate("User", "user:alice")
    await env.settle()
    t = c.of_type("Transition")[-1]
    assert t["endVersion"]["identity"] == 1
    assert c.value(qid) == "alice"
    await c.authenticate("None")
    await env.settle()
    assert c.of_type("Transition")[-1]["endVersion"]["identity"] == 2
    assert c.value(qid) is None


async def test_authenticate_admin(env: Env) -> None:
    c = await env.connected()
    qid = await c.subscribe("items:secret")
    await env.settle()
    assert c.results[qid][0] == "error", "an internal query needs the admin key"
    await c.authenticate("Admin", ADMIN_KEY)
    await env.settle()
    assert c.of_type("Transition")[-1]["endVersion"]["identity"] == 1
    assert c.value(qid) == "classified"
    # Admin impersonating a user: the identity is the one given.
    who = await c.subscribe("items:whoami")
    await c.authenticate(
        "Admin", ADMIN_KEY, impersonating={"issuer": "https://test", "subject": "bob"}
    )
    await env.settle()
    assert c.value(who) == "bob"
    assert c.value(qid) == "classified"


async def test_wrong_admin_key(env: Env) -> None:
    c = await env.connected()
    await c.authenticate("None")
    await env.settle()
    mark = c.mark()
    await c.send({"type": "Authenticate", "baseVersion": 1, "tokenType": "Admin", "value": "bad"})
    [error] = c.since(mark)
    assert error["type"] == "AuthError"
    assert error["baseVersion"] == 1
    assert error["authUpdateAttempted"] is True
    assert "admin key" in error["error"]
    assert c.close_requested
    assert c.session.identity_version == 1 and not c.session.admin


async def test_bad_user_token(env: Env) -> None:
    c = await env.connected()
    await c.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": "junk"})
    [error] = c.received
    assert error == {
        "type": "AuthError",
        "error": "Could not verify the token",
        "baseVersion": 0,
        "authUpdateAttempted": True,
    }
    assert c.close_requested


async def test_events_are_ignored(env: Env) -> None:
    c = await env.connected()
    await c.send({"type": "Event", "eventType": "ClientConnect", "event": {"x": 1}})
    await env.settle()
    assert c.received == []


async def test_closed_session_gets_nothing_more(env: Env) -> None:
    c = await env.connected()
    other = await env.connected()
    await c.subscribe("items:by_group", {"group": "a"})
    await other.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    mark = c.mark()
    c.session.close()
    await env.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    await env.settle()
    assert c.since(mark) == []
    assert other.value(0) == [["a", 1.0, None]]
    assert c.session not in env.hub.sessions
    [entry] = set(env.hub.entries.values())
    assert {s for s, _ in entry.subscribers} == {other.session}


async def test_the_hub_task_delivers_without_explicit_cycles(env: Env) -> None:
    """The started hub wakes on its own after a subscription and after a commit."""
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "a"})
    await wait_for(lambda: qid in c.results, "the first value")
    await env.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    await wait_for(lambda: c.results[qid] == ("value", [["a", 1.0, None]]), "the update")
