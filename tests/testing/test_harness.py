"""The basalt.testing harness and pytest fixture, as app authors use them, on
the backend ``BASALT_TEST_BACKEND`` selects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from basalt import ConvexError, Int64
from basalt.errors import ArgumentValidationError
from basalt.runtime import App
from basalt.runtime.scheduling import SchedulingError
from basalt.scheduler import cron_jobs
from basalt.storage.base import Persistence
from basalt.testing import BasaltTest
from basalt.testing.engines import (
    drop_test_databases,
    engine_for_tests,
    require_postgres,
    schema_for,
    selected_backend,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "basalt" / "cli" / "template"


@pytest.mark.basalt_app(str(TEMPLATE))
async def test_fixture_runs_the_app_on_a_fresh_database(basalt: BasaltTest) -> None:
    assert engine_kind(basalt.runtime.storage) == selected_backend()
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


def engine_kind(storage: Persistence) -> str:
    return {"SqliteEngine": "sqlite", "PostgresEngine": "postgres"}[type(storage).__name__]


async def schema_exists(schema: str) -> bool:
    import psycopg

    async with await psycopg.AsyncConnection.connect(require_postgres()) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return await cur.fetchone() is not None


async def test_the_default_database_follows_the_switch(tmp_path: Path) -> None:
    """SQLite in the data folder (kept there), or a PostgreSQL schema of the
    harness's own that is gone once it exits."""
    data = tmp_path / "data"
    async with BasaltTest(TEMPLATE, data_dir=data) as t:
        await t.mutation("messages:send", {"author": "ann", "body": "hi"})
        storage = t.runtime.storage
        assert engine_kind(storage) == selected_backend()
        if selected_backend() == "postgres":
            assert getattr(storage, "schema", None) == schema_for(data, "basalt")
            assert await schema_exists(schema_for(data, "basalt"))
    if selected_backend() == "sqlite":
        assert (data / "basalt.sqlite3").is_file()
    else:
        assert not await schema_exists(schema_for(data, "basalt"))
        assert not (data / "basalt.sqlite3").exists()


async def test_a_temporary_folder_is_removed_on_exit() -> None:
    async with BasaltTest(TEMPLATE) as t:
        await t.mutation("messages:send", {"author": "ann", "body": "hi"})
        data = t._data_dir
        assert data is not None and data.is_dir()
    assert not data.exists()
    if selected_backend() == "postgres":
        assert not await schema_exists(schema_for(data, "basalt"))


async def test_a_given_engine_is_used_and_its_data_kept(tmp_path: Path) -> None:
    try:
        async with BasaltTest(TEMPLATE, storage=engine_for_tests(tmp_path, "mine")) as t:
            await t.mutation("messages:send", {"author": "ann", "body": "kept"})
        async with BasaltTest(TEMPLATE, storage=engine_for_tests(tmp_path, "mine")) as t:
            assert [m["body"] for m in await t.query("messages:list")] == ["kept"]
        async with BasaltTest(TEMPLATE, data_dir=tmp_path) as t:  # the default engine
            assert await t.query("messages:list") == []
    finally:
        await drop_test_databases(tmp_path)


async def test_the_harness_cleans_up_when_the_app_fails_to_start(tmp_path: Path) -> None:
    """The database is opened, then the scheduler refuses the app's crons: the
    harness closes the engine and drops its schema on the way out. (A loaded
    app folder has its crons checked when it loads; an app built from modules
    only when the scheduler starts.)"""
    crons = cron_jobs()
    crons.interval("bad", fn="nowhere:missing", minutes=1)
    app = App.from_modules({})
    app.crons = crons
    data = tmp_path / "data"
    t = BasaltTest(app, data_dir=data)
    with pytest.raises(SchedulingError, match=r"cron 'bad' .*: Could not find function"):
        await t.__aenter__()
    if selected_backend() == "postgres":
        assert not await schema_exists(schema_for(data, "basalt"))
    else:
        assert (data / "basalt.sqlite3").is_file()  # it was opened


def test_importing_basalt_testing_does_not_import_pytest() -> None:
    code = (
        "import sys, basalt.testing; "
        "assert 'pytest' not in sys.modules and '_pytest' not in sys.modules, 'pytest imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


INTEGERS_APP = """
from basalt import Int64, mutation, query, v


@query(args={})
async def shapes(ctx):
    return {"count": 3, "explicit": Int64(3), "nested": [{"n": 1}]}


@query(args={"n": v.int64()})
async def int64_arg(ctx, n):
    return n


@query(args={"x": v.any()})
async def kind(ctx, x):
    return type(x).__name__
"""


async def test_calls_go_through_the_wire_encoding(tmp_path: Path) -> None:
    """Arguments and results as the official Python client sends and receives
    them: a plain int is a number (float), an int64 an Int64."""
    (tmp_path / "ints.py").write_text(INTEGERS_APP)
    async with BasaltTest(tmp_path) as t:
        shapes = await t.query("ints:shapes")
        assert shapes == {"count": 3.0, "explicit": 3, "nested": [{"n": 1.0}]}
        assert type(shapes["count"]) is float and type(shapes["nested"][0]["n"]) is float
        assert type(shapes["explicit"]) is Int64
        # An int argument arrives as a number, as the client sends it ...
        assert await t.query("ints:kind", {"x": 3}) == "float"
        with pytest.raises(ArgumentValidationError, match=r"expected v\.int64\(\)"):
            await t.query("ints:int64_arg", {"n": 3})
        # ... and an int64 is sent as Int64.
        assert await t.query("ints:kind", {"x": Int64(3)}) == "Int64"
        assert type(await t.query("ints:int64_arg", {"n": Int64(3)})) is Int64
