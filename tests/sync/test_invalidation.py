"""Which commits re-run which subscriptions, what is (not) sent, and how query
executions are shared (ARCHITECTURE.md: a subscription is invalidated iff a
written key falls in one of its ranges)."""

from __future__ import annotations

import asyncio
from typing import Any

from . import app
from .conftest import ADMIN_KEY, Client, Env, MakeEnv, decode_ts


def updates(c: Client, mark: int, qid: int) -> list[Any]:
    """The values sent for ``qid`` since ``mark``."""
    return [
        mod["value"]
        for msg in c.since(mark)
        if msg["type"] == "Transition"
        for mod in msg["modifications"]
        if mod["type"] == "QueryUpdated" and mod["queryId"] == qid
    ]


async def seed(env: Env, *items: tuple[str, float]) -> list[str]:
    return [await env.runtime.mutation("items:add", {"group": g, "n": n}) for g, n in items]


async def check_fresh(env: Env, c: Client, qid: int, path: str, args: dict[str, Any]) -> None:
    assert c.value(qid) == await env.fresh(path, args)


async def test_index_range_eq_prefix_and_bounds(env: Env) -> None:
    ids = await seed(env, ("a", 1.0), ("a", 3.0), ("b", 3.0))
    c = await env.connected()
    args = {"group": "a", "lo": 2.0, "hi": 5.0}
    qid = await c.subscribe("items:in_range", args)
    await env.settle()
    assert c.value(qid) == [["a", 3.0, None]]
    runs = app.CALLS["in_range"]

    # Outside the range: same group below/above the bounds, other groups, the
    # upper bound itself (exclusive).
    mark = c.mark()
    for group, n in [("a", 1.5), ("a", 5.0), ("a", 7.0), ("b", 4.0), ("", 3.0), ("a ", 3.0)]:
        await env.runtime.mutation("items:add", {"group": group, "n": n})
    await env.settle()
    assert c.since(mark) == [], "writes outside what the query read send nothing"
    assert app.CALLS["in_range"] == runs, "... and do not even re-run it"

    # The lower bound is inclusive.
    await env.runtime.mutation("items:add", {"group": "a", "n": 2.0})
    await env.settle()
    assert updates(c, mark, qid) == [[["a", 2.0, None], ["a", 3.0, None]]]

    # A patch that moves a document out of the range, and one that moves a
    # document of another group into it.
    mark = c.mark()
    await env.runtime.mutation("items:move", {"id": ids[1], "n": 10.0})
    await env.settle()
    assert updates(c, mark, qid) == [[["a", 2.0, None]]]
    await env.runtime.mutation("items:move", {"id": ids[2], "group": "a", "n": 4.0})
    await env.settle()
    assert updates(c, mark, qid)[-1] == [["a", 2.0, None], ["a", 4.0, None]]
    # Moving a document that stays outside (a:1 → a:1.2) sends nothing.
    mark = c.mark()
    await env.runtime.mutation("items:move", {"id": ids[0], "n": 1.2})
    await env.settle()
    assert c.since(mark) == []
    await check_fresh(env, c, qid, "items:in_range", args)


async def test_take_that_stopped_early(env: Env) -> None:
    await seed(env, ("a", 1.0), ("a", 2.0), ("a", 3.0), ("a", 4.0))
    c = await env.connected()
    asc = await c.subscribe("items:first_n", {"group": "a", "count": 2})
    desc = await c.subscribe("items:first_n", {"group": "a", "count": 2, "order": "desc"})
    await env.settle()
    assert c.value(asc) == [["a", 1.0, None], ["a", 2.0, None]]
    assert c.value(desc) == [["a", 4.0, None], ["a", 3.0, None]]

    # Between the two windows: after the last key either query read.
    mark = c.mark()
    await env.runtime.mutation("items:add", {"group": "a", "n": 2.5})
    await env.settle()
    assert c.since(mark) == []
    # An equal n sorts after the existing one (creation time breaks ties): still
    # outside the ascending window.
    await env.runtime.mutation("items:add", {"group": "a", "n": 2.0})
    await env.settle()
    assert c.since(mark) == []

    # Inside the ascending window; then inside the descending one.
    await env.runtime.mutation("items:add", {"group": "a", "n": 0.5})
    await env.settle()
    assert updates(c, mark, asc) == [[["a", 0.5, None], ["a", 1.0, None]]]
    assert updates(c, mark, desc) == []
    await env.runtime.mutation("items:add", {"group": "a", "n": 9.0})
    await env.settle()
    assert updates(c, mark, desc) == [[["a", 9.0, None], ["a", 4.0, None]]]
    await check_fresh(env, c, asc, "items:first_n", {"group": "a", "count": 2})


