"""``basalt export`` / ``basalt import``: snapshot ZIPs between deployments.

Deployments are data folders whose databases are on the backend
``BASALT_TEST_BACKEND`` selects (``harness.data_engine``), except in the test
of the move from SQLite to PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import struct
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from basalt import Int64
from basalt.cli.main import main
from basalt.cli.snapshot import MANIFEST, SnapshotError, export_snapshot, is_exported, scan_table
from basalt.cli.snapshot_import import import_snapshot
from basalt.files import LocalBlobStore, blob_key
from basalt.runtime import load_app
from basalt.runtime.files import FileService
from basalt.server.config import SQLITE_FILE
from basalt.storage.base import Persistence
from basalt.storage.sqlite import SqliteEngine
from basalt.testing.engines import drop_test_databases, engine_for_tests
from basalt.testing.harness import BasaltTest
from basalt.values.ids import decode_id
from basalt.values.wire import dumps_stored

from .conftest import Databases, basalt, harness

#: how the test process opens a data folder's database
Engine = Callable[[Path], Persistence]
data_engine: Engine = harness.data_engine

SCHEMA = """
from basalt import define_schema, define_table, v

schema = define_schema({
    "users": define_table({"name": v.string()}),
    "messages": define_table({
        "author": v.id("users"),
        "count": v.int64(),
        "raw": v.bytes(),
        "score": v.float64(),
        "file": v.optional(v.id("_storage")),
    }).index("by_author", ["author"]),
})
"""

FUNCTIONS = """
from basalt import action, internal_mutation, mutation, query, v


@mutation(args={"name": v.string()})
async def add_user(ctx, name):
    return await ctx.db.insert("users", {"name": name})


@mutation(args={
    "author": v.id("users"), "count": v.int64(), "raw": v.bytes(), "score": v.float64(),
    "file": v.optional(v.id("_storage")),
})
async def add_message(ctx, author, count, raw, score, file=None):
    doc = {"author": author, "count": count, "raw": raw, "score": score}
    if file is not None:
        doc["file"] = file
    return await ctx.db.insert("messages", doc)


@action(args={"data": v.bytes(), "type": v.optional(v.string())})
async def store(ctx, data, type=None):
    return await ctx.storage.store(data, type)


@mutation(args={"delay": v.float64()})
async def schedule_ping(ctx, delay):
    return await ctx.scheduler.run_after(delay, "data:ping", {})


@internal_mutation
async def ping(ctx):
    await ctx.db.insert("users", {"name": "pinged"})


@query(args={"id": v.id("_storage")})
async def url(ctx, id):
    return await ctx.storage.get_url(id)


@query
async def jobs(ctx):
    return await ctx.db.system.query("_scheduled_functions").collect()
"""

BINARY = bytes(range(256)) * 1000
SCORES = [1.5, math.nan, math.inf, -0.0]


@dataclass
class Source:
    app: Path
    data: Path
    users: list[str]
    files: dict[str, bytes]
    job: str


def write_app(folder: Path, schema: str = SCHEMA) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.py").write_text(schema)
    (folder / "data.py").write_text(FUNCTIONS)
    return folder


async def make_source(app: Path, data: Path, storage: Persistence) -> Source:
    """A deployment with users, messages (int64, bytes, NaN …), two files and a
    pending job: ``app`` on ``storage``, its files in ``data``."""
    async with BasaltTest(app, data_dir=data, storage=storage) as t:
        users = [await t.mutation("data:add_user", {"name": n}) for n in ("ada", "bob")]
        text = await t.action("data:store", {"data": b"hello, basalt\n", "type": "text/plain"})
        binary = await t.action("data:store", {"data": BINARY})
        for i, score in enumerate(SCORES):
            doc = {"author": users[i % 2], "count": Int64(2**62 + i), "raw": bytes([i, 0, 255])}
            await t.mutation("data:add_message", {**doc, "score": score, "file": text})
        job = await t.mutation("data:schedule_ping", {"delay": 3600.0})
    return Source(app, data, users, {text: b"hello, basalt\n", binary: BINARY}, job)


@pytest.fixture
async def source(tmp_path: Path, databases: Databases) -> Source:
    """The deployment of :func:`make_source` in data folder ``tmp_path/src``."""
    data = tmp_path / "src"
    return await make_source(write_app(tmp_path / "app"), data, databases.engine(data))


def sqlite_engine(data: Path) -> Persistence:
    return SqliteEngine(data / SQLITE_FILE)


@asynccontextmanager
async def opened(
    data: Path, engine: Engine = data_engine
) -> AsyncIterator[tuple[Persistence, FileService]]:
    storage = engine(data)
    files = FileService(LocalBlobStore(data / "blobs"))
    await storage.open()
    await files.blobs.open()
    try:
        yield storage, files
    finally:
        await files.blobs.close()
        await storage.close()


async def dump(data: Path, engine: Engine = data_engine) -> dict[tuple[str, int], list[str]]:
    """Every exported table (name, number) → its documents' exact stored encodings."""
    async with opened(data, engine) as (storage, _):
        return await dump_engine(storage)


