"""BasaltTest (what app authors test with) drives the scheduler on its ManualClock."""

from __future__ import annotations

from pathlib import Path

from basalt.testing import BasaltTest

APP = Path(__file__).parent / "apps" / "jobs"


async def test_finish_scheduled_and_advance(tmp_path: Path) -> None:
    async with BasaltTest(APP, data_dir=tmp_path) as t:
        await t.mutation("jobs:enqueue", {"n": 4.0, "spread": 2.0})
        assert await t.finish_scheduled() == 1  # the first item is due now
        assert len((await t.query("jobs:summary"))["done"]) == 1
        assert await t.advance(1.0) == 3  # the items due at 0.5 s and 1 s, and the cron
        summary = await t.query("jobs:summary")
        assert len(summary["done"]) == 3
        assert summary["marks"] == ["tick"]
        assert await t.finish_all_scheduled() == 1  # the clock moves to 1.5 s
        assert sorted((await t.query("jobs:summary"))["done"]) == [0.0, 1.0, 2.0, 3.0]