async def test_take_that_read_everything_sees_appends(env: Env) -> None:
    await seed(env, ("a", 1.0))
    c = await env.connected()
    qid = await c.subscribe("items:first_n", {"group": "a", "count": 3})
    await env.settle()
    await env.runtime.mutation("items:add", {"group": "a", "n": 100.0})
    await env.settle()
    assert c.value(qid) == [["a", 1.0, None], ["a", 100.0, None]]


async def test_get_by_id(env: Env) -> None:
    one, two = await seed(env, ("a", 1.0), ("a", 2.0))
    c = await env.connected()
    qid = await c.subscribe("items:get", {"id": one})
    await env.settle()
    assert c.value(qid) == ["a", 1.0, None]
    mark = c.mark()
    await env.runtime.mutation("items:move", {"id": two, "n": 5.0})
    await env.runtime.mutation("items:remove", {"id": two})
    await env.settle()
    assert c.since(mark) == [], "another document's changes send nothing"
    await env.runtime.mutation("items:move", {"id": one, "group": "z"})
    await env.settle()
    assert c.value(qid) == ["z", 1.0, None]
    await env.runtime.mutation("items:remove", {"id": one})
    await env.settle()
    assert c.value(qid) is None


async def test_table_that_does_not_exist_yet(env: Env) -> None:
    c = await env.connected()
    qid = await c.subscribe("items:later")
    await env.settle()
    assert c.value(qid) == []
    mark = c.mark()
    await seed(env, ("a", 1.0))  # another table: nothing to say
    await env.settle()
    assert c.since(mark) == []
    await env.runtime.mutation("items:add_later", {"text": "first"})
    await env.settle()
    assert c.value(qid) == ["first"]
    await env.runtime.mutation("items:add_later", {"text": "second"})
    await env.settle()
    assert c.value(qid) == ["first", "second"]


async def test_delete(env: Env) -> None:
    ids = await seed(env, ("a", 1.0), ("a", 2.0), ("b", 1.0))
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "a"})
    everything = await c.subscribe("items:everything")
    await env.settle()
    mark = c.mark()
    await env.runtime.mutation("items:remove", {"id": ids[2]})
    await env.settle()
    assert updates(c, mark, qid) == []
    assert updates(c, mark, everything) == [[["a", 1.0, None], ["a", 2.0, None]]]
    await env.runtime.mutation("items:remove", {"id": ids[0]})
    await env.settle()
    assert c.value(qid) == c.value(everything) == [["a", 2.0, None]]


async def test_patch_of_a_field_no_index_holds(env: Env) -> None:
    [one] = await seed(env, ("a", 1.0))
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "a"})
    await env.settle()
    await env.runtime.mutation("items:relabel", {"id": one, "label": "new"})
    await env.settle()
    assert c.value(qid) == [["a", 1.0, "new"]]


async def test_patch_seen_by_a_full_scan(env: Env) -> None:
    """A full scan reads by_creation_time, whose key no patch changes."""
    [one] = await seed(env, ("a", 1.0))
    c = await env.connected()
    qid = await c.subscribe("items:everything")
    await env.settle()
    await env.runtime.mutation("items:move", {"id": one, "group": "b", "n": 2.0})
    await env.settle()
    assert c.value(qid) == [["b", 2.0, None]]


async def test_same_result_is_not_sent_again(env: Env) -> None:
    [one] = await seed(env, ("a", 1.0))
    c = await env.connected()
    counted = await c.subscribe("items:count_ns", {"group": "a"})
    other = await env.connected("other")
    await other.subscribe("items:count_ns", {"group": "b"})
    await env.settle()
    runs = app.CALLS["count_ns"]
    mark, other_mark = c.mark(), other.mark()
    # Moves inside the group: the query re-runs, its result (a count) is the same.
    await env.runtime.mutation("items:move", {"id": one, "n": 2.0})
    await env.runtime.mutation("items:move", {"id": one, "n": 3.0})
    await env.settle()
    assert app.CALLS["count_ns"] > runs, "the query was re-run"
    assert c.since(mark) == [], "no QueryUpdated and no empty Transition"
    assert other.since(other_mark) == []
    await env.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    await env.settle()
    assert updates(c, mark, counted) == [2.0]
    assert other.since(other_mark) == []


