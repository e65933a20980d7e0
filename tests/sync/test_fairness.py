"""Refresh cycles share the server (basalt.sync.hub): a cycle starts runs for a
bounded time and leaves the rest to the next one, connections take turns, and
a connection whose results are not all up to date at a cycle's snapshot waits
rather than mix snapshots in one Transition. The hubs here are driven cycle by
cycle (no background task), with a tiny time budget: one run per cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from basalt.sync import SyncHub

from . import app
from .conftest import Client, Env


@pytest.fixture
async def hub(env: Env) -> AsyncIterator[SyncHub]:
    """A hub whose cycles run one query each (every run takes longer than the
    budget), listening to commits but without a task of its own."""
    made = SyncHub(env.runtime, cycle_seconds=1e-6, session_seconds=1e-6)
    made._unlisten = env.runtime.storage.on_commit(made._on_commit)
    try:
        yield made
    finally:
        made._unlisten()


async def _connected(hub: SyncHub, name: str) -> Client:
    c = Client(hub, name)
    await c.connect()
    return c


async def _add_slow(c: Client, count: int, group: str) -> None:
    args = [{"group": group, "salt": float(i)} for i in range(count)]
    await c.modify(
        [
            {"type": "Add", "queryId": i, "udfPath": "items:slow", "args": [a]}
            for i, a in enumerate(args)
        ]
    )


async def test_a_connection_with_many_queries_does_not_hold_the_others(
    env: Env, hub: SyncHub
) -> None:
    greedy = await _connected(hub, "greedy")
    await _add_slow(greedy, 10, "g")
    await hub.cycle()  # one of greedy's queries runs
    polite = await _connected(hub, "polite")
    await polite.subscribe("items:slow", {"group": "p"})
    await hub.cycle()  # polite's turn comes first
    assert polite.results == {0: ("value", [])}
    assert greedy.of_type("Transition") == []
    cycles = 2
    while not greedy.of_type("Transition"):
        await hub.cycle()
        cycles += 1
    # Every greedy query ran once, one per cycle; its one Transition has them all.
    assert cycles == 11
    assert app.CALLS["slow"] == 11
    [transition] = greedy.of_type("Transition")
    assert len(transition["modifications"]) == 10


async def test_turns_go_to_the_connections_served_longest_ago(env: Env, hub: SyncHub) -> None:
    a = await _connected(hub, "a")
    b = await _connected(hub, "b")
    await _add_slow(a, 3, "a")
    await _add_slow(b, 3, "b")
    order = []
    for _ in range(6):
        before = (a.session.served, b.session.served)
        await hub.cycle()
        order.append("a" if a.session.served != before[0] else "b")
    assert order in (["a", "b"] * 3, ["b", "a"] * 3)


async def test_a_transition_never_mixes_snapshots(env: Env, hub: SyncHub) -> None:
    """Two queries re-run in separate cycles after a commit: the client gets
    one Transition with both new results, after the second has run."""
    c = await _connected(hub, "c")
    await _add_slow(c, 2, "mixed")
    writer = await _connected(hub, "writer")
    for _ in range(2):
        await hub.cycle()
    assert c.results == {0: ("value", []), 1: ("value", [])}
    seen = len(c.of_type("Transition"))
    await writer.mutation("items:add", {"group": "mixed", "n": 1.0})
    await writer.session.join_requests()
    await hub.cycle()  # one of the two runs again
    assert len(c.of_type("Transition")) == seen
    await hub.cycle()  # the other
    assert len(c.of_type("Transition")) == seen + 1
    new = ("value", [["mixed", 1.0, None]])
    assert c.results == {0: new, 1: new}


async def test_a_turn_runs_all_of_a_connections_queries_it_has_time_for(env: Env) -> None:
    """With a turn long enough for them, a connection's queries run in one
    cycle (it is refreshed as a whole); the next connection's turn waits for
    the next cycle once the cycle's time is up."""
    hub = SyncHub(env.runtime, cycle_seconds=1e-6, session_seconds=60.0)
    first = await _connected(hub, "first")
    second = await _connected(hub, "second")
    await _add_slow(first, 5, "first")
    await _add_slow(second, 5, "second")
    await hub.cycle()
    done = [c for c in (first, second) if c.of_type("Transition")]
    assert len(done) == 1 and len(done[0].results) == 5
    await hub.cycle()
    assert len(first.results) == len(second.results) == 5
    assert hub.cycles_over_time == 1