async def dump_engine(storage: Persistence) -> dict[tuple[str, int], list[str]]:
    async with storage.read() as tx:
        return {
            (t.name, t.number): [dumps_stored(d) async for d in scan_table(tx, t.number)]
            for t in tx.catalog.tables()
            if is_exported(t.name)
        }


async def table_names(data: Path) -> list[str]:
    async with opened(data) as (storage, _):
        return [t.name for t in storage.catalog.tables()]


async def blob(data: Path, storage_id: str) -> bytes:
    async with opened(data) as (_, files):
        reader = await files.blobs.read(blob_key(decode_id(storage_id)[1]))
        async with reader:
            return b"".join([chunk async for chunk in reader])


async def export_to(data: Path, out: Path, engine: Engine = data_engine) -> None:
    async with opened(data, engine) as (storage, files):
        await export_snapshot(storage, files, out)


async def import_from(data: Path, snapshot: Path, mode: str = "append", **kw: Any) -> Any:
    async with opened(data) as (storage, files):
        return await import_snapshot(storage, files, snapshot, mode=mode, **kw)  # type: ignore[arg-type]


# -- the round trip, as a user runs it --------------------------------------------


async def test_cli_round_trip_keeps_everything(
    source: Source, tmp_path: Path, basalt_process: Callable[..., Any], databases: Databases
) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    env = databases.env(source.data)
    result = basalt("export", "--data", str(source.data), "-o", str(snapshot), env=env)
    assert result.returncode == 0, result.stderr
    assert "exported 4 tables, 9 documents, 2 files" in result.stdout
    assert not snapshot.with_name("snap.zip.partial").exists()

    where = ["--data", str(target), "--app", str(source.app)]
    result = basalt("import", str(snapshot), *where, "--append", env=databases.env(target))
    assert result.returncode == 0, result.stderr
    assert "imported 4 tables, 9 documents, 2 files" in result.stdout
    assert "importing documents" in result.stderr  # the progress bar's final line

    before, after = await dump(source.data), await dump(target)
    assert after == before  # same tables, numbers, ids, creation times, values to the bit
    assert {name for name, _ in after} == {"users", "messages", "_storage", "_scheduled_functions"}
    for storage_id, content in source.files.items():
        assert await blob(target, storage_id) == content

    # The new deployment serves the files and keeps the pending job.
    server = basalt_process(source.app, target).start()
    client = server.client(admin=True)
    for storage_id, content in source.files.items():
        url = client.query("data:url", {"id": storage_id})
        response = httpx.get(url)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(content).digest()
    [job] = client.query("data:jobs", {})
    assert (job["_id"], job["name"], job["state"]) == (source.job, "data:ping", {"kind": "pending"})