async def test_unrelated_commits_send_nothing(env: Env) -> None:
    watcher = await env.connected("watcher")
    await watcher.subscribe("items:by_group", {"group": "a"})
    idle = await env.connected("idle")  # no queries at all
    writer = await env.connected("writer")
    await env.settle()
    marks = watcher.mark(), idle.mark()
    rid = await writer.mutation("items:add", {"group": "b", "n": 1.0})
    await env.runtime.mutation("items:add", {"group": "c", "n": 1.0})
    await env.settle()
    assert watcher.since(marks[0]) == []
    assert idle.since(marks[1]) == []
    # The writer itself gets its response and a Transition.
    assert writer.response(rid)["success"]
    assert writer.received[-1]["type"] == "Transition"


async def test_two_sessions_share_one_execution(env: Env) -> None:
    a, b = await env.connected("a"), await env.connected("b")
    qa = await a.subscribe("items:by_group", {"group": "g"})
    qb = await b.subscribe("items:by_group", {"group": "g"})
    await env.settle()
    assert app.CALLS["by_group"] == 1
    [entry] = set(env.hub.entries.values())
    assert entry.subscribers == {(a.session, qa), (b.session, qb)}
    await env.runtime.mutation("items:add", {"group": "g", "n": 1.0})
    await env.settle()
    assert app.CALLS["by_group"] == 2
    assert a.value(qa) == b.value(qb) == [["g", 1.0, None]]
    # A third subscriber joining later gets the current value without a re-run.
    c = await env.connected("c")
    qc = await c.subscribe("items:by_group", {"group": "g"})
    await env.settle()
    assert c.value(qc) == [["g", 1.0, None]]
    assert app.CALLS["by_group"] == 2
    # Different arguments are a different execution; argument order does not matter.
    await c.subscribe("items:in_range", {"group": "g", "lo": 0.0, "hi": 9.0})
    await a.subscribe("items:in_range", {"hi": 9.0, "lo": 0.0, "group": "g"})
    await b.subscribe("items:in_range", {"group": "g", "lo": 0.0, "hi": 8.0})
    await env.settle()
    assert app.CALLS["in_range"] == 2


async def test_one_execution_per_identity_when_auth_is_read(env: Env) -> None:
    alice, bob, alice2, anon = [await env.connected(n) for n in ("alice", "bob", "alice2", "anon")]
    for c, token in [(alice, "user:alice"), (bob, "user:bob"), (alice2, "user:alice")]:
        await c.authenticate("User", token)
    await env.settle()
    for c in (alice, bob, alice2, anon):
        await c.subscribe("items:whoami")
    await env.settle()
    assert [c.value(0) for c in (alice, bob, alice2, anon)] == ["alice", "bob", "alice", None]
    assert app.CALLS["whoami"] == 3
    # Queries that do not read auth are still shared across identities.
    for c in (alice, bob, anon):
        await c.subscribe("items:by_group", {"group": "g"})
    await env.settle()
    assert app.CALLS["by_group"] == 1


async def test_a_shared_execution_that_starts_reading_auth_is_split(env: Env) -> None:
    alice, bob = await env.connected("alice"), await env.connected("bob")
    await alice.authenticate("User", "user:alice")
    await bob.authenticate("User", "user:bob")
    qa = await alice.subscribe("items:maybe_whoami", {"group": "g"})
    await env.settle()
    qb = await bob.subscribe("items:maybe_whoami", {"group": "g"})
    await env.settle()
    assert alice.value(qa) == bob.value(qb) == "nobody"
    assert app.CALLS["maybe_whoami"] == 1
    [one] = await seed(env, ("g", 1.0))
    await env.settle()
    assert alice.value(qa) == "alice"
    assert bob.value(qb) == "bob"
    # Both keep receiving changes afterwards.
    await env.runtime.mutation("items:remove", {"id": one})
    await env.settle()
    assert alice.value(qa) == bob.value(qb) == "nobody"


async def test_split_after_the_first_subscriber_left(env: Env) -> None:
    """The execution belongs to the caller who made it; when that caller is gone
    and the others are moved to their own executions, the orphan must not linger
    (it would serve a stale value to the next subscriber)."""
    alice, bob = await env.connected("alice"), await env.connected("bob")
    await alice.authenticate("User", "user:alice")
    await bob.authenticate("User", "user:bob")
    qa = await alice.subscribe("items:maybe_whoami", {"group": "g"})
    await env.settle()
    qb = await bob.subscribe("items:maybe_whoami", {"group": "g"})
    await env.settle()
    await alice.unsubscribe(qa)
    await env.settle()
    [one] = await seed(env, ("g", 1.0))
    await env.settle()
    assert bob.value(qb) == "bob"
    qa = await alice.subscribe("items:maybe_whoami", {"group": "g"})
    await env.settle()
    assert alice.value(qa) == "alice"
    await env.runtime.mutation("items:remove", {"id": one})
    await env.settle()
    assert bob.value(qb) == "nobody"
    assert alice.value(qa) == "nobody"


