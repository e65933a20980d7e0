"""Crons: declared in ``crons.py``, synced into ``_cron_jobs``, fired as jobs
of ``_scheduled_functions`` when due under a moved clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from basalt.runtime import App
from basalt.runtime.scheduling import SchedulingError, system_query
from basalt.scheduler import CronJobs, cron_jobs
from basalt.scheduler.crons import first_run_ms, next_run_ms

from . import tasks
from .conftest import START_MS, Env, MakeEnv

MINUTE = 60.0
HOUR = 3600.0


def ms(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000


async def cron_docs(env: Env) -> dict[str, dict[str, Any]]:
    async def read(db: Any) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = await system_query(db, "_cron_jobs").collect()
        return docs

    return {d["name"]: d for d in await env.runtime.run_system(read)}


async def runs(env: Env, name: str) -> list[dict[str, Any]]:
    return [j for j in await env.jobs() if j["args"] == [{"name": name}]]


async def test_an_interval_cron_fires_every_interval(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("tick", fn="tasks:bump", args={"name": "tick"}, minutes=5)
    env = await make_env(crons=crons)
    doc = (await cron_docs(env))["tick"]
    assert doc["function"] == "tasks:bump"
    assert doc["schedule"] == {"type": "interval", "seconds": 300.0}
    assert doc["nextRun"] == START_MS + 300_000

    env.manual.advance(4 * MINUTE)
    assert await env.scheduler.run_due() == 0
    env.manual.advance(1 * MINUTE)
    assert await env.scheduler.run_due() == 1
    assert await env.count("tick") == 1
    env.manual.advance(5 * MINUTE)
    assert await env.scheduler.run_due() == 1
    assert await env.count("tick") == 2

    # Each run is recorded in _scheduled_functions, at the time it was due.
    recorded = await runs(env, "tick")
    assert [r["scheduledTime"] for r in recorded] == [START_MS + 300_000, START_MS + 600_000]
    assert {r["state"]["kind"] for r in recorded} == {"success"}
    doc = (await cron_docs(env))["tick"]
    assert doc["lastRun"] == START_MS + 600_000
    assert doc["lastJobId"] == recorded[-1]["_id"]


async def test_missed_runs_collapse_into_one_and_keep_the_rhythm(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("tick", {"minutes": 5}, tasks.bump, {"name": "tick"})  # Convex's form
    env = await make_env(crons=crons)
    env.manual.advance(HOUR + 2 * MINUTE)  # twelve runs were due
    assert await env.scheduler.run_due() == 1
    assert await env.count("tick") == 1
    assert (await cron_docs(env))["tick"]["nextRun"] == START_MS + 65 * 60_000


async def test_a_cron_expression_fires_on_its_schedule(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.cron("quarter", "*/15 * * * *", "tasks:bump", {"name": "quarter"})
    env = await make_env(crons=crons)
    # START is 12:00 exactly: the next quarter is strictly after it.
    assert (await cron_docs(env))["quarter"]["nextRun"] == ms("2024-06-10T12:15:00")
    for _ in range(4):
        env.manual.advance(15 * MINUTE)
        assert await env.scheduler.run_due() == 1
    assert await env.count("quarter") == 4
    times = [r["scheduledTime"] for r in await runs(env, "quarter")]
    assert times == [ms(f"2024-06-10T{t}:00") for t in ("12:15", "12:30", "12:45", "13:00")]


async def test_daily_weekly_monthly_and_hourly(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.daily("daily", {"hourUTC": 13, "minuteUTC": 30}, "tasks:bump", {"name": "daily"})
    crons.hourly("hourly", fn="tasks:bump", args={"name": "hourly"}, minute_utc=10)
    crons.weekly(
        "weekly",
        fn="tasks:bump",
        args={"name": "weekly"},
        day_of_week="Wednesday",
        hour_utc=9,
    )
    crons.monthly("monthly", {"day": 31, "hourUTC": 0, "minuteUTC": 0}, "tasks:bump", {"name": "m"})
    env = await make_env(crons=crons)
    docs = await cron_docs(env)
    assert docs["daily"]["nextRun"] == ms("2024-06-10T13:30:00")
    assert docs["hourly"]["nextRun"] == ms("2024-06-10T12:10:00")
    assert docs["weekly"]["nextRun"] == ms("2024-06-12T09:00:00")
    assert docs["weekly"]["schedule"] == {
        "type": "weekly",
        "dayOfWeek": "wednesday",
        "hourUTC": 9,
        "minuteUTC": 0,
    }
    assert docs["monthly"]["nextRun"] == ms("2024-07-31T00:00:00")  # June has no 31st

    env.manual.set(ms("2024-06-10T13:30:00"))
    await env.scheduler.run_due()
    assert await env.count("daily") == 1
    assert await env.count("hourly") == 1  # 12:10 fired; 13:10 collapsed into it
    assert (await cron_docs(env))["daily"]["nextRun"] == ms("2024-06-11T13:30:00")
    env.manual.set(ms("2024-06-12T09:00:00"))
    await env.scheduler.run_due()
    assert await env.count("weekly") == 1
    assert await env.count("daily") == 2


async def test_a_removed_cron_stops_and_a_changed_one_is_updated(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("keep", fn="tasks:bump", args={"name": "keep"}, minutes=1)
    crons.interval("drop", fn="tasks:bump", args={"name": "drop"}, minutes=1)
    env = await make_env(crons=crons)
    env.manual.advance(MINUTE)
    assert await env.scheduler.run_due() == 2

    edited = cron_jobs()
    edited.interval("keep", fn="tasks:bump", args={"name": "keep"}, minutes=10)
    app = App.from_modules({"tasks": tasks})
    app.crons = edited
    await env.runtime.reload(app)
    await env.scheduler.sync_crons()
    docs = await cron_docs(env)
    assert set(docs) == {"keep"}
    assert docs["keep"]["nextRun"] == env.clock.now_ms() + 600_000  # new schedule: from now

    for _ in range(10):
        env.manual.advance(MINUTE)
        await env.scheduler.run_due()
    assert await env.count("drop") == 1
    assert await env.count("keep") == 2


async def test_a_reload_is_noticed_even_without_sync_crons(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("gone", fn="tasks:bump", args={"name": "gone"}, seconds=30)
    env = await make_env(crons=crons)
    await env.runtime.reload(App.from_modules({"tasks": tasks}))  # no crons.py any more
    env.manual.advance(MINUTE)
    assert await env.scheduler.run_due() == 0
    assert await cron_docs(env) == {}


async def test_crons_removed_while_the_server_was_down_stop(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("old", fn="tasks:bump", args={"name": "old"}, seconds=30)
    env = await make_env(crons=crons)
    await env.scheduler.stop()
    await env.runtime.stop()
    again = await make_env(clock=env.clock, crons=cron_jobs())
    again.manual.advance(HOUR)
    assert await again.scheduler.run_due() == 0
    assert await cron_docs(again) == {}


async def test_an_unchanged_cron_keeps_its_next_run_across_restarts(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("steady", fn="tasks:bump", args={"name": "steady"}, minutes=10)
    env = await make_env(crons=crons)
    await env.scheduler.stop()
    await env.runtime.stop()
    env.manual.advance(7 * MINUTE)
    again = await make_env(clock=env.clock, crons=crons)
    assert (await cron_docs(again))["steady"]["nextRun"] == START_MS + 600_000
    again.manual.advance(3 * MINUTE)
    assert await again.scheduler.run_due() == 1


async def test_a_cron_action_run_is_recorded(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("act", fn=tasks.act, args={"name": "cron-act"}, hours=1)
    crons.interval("broken", fn="tasks:act_fails", hours=1)
    env = await make_env(crons=crons)
    env.manual.advance(HOUR)
    assert await env.scheduler.run_due() == 2
    by_name = {j["name"]: j for j in await env.jobs()}
    assert by_name["tasks:act"]["state"] == {"kind": "success"}
    assert by_name["tasks:act_fails"]["state"]["kind"] == "failed"
    assert await env.count("cron-act") == 1


async def test_crons_that_name_a_missing_function_fail_at_start(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("bad", fn="tasks:missing", minutes=1)
    # The message names the cron and where crons.py declares it (here: this file).
    where = r"cron .bad. \(.*test_crons.py:\d+\): Could not find"
    with pytest.raises(SchedulingError, match=where):
        await make_env(crons=crons)
    queries = cron_jobs()
    queries.interval("q", fn="tasks:count", args={"name": "x"}, minutes=1)
    with pytest.raises(SchedulingError, match="is a query"):
        await make_env(crons=queries, db="other")


def declare(call: Any) -> CronJobs:
    crons = cron_jobs()
    call(crons)
    return crons


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.interval("x", fn="tasks:bump"), "must be positive"),
        (lambda c: c.interval("x", {"weeks": 1}, "tasks:bump"), "unknown interval fields"),
        (lambda c: c.interval("x", {"minutes": 1}, "tasks:bump", seconds=5), "not both"),
        (lambda c: c.interval("x", fn="tasks:bump", minutes=-1), "must be a number ≥ 0"),
        (lambda c: c.interval("", fn="tasks:bump", minutes=1), "non-empty name"),
        (lambda c: c.interval("x", minutes=1), "fn must be a mutation or action"),
        (lambda c: c.interval("x", fn=tasks.count, minutes=1), "is a query"),
        (lambda c: c.interval("x", fn="t:b", args=[1], minutes=1), "args must be a dict"),
        (lambda c: c.interval("x", fn="t:b", args={"s": {1}}, minutes=1), "set"),
        (lambda c: c.hourly("x", {"minuteUTC": 60}, "t:b"), "from 0 to 59"),
        (lambda c: c.daily("x", {"minuteUTC": 5}, "t:b"), "needs hourUTC"),
        (lambda c: c.daily("x", {"hourUTC": 1.5}, "t:b"), "whole number"),
        (lambda c: c.weekly("x", {"dayOfWeek": "caturday", "hourUTC": 1}, "t:b"), "dayOfWeek"),
        (lambda c: c.monthly("x", {"day": 0, "hourUTC": 1}, "t:b"), "from 1 to 31"),
        (lambda c: c.monthly("x", {"day": 1, "hourUTC": 1, "second": 1}, "t:b"), "unknown"),
        (lambda c: c.cron("x", "* * * *", "t:b"), "five fields"),
        (lambda c: c.cron("x", "61 * * * *", "t:b"), "not a valid cron expression"),
    ],
)
def test_bad_declarations_fail_when_the_app_loads(call: Any, message: str) -> None:
    with pytest.raises(SchedulingError, match=message):
        declare(call)


def test_duplicate_names_are_refused() -> None:
    crons = cron_jobs()
    crons.interval("same", fn="tasks:bump", minutes=1)
    with pytest.raises(SchedulingError, match="already a cron job named 'same'"):
        crons.daily("same", fn="tasks:bump", hour_utc=1)


def test_convex_and_keyword_forms_declare_the_same_schedule() -> None:
    a, b = cron_jobs(), cron_jobs()
    a.monthly("m", {"day": 1, "hourUTC": 16, "minuteUTC": 0}, "t:b", {"x": 1})
    b.monthly("m", fn="t:b", args={"x": 1}, day=1, hour_utc=16)
    assert list(a) == list(b)
    assert len(a) == 1


def test_next_runs() -> None:
    interval = {"type": "interval", "seconds": 60.0}
    assert first_run_ms(interval, 1000.0) == 61_000.0
    assert next_run_ms(interval, 61_000.0, 61_000.0) == 121_000.0
    assert next_run_ms(interval, 61_000.0, 200_000.0) == 241_000.0
    daily = {"type": "daily", "hourUTC": 0, "minuteUTC": 0}
    midnight = ms("2024-06-11T00:00:00")
    assert first_run_ms(daily, midnight) == ms("2024-06-12T00:00:00")
    assert next_run_ms(daily, midnight, midnight + 5) == ms("2024-06-12T00:00:00")