async def test_snapshot_layout(source: Source, tmp_path: Path) -> None:
    snapshot = tmp_path / "snap.zip"
    await export_to(source.data, snapshot)
    with zipfile.ZipFile(snapshot) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
        messages = [json.loads(line) for line in zf.read("messages/documents.jsonl").splitlines()]
        tables = [json.loads(line) for line in zf.read("_tables/documents.jsonl").splitlines()]
        files = {n: zf.read(n) for n in names if n.startswith("_storage/") and "." not in n}
    assert "README.md" in names
    assert {"users/documents.jsonl", "_scheduled_functions/documents.jsonl"} <= names
    assert not any(n.startswith(("_cron_jobs/", "_upload_tokens/")) for n in names)
    assert {n.removeprefix("_storage/"): c for n, c in files.items()} == source.files
    assert {t["name"] for t in tables} >= {"users", "_cron_jobs"}  # every table, numbered
    by_name = {t["name"]: t for t in manifest["tables"]}
    assert (by_name["messages"]["documents"], by_name["_cron_jobs"]["exported"]) == (4, False)
    assert manifest["files"] == {"count": 2, "bytes": len(BINARY) + 14}
    assert '"users"' in manifest["schema"]
    # Convex JSON: int64, bytes and NaN survive; lines are in creation order.
    assert messages[0]["count"] == {"$integer": base64.b64encode(struct.pack("<q", 2**62)).decode()}
    assert messages[0]["raw"] == {"$bytes": base64.b64encode(bytes([0, 0, 255])).decode()}
    assert messages[1]["score"] == {
        "$float": base64.b64encode(struct.pack("<d", math.nan)).decode()
    }
    times = [m["_creationTime"] for m in messages]
    assert times == sorted(times)


# -- modes and refusals -------------------------------------------------------------


async def test_append_refuses_an_existing_id_and_writes_nothing(
    source: Source, tmp_path: Path
) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    await export_to(source.data, snapshot)
    await import_from(target, snapshot)
    before = await dump(target)
    with pytest.raises(SnapshotError) as info:
        await import_from(target, snapshot)
    # The first document of the first table (tables go in number order: system ones first).
    assert f"document {source.job} (table '_scheduled_functions')" in info.value.message
    assert "already exists" in info.value.message and "--replace" in info.value.message
    assert await dump(target) == before


async def test_replace_empties_the_snapshot_tables_first(source: Source, tmp_path: Path) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    await export_to(source.data, snapshot)
    await import_from(target, snapshot)
    # The target lives on.
    async with BasaltTest(source.app, data_dir=target, storage=data_engine(target)) as t:
        await t.mutation("data:add_user", {"name": "carol"})
        extra = await t.action("data:store", {"data": b"not in the snapshot"})
        await t.run(lambda ctx: ctx.db.delete(source.users[1]))
    summary = await import_from(target, snapshot, "replace")
    assert (summary.documents, summary.files) == (9, 2)
    assert await dump(target) == await dump(source.data)
    async with opened(target) as (_, files):
        assert not await files.blobs.exists(blob_key(decode_id(extra)[1]))


async def test_schema_violations_are_refused_naming_the_document(
    source: Source, tmp_path: Path
) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    await export_to(source.data, snapshot)
    strict = write_app(
        tmp_path / "strict", SCHEMA.replace('"name": v.string()', '"name": v.int64()')
    )
    schema = load_app(strict).schema
    warnings: list[str] = []
    with pytest.raises(SnapshotError) as info:
        await import_from(target, snapshot, schema=schema, warn=warnings.append)
    message = info.value.message
    assert "do not match the app's schema" in message and "nothing was imported" in message
    assert source.users[0] in message and source.users[1] in message and '"users"' in message
    assert "differs" in warnings[0]
    assert await table_names(target) == []
    summary = await import_from(target, snapshot, schema=schema, validate=False)
    assert summary.documents == 9


async def test_a_truncated_zip_is_refused(source: Source, tmp_path: Path) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    await export_to(source.data, snapshot)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 2])
    with pytest.raises(SnapshotError, match="truncated or not a snapshot; nothing was imported"):
        await import_from(target, cut)
    assert await table_names(target) == []


async def test_a_damaged_entry_is_refused_before_anything_is_written(
    source: Source, tmp_path: Path
) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    await export_to(source.data, snapshot)
    binary_id = next(i for i, c in source.files.items() if c == BINARY)
    data = bytearray(snapshot.read_bytes())
    with zipfile.ZipFile(snapshot) as zf:
        info = zf.getinfo(f"_storage/{binary_id}")
    data[info.header_offset + 30 + len(info.filename) + 1000] ^= 0xFF  # inside the stored bytes
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"damaged.*nothing was imported"):
        await import_from(target, damaged)
    assert await table_names(target) == []
    async with opened(target) as (_, files):
        assert not await files.blobs.exists(blob_key(decode_id(binary_id)[1]))