async def test_an_internal_query_is_not_shared_with_non_admins(env: Env) -> None:
    admin = await env.connected("admin")
    await admin.authenticate("Admin", ADMIN_KEY)
    q_admin = await admin.subscribe("items:secret")
    await env.settle()
    assert admin.value(q_admin) == "classified"
    anon = await env.connected("anon")
    q_anon = await anon.subscribe("items:secret")
    await env.settle()
    assert anon.results[q_anon][0] == "error"
    assert "items:secret" in anon.results[q_anon][1]
    # ... nor the other way round: a failed resolution is not served to an admin.
    admin2 = await env.connected("admin2")
    await admin2.authenticate("Admin", ADMIN_KEY)
    anon2 = await env.connected("anon2")
    await anon2.subscribe("items:secret", {"x": 1.0})
    await env.settle()
    await admin2.subscribe("items:secret", {"x": 1.0})
    await env.settle()
    assert admin2.value(0) == "classified"


async def test_commit_while_a_cycle_runs(env: Env) -> None:
    """A commit that lands while a refresh cycle is re-running a query (after
    the cycle's snapshot, before the new read set is filed) must not be lost."""
    app.GATE.update(open=asyncio.Event(), entered=asyncio.Event())
    try:
        c = await env.connected()
        qid = await c.subscribe("items:gated", {"group": "a"})
        cycle = asyncio.create_task(env.hub.cycle())
        await app.GATE["entered"].wait()  # the query runs at the cycle's snapshot
        writer = await env.connected("writer")
        rid = await writer.mutation("items:add", {"group": "a", "n": 1.0})
        await writer.session.join_requests()
        app.GATE["open"].set()
        await cycle
        await env.settle()
        assert c.value(qid) == [["a", 1.0, None]]
        assert writer.response(rid)["success"]
        # The writer's Transition after its response reaches the mutation's ts.
        ts = decode_ts(writer.response(rid)["ts"])
        assert decode_ts(writer.received[-1]["endVersion"]["ts"]) >= ts
    finally:
        app.GATE.clear()


async def test_commits_the_hub_was_not_told_about(env: Env, make_env: MakeEnv) -> None:
    """Another engine on the same file (another process, in effect) commits
    without notifying this hub: the next cycle finds those commits in its
    snapshot and re-runs what they touched."""
    c = await env.connected()
    qid = await c.subscribe("items:by_group", {"group": "a"})
    other_q = await c.subscribe("items:by_group", {"group": "b"})
    await env.settle()
    other = await make_env()  # same database file, its own engine and hub
    await other.runtime.mutation("items:add", {"group": "a", "n": 1.0})
    await env.hub.cycle()
    assert c.value(qid) == [["a", 1.0, None]]
    assert c.value(other_q) == []
    # And a local commit still works afterwards.
    await env.runtime.mutation("items:add", {"group": "b", "n": 2.0})
    await env.settle()
    assert c.value(other_q) == [["b", 2.0, None]]


async def test_mutation_during_a_cycle_gets_a_transition_at_its_ts(env: Env) -> None:
    """The writer's mutation is answered while a cycle holds an older snapshot;
    the Transition that follows must still reach the mutation's ts."""
    app.GATE.update(open=asyncio.Event(), entered=asyncio.Event())
    try:
        watcher = await env.connected("watcher")
        await watcher.subscribe("items:gated", {"group": "z"})
        writer = await env.connected("writer")
        cycle = asyncio.create_task(env.hub.cycle())
        await app.GATE["entered"].wait()
        rid = await writer.mutation("items:add", {"group": "b", "n": 1.0})
        await writer.session.join_requests()
        app.GATE["open"].set()
        await cycle
        await env.settle()
        response = writer.response(rid)
        ts = decode_ts(response["ts"])
        after = writer.received[writer.received.index(response) + 1 :]
        assert any(
            m["type"] == "Transition" and decode_ts(m["endVersion"]["ts"]) >= ts for m in after
        )
    finally:
        app.GATE.clear()
