"""The basalt.testing harness and pytest fixture, as app authors use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from basalt import ConvexError
from basalt.testing import BasaltTest

TEMPLATE = Path(__file__).resolve().parents[2] / "basalt" / "cli" / "template"


@pytest.mark.basalt_app(str(TEMPLATE))
async def test_fixture_runs_the_app_on_a_fresh_database(basalt: BasaltTest) -> None:
    assert await basalt.query("messages:list") == []
    message_id = await basalt.mutation("messages:send", {"author": "ann", "body": "hi"})
    assert await basalt.mutation("messages:like", {"id": message_id}) == 1.0
    with pytest.raises(ConvexError) as info:
        await basalt.mutation("messages:send", {"author": "ann", "body": "  "})
    assert info.value.data["code"] == "EMPTY"


@pytest.mark.basalt_app(str(TEMPLATE))
async def test_each_test_starts_empty(basalt: BasaltTest) -> None:
    assert await basalt.query("messages:list") == []


async def test_run_identity_and_clock() -> None:
    async with BasaltTest(TEMPLATE) as t:

        async def seed(ctx: Any) -> str:
            return await ctx.db.insert("messages", {"author": "bot", "body": "seeded"})

        seeded = await t.run(seed)
        first = await t.query("messages:list")
        assert [m["_id"] for m in first] == [seeded]
        t.clock.advance(3600)
        await t.mutation("messages:send", {"author": "ann", "body": "an hour later"})
        newest = (await t.query("messages:list"))[0]
        assert newest["_creationTime"] - first[0]["_creationTime"] == pytest.approx(3_600_000)

        alice = t.with_identity({"subject": "alice", "name": "Alice"})

        async def whoami(ctx: Any) -> Any:
            return await ctx.auth.get_user_identity()

        identity = await alice.run(whoami)
        assert identity["tokenIdentifier"] == "https://test.basalt|alice"
        assert await t.run(whoami) is None
