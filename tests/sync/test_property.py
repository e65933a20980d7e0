"""Random interleavings of writes, subscriptions and refresh cycles: after the
hub has caught up, every value a client holds (its Transitions applied, as a
client applies them) equals a fresh run of that query at the current state.

Seeded, so a failure reproduces; bounded to a few seconds."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from basalt.errors import BasaltError

from . import app
from .conftest import Client, Env, MakeEnv, decode_ts

GROUPS = ["a", "b", "c"]
NUMBERS = [0.0, 1.0, 1.5, 2.0, 3.0]


class World:
    def __init__(self, env: Env, rng: random.Random, *, unchanged_keys: bool) -> None:
        self.env = env
        self.rng = rng
        #: also patches that leave some index key unchanged which a query read
        #: (full scans by creation time after a move; labels, which no index holds)
        self.unchanged_keys = unchanged_keys
        self.ids: list[str] = []  # every id ever inserted (some deleted since)
        self.clients: list[Client] = []
        #: (client, query id) → (path, args)
        self.subscriptions: dict[tuple[Client, int], tuple[str, dict[str, Any]]] = {}

    def random_query(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        group = rng.choice(GROUPS)
        shapes: list[tuple[str, dict[str, Any]]] = [
            ("items:by_group", {"group": group}),
            (
                "items:in_range",
                {"group": group, "lo": rng.choice(NUMBERS), "hi": rng.choice(NUMBERS) + 0.5},
            ),
            (
                "items:first_n",
                {"group": group, "count": rng.randint(0, 3), "order": rng.choice(["asc", "desc"])},
            ),
            ("items:count_ns", {"group": group}),
            ("items:later", {}),
            ("items:two_groups", {"first": group, "second": rng.choice(GROUPS)}),
        ]
        if self.unchanged_keys:
            shapes.append(("items:everything", {}))
        if self.ids:
            shapes.append(("items:get", {"id": rng.choice(self.ids)}))
        return rng.choice(shapes)

    def random_mutation(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        if not self.ids or roll < 0.4:
            return "items:add", {"group": rng.choice(GROUPS), "n": rng.choice(NUMBERS)}
        doc = rng.choice(self.ids)
        if roll < 0.6:
            fields: dict[str, Any] = {"id": doc}
            if rng.random() < 0.5:
                fields["group"] = rng.choice(GROUPS)
            if rng.random() < 0.7:
                fields["n"] = rng.choice(NUMBERS)
            return "items:move", fields
        if roll < 0.75:
            return "items:remove", {"id": doc}
        if roll < 0.8:
            return "items:add_later", {"text": f"t{rng.randint(0, 9)}"}
        if self.unchanged_keys and roll < 0.95:
            return "items:relabel", {"id": doc, "label": rng.choice(["x", "y", None])}
        return "items:add", {"group": rng.choice(GROUPS), "n": rng.choice(NUMBERS)}

    async def mutate(self, path: str, args: dict[str, Any], via: Client | None) -> None:
        if via is not None:
            await via.mutation(path, args)
            return
        try:
            result = await self.env.runtime.mutation(path, args)
        except BasaltError:
            return  # a patch or delete of a document deleted since: fine
        if path == "items:add":
            self.ids.append(result)

    def collect_ids(self) -> None:
        """Ids the clients' own insert mutations returned."""
        for c in self.clients:
            for msg in c.of_type("MutationResponse"):
                result = msg["result"]
                if msg["success"] and isinstance(result, str) and result not in self.ids:
                    self.ids.append(result)

    async def step(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08 or not self.clients:
            c = await self.env.connected(f"client{len(self.clients)}")
            self.clients.append(c)
        elif roll < 0.35:
            c = rng.choice(self.clients)
            path, args = self.random_query()
            qid = await c.subscribe(path, args)
            self.subscriptions[(c, qid)] = (path, args)
        elif roll < 0.42 and self.subscriptions:
            c, qid = rng.choice(sorted(self.subscriptions, key=lambda k: (k[0].name, k[1])))
            await c.unsubscribe(qid)
            del self.subscriptions[(c, qid)]
        else:
            # A batch of writes, some from clients and some direct, with refresh
            # cycles running in between and during them.
            jobs = []
            for _ in range(rng.randint(1, 4)):
                via = rng.choice([None, *self.clients])
                jobs.append(self.mutate(*self.random_mutation(), via))
                if rng.random() < 0.3:
                    jobs.append(self.env.hub.cycle())
            await asyncio.gather(*jobs)
        if rng.random() < 0.7:
            await self.check()

    async def check(self) -> None:
        env = self.env
        await env.settle()
        self.collect_ids()
        fresh: dict[tuple[str, str], Any] = {}
        for (c, qid), (path, args) in self.subscriptions.items():
            key = (path, repr(sorted(args.items())))
            if key not in fresh:
                fresh[key] = await env.fresh(path, args)
            assert qid in c.results, f"{c.name} has no value for {path} {args}"
            assert c.results[qid] == ("value", fresh[key]), (
                f"{c.name}: {path} {args} is {c.results[qid]}, fresh run gives {fresh[key]}"
            )
        for c in self.clients:
            assert set(c.results) == {q for (cc, q) in self.subscriptions if cc is c}
            check_responses_followed(c)


def check_responses_followed(c: Client) -> None:
    """Every MutationResponse is followed by a Transition (at its ts, if it succeeded)."""
    latest_ts = None
    for msg in reversed(c.received):
        if msg["type"] == "Transition":
            ts = decode_ts(msg["endVersion"]["ts"])
            latest_ts = ts if latest_ts is None else max(latest_ts, ts)
        elif msg["type"] == "MutationResponse":
            assert latest_ts is not None, f"{c.name}: no Transition after {msg}"
            if msg["success"]:
                assert latest_ts >= decode_ts(msg["ts"]), f"{c.name}: {msg}"


async def run_world(env: Env, seed: int, steps: int, *, unchanged_keys: bool = False) -> None:
    world = World(env, random.Random(seed), unchanged_keys=unchanged_keys)
    for _ in range(steps):
        await world.step()
    await world.check()
    assert world.subscriptions, "the run subscribed to something"


@pytest.mark.parametrize("seed", range(40))
async def test_clients_never_stay_stale(env: Env, seed: int) -> None:
    await run_world(env, seed, steps=45)


@pytest.mark.parametrize("seed", range(12))
async def test_clients_never_stay_stale_with_fsync_on_a_worker_thread(
    make_env: MakeEnv, seed: int
) -> None:
    """durability="power" commits on a worker thread: a commit is visible to a
    cycle's snapshot a moment before the hub is told about it."""
    app.CALLS.clear()
    env = await make_env(durability="power")
    await run_world(env, 100 + seed, steps=45)


@pytest.mark.parametrize("seed", range(10))
async def test_clients_never_stay_stale_with_patches_outside_the_key(env: Env, seed: int) -> None:
    await run_world(env, 200 + seed, steps=60, unchanged_keys=True)
