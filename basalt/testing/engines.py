"""Storage engines for tests: the one ``BASALT_TEST_BACKEND`` selects.

``BASALT_TEST_BACKEND=sqlite`` (the default) gives a SQLite file in the test's
temporary folder; ``BASALT_TEST_BACKEND=postgres`` gives a PostgreSQL schema of
its own on the ``test`` database at ``postgresql://postgres@127.0.0.1:5432/test``
(``BASALT_TEST_DATABASE_URL`` overrides it). The same ``(tmp_path, name)`` always
names the same database — two engines on it are like two server processes — and
:func:`drop_test_databases` drops every schema made for a ``tmp_path``.

When PostgreSQL is unreachable, a test that needs it fails under CI (the ``CI``
environment variable is set) and is skipped, with the reason, elsewhere.

Tests that start ``basalt serve`` pass :func:`server_env` in the process's
environment and call :func:`drop_test_databases_sync` when it has stopped.

This module does not import pytest until a test needs PostgreSQL, so that
``import basalt.testing`` stays light.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

from basalt.storage.base import Persistence

Backend = Literal["sqlite", "postgres"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"

_reachable: dict[str, str | None] = {}


def selected_backend() -> Backend:
    """The backend ``BASALT_TEST_BACKEND`` selects (``sqlite`` when unset)."""
    value = os.environ.get("BASALT_TEST_BACKEND", "sqlite").strip().lower() or "sqlite"
    if value not in BACKENDS:
        raise ValueError(f"BASALT_TEST_BACKEND must be sqlite or postgres, got {value!r}")
    return value


def postgres_test_url() -> str:
    return os.environ.get("BASALT_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used at the test URL, or None when it answers
    there (checked once per URL and process)."""
    url = postgres_test_url()
    if url not in _reachable:
        try:
            import psycopg
        except ImportError as exc:
            _reachable[url] = (
                f"psycopg is not installed (pip install 'basalt-backend[postgres]'): {exc}"
            )
        else:
            try:
                with psycopg.connect(url, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                _reachable[url] = None
            except psycopg.Error as exc:
                _reachable[url] = f"PostgreSQL is not reachable at {url}: {exc}".strip()
    return _reachable[url]


def require_postgres() -> str:
    """The test database URL, after checking PostgreSQL answers there: fails the
    test under CI, skips it elsewhere, when it does not (without pytest, raises
    :class:`RuntimeError`)."""
    problem = postgres_problem()
    if problem is not None:
        try:
            import pytest
        except ImportError:  # pragma: no cover - BasaltTest used without pytest
            raise RuntimeError(problem) from None
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so tests that need PostgreSQL must run)")
        pytest.skip(problem)
    return postgres_test_url()


def schema_prefix(tmp_path: Path) -> str:
    """The prefix of every schema made for ``tmp_path``."""
    return "t_" + hashlib.blake2b(str(tmp_path).encode(), digest_size=8).hexdigest() + "_"


def schema_for(tmp_path: Path, name: str) -> str:
    """The PostgreSQL schema that stands for database ``name`` of ``tmp_path``."""
    return (schema_prefix(tmp_path) + re.sub(r"[^a-z0-9_]", "_", name.lower()))[:63]


def engine_for_tests(
    tmp_path: Path, name: str = "db", *, backend: Backend | None = None
) -> Persistence:
    """A storage engine (not yet opened) for database ``name`` of this test, on
    ``backend`` (default: :func:`selected_backend`)."""
    backend = backend or selected_backend()
    if backend == "sqlite":
        from basalt.storage.sqlite import SqliteEngine

        return SqliteEngine(tmp_path / (name if "." in name else f"{name}.sqlite3"))
    url = require_postgres()
    from basalt.storage.postgres import PostgresEngine

    return PostgresEngine(url, schema=schema_for(tmp_path, name), pool_size=4)


def server_env(tmp_path: Path, name: str = "server") -> dict[str, str]:
    """The environment variables that make a ``basalt serve`` process keep its
    data in database ``name`` of this test: none for SQLite (the server's data
    folder holds it), ``BASALT_DATABASE_URL`` and ``BASALT_DATABASE_SCHEMA`` for
    PostgreSQL. Drop the schema with :func:`drop_test_databases_sync` once the
    process has stopped."""
    if selected_backend() == "sqlite":
        return {}
    return {
        "BASALT_DATABASE_URL": require_postgres(),
        "BASALT_DATABASE_SCHEMA": schema_for(tmp_path, name),
    }


def _used_postgres() -> bool:
    """Whether this process made (or could have made) a PostgreSQL test schema."""
    return _reachable.get(postgres_test_url(), "unchecked") is None


_LIST_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)"


async def drop_test_databases(tmp_path: Path, name: str | None = None) -> None:
    """Drop every PostgreSQL schema :func:`engine_for_tests` made for ``tmp_path``
    (only that of database ``name`` if given; SQLite files go with the temporary
    folder). Close the engines first."""
    if not _used_postgres():
        return
    import psycopg
    from psycopg import sql

    url = postgres_test_url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if name is not None:
            schemas = [schema_for(tmp_path, name)]
        else:
            cur = await conn.execute(_LIST_SCHEMAS, (schema_prefix(tmp_path),))
            schemas = [schema for (schema,) in await cur.fetchall()]
        for schema in schemas:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            await conn.execute(drop)


def drop_test_databases_sync(tmp_path: Path, name: str | None = None) -> None:
    """:func:`drop_test_databases` for synchronous code (tests that run
    ``basalt serve`` in a subprocess). Stop the processes first."""
    if not _used_postgres():
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_test_url(), autocommit=True) as conn:
        if name is not None:
            schemas = [schema_for(tmp_path, name)]
        else:
            rows = conn.execute(_LIST_SCHEMAS, (schema_prefix(tmp_path),)).fetchall()
            schemas = [schema for (schema,) in rows]
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