async def test_table_numbers_taken_by_other_tables_are_refused(
    source: Source, tmp_path: Path
) -> None:
    snapshot, target = tmp_path / "snap.zip", tmp_path / "dst"
    await export_to(source.data, snapshot)
    async with opened(target) as (storage, _), storage.write() as tx:
        await tx.ensure_table("other")  # takes the first user table number
        await tx.commit()
    with pytest.raises(SnapshotError) as info:
        await import_from(target, snapshot)
    assert "belongs to table 'other'" in info.value.message
    assert "fresh one" in info.value.message
    assert await table_names(target) == ["other"]


async def test_an_empty_deployment_round_trips(tmp_path: Path) -> None:
    snapshot, empty, target = tmp_path / "snap.zip", tmp_path / "empty", tmp_path / "dst"
    async with opened(empty) as (storage, files):
        summary = await export_snapshot(storage, files, snapshot)
    assert (summary.tables, summary.documents, summary.files) == (0, 0, 0)
    with zipfile.ZipFile(snapshot) as zf:
        assert json.loads(zf.read(MANIFEST))["tables"] == []
    summary = await import_from(target, snapshot)
    assert (summary.tables, summary.documents, summary.files) == (0, 0, 0)
    assert await table_names(target) == []


def test_a_data_folder_a_server_uses_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    databases: Databases,
) -> None:
    data = tmp_path / "data"
    databases.create(data)
    data.mkdir(exist_ok=True)  # on PostgreSQL the database is elsewhere
    for name in ("BASALT_DATABASE_URL", "BASALT_DATABASE_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in databases.env(data).items():
        if name.startswith("BASALT_"):
            monkeypatch.setenv(name, value)
    marker = {"url": "http://127.0.0.1:1", "pid": os.getpid(), "adminKey": None}
    (data / "server.json").write_text(json.dumps(marker))
    out = str(tmp_path / "snap.zip")
    assert main(["export", "--data", str(data), "-o", out]) == 1
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "--force" in err
    assert main(["import", out, "--data", str(data), "--append"]) == 1
    assert main(["export", "--data", str(data), "-o", out, "--force"]) == 0
    assert "exported 0 tables" in capsys.readouterr().out
    assert main(["import", out, "--data", str(data), "--append", "--force"]) == 0


def test_import_reports_a_bad_file_without_a_traceback(
    tmp_path: Path, databases: Databases
) -> None:
    bogus, data = tmp_path / "bogus.zip", tmp_path / "d"
    with zipfile.ZipFile(bogus, "w") as zf:
        zf.writestr("users/documents.jsonl", "{}\n")
    result = basalt("import", str(bogus), "--data", str(data), "--replace", env=databases.env(data))
    assert result.returncode == 1
    assert "not a Basalt snapshot" in result.stderr and "Traceback" not in result.stderr
    assert io.StringIO(result.stderr).readline().startswith("error:")
    assert not data.exists()  # refused before anything was made


async def test_sqlite_to_postgresql_and_back(tmp_path: Path) -> None:
    """Skipped (failed under CI) when PostgreSQL is not reachable at the test URL."""
    # The subject is the move from SQLite: the source is on SQLite on both backends.
    data = tmp_path / "src"
    source = await make_source(write_app(tmp_path / "app"), data, sqlite_engine(data))
    snapshot, back = tmp_path / "snap.zip", tmp_path / "back.zip"
    await export_to(source.data, snapshot, sqlite_engine)
    engine = engine_for_tests(tmp_path, "target", backend="postgres")
    files = FileService(LocalBlobStore(tmp_path / "pg-blobs"))
    await engine.open()
    await files.blobs.open()
    try:
        summary = await import_snapshot(engine, files, snapshot, mode="append")
        assert (summary.documents, summary.files) == (9, 2)
        assert await dump_engine(engine) == await dump(source.data, sqlite_engine)
        summary = await import_snapshot(engine, files, snapshot, mode="replace")
        assert await dump_engine(engine) == await dump(source.data, sqlite_engine)
        with pytest.raises(SnapshotError, match="already exists"):
            await import_snapshot(engine, files, snapshot, mode="append")
        await export_snapshot(engine, files, back)
    finally:
        await files.blobs.close()
        await engine.close()
        await drop_test_databases(tmp_path)
    with zipfile.ZipFile(snapshot) as first, zipfile.ZipFile(back) as second:
        assert sorted(first.namelist()) == sorted(second.namelist())
        for name in first.namelist():
            if name != MANIFEST:
                assert first.read(name) == second.read(name), name
