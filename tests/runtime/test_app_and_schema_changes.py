"""Loading app folders, and schema changes between starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from basalt.errors import AppLoadError, SchemaValidationError
from basalt.runtime import Runtime, canonical_path, load_app
from basalt.storage.sqlite import SqliteEngine


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


FUNCS = """
from basalt import mutation, query, v

@mutation
async def add(ctx, doc):
    return await ctx.db.insert("things", doc)

@query
async def by_color(ctx, color):
    return [d["name"] for d in await ctx.db.query("things")
            .with_index("by_color", lambda q: q.eq("color", color)).collect()]

@query
async def indexes(ctx):
    return sorted(i.name for i in ctx.db._state.tx.catalog.indexes_of(
        ctx.db._state.tx.catalog.table_by_name("things").number))
"""


def schema(fields: str, indexes: str = "") -> str:
    return f"""
from basalt import define_schema, define_table, v
schema = define_schema({{"things": define_table({{{fields}}}){indexes}}})
"""


def test_paths_are_canonicalised() -> None:
    assert canonical_path("counter.js:get") == "counter:get"
    assert canonical_path("messages") == "messages:default"
    assert canonical_path("ai/saga:stream") == "ai/saga:stream"


def test_nested_modules_and_relative_imports(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "_shared.py": "GREETING = 'hello'\n",
            "ai/saga.py": """
                from basalt import query
                from .._shared import GREETING

                @query
                async def stream(ctx):
                    return GREETING
            """,
            "plain.py": """
                from basalt import query

                @query
                async def default(ctx):
                    return 1.0
            """,
        },
    )
    app = load_app(tmp_path)
    assert sorted(app.functions) == ["ai/saga:stream", "plain:default"]
    assert app.function("plain").path == "plain:default"
    assert app.function("ai/saga.js:stream").path == "ai/saga:stream"


def test_a_broken_module_is_reported_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"good.py": FUNCS, "bad.py": "from basalt import query\n\nx = (\n"})
    with pytest.raises(AppLoadError, match=r"bad\.py:3"):
        load_app(tmp_path)
    write(tmp_path, {"bad.py": "from basalt import query\n\nraise ValueError('nope')\n"})
    with pytest.raises(AppLoadError, match=r"bad\.py:3.*nope"):
        load_app(tmp_path)


async def test_schema_changes_backfill_and_drop_indexes(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    db = tmp_path / "db.sqlite3"
    write(
        app_dir,
        {
            "things.py": FUNCS,
            "schema.py": schema('"name": v.string(), "color": v.optional(v.string())'),
        },
    )
    async with Runtime(load_app(app_dir), SqliteEngine(db)) as rt:
        for name, color in [("a", "red"), ("b", "blue"), ("c", "red")]:
            await rt.mutation("things:add", {"doc": {"name": name, "color": color}})
        assert await rt.query("things:indexes") == ["by_creation_time"]

    # Restart with an added index: existing documents are backfilled into it.
    write(
        app_dir,
        {
            "schema.py": schema(
                '"name": v.string(), "color": v.optional(v.string())',
                '.index("by_color", ["color"])',
            )
        },
    )
    async with Runtime(load_app(app_dir), SqliteEngine(db)) as rt:
        assert await rt.query("things:indexes") == ["by_color", "by_creation_time"]
        assert await rt.query("things:by_color", {"color": "red"}) == ["a", "c"]
        await rt.mutation("things:add", {"doc": {"name": "d", "color": "red"}})
        assert await rt.query("things:by_color", {"color": "red"}) == ["a", "c", "d"]

    # Restart with the index removed: it is dropped, the documents stay.
    write(app_dir, {"schema.py": schema('"name": v.string(), "color": v.optional(v.string())')})
    async with Runtime(load_app(app_dir), SqliteEngine(db)) as rt:
        assert await rt.query("things:indexes") == ["by_creation_time"]


async def test_a_schema_that_documents_violate_is_refused(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    db = tmp_path / "db.sqlite3"
    write(app_dir, {"things.py": FUNCS, "schema.py": schema('"name": v.string()')})
    async with Runtime(load_app(app_dir), SqliteEngine(db)) as rt:
        doc_id = await rt.mutation("things:add", {"doc": {"name": "a"}})

    write(
        app_dir,
        {
            "schema.py": schema(
                '"name": v.string(), "size": v.float64()', '.index("by_size", ["size"])'
            )
        },
    )
    with pytest.raises(SchemaValidationError) as info:
        async with Runtime(load_app(app_dir), SqliteEngine(db)):
            pass
    assert doc_id in info.value.message and "size" in info.value.message
    # Said as what it is: nothing was being inserted or updated.
    assert "Failed to insert or update" not in info.value.message
    assert info.value.message == (
        f"Schema validation failed: document {doc_id} in table 'things' does not match the new "
        "schema, so the schema was not applied: Value does not match validator at .size: the "
        'required field "size" is missing (expected v.float64()); wrap its validator in '
        "v.optional(...) if it may be absent"
    )

    # Nothing was changed: the old schema still serves and the document is there.
    write(app_dir, {"schema.py": schema('"name": v.string()')})
    async with Runtime(load_app(app_dir), SqliteEngine(db)) as rt:
        assert await rt.query("things:indexes") == ["by_creation_time"]
        await rt.mutation("things:add", {"doc": {"name": "b"}})


def test_an_imported_function_keeps_its_own_path(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "messages.py": """
                from basalt import mutation

                @mutation
                async def clear(ctx):
                    return None
            """,
            "crons.py": "from .messages import clear\n",
        },
    )
    app = load_app(tmp_path)
    assert sorted(app.functions) == ["messages:clear"]
    assert app.function("messages:clear").path == "messages:clear"
