"""Storage engines for tests: the one ``BASALT_TEST_BACKEND`` selects.

``BASALT_TEST_BACKEND=sqlite`` (the default) gives a SQLite file in the test's
temporary folder; ``BASALT_TEST_BACKEND=postgres`` gives a PostgreSQL schema of
its own on the ``test`` database at ``postgresql://postgres@127.0.0.1:5432/test``
(``BASALT_TEST_DATABASE_URL`` overrides it). The same ``(tmp_path, name)`` always
names the same database — two engines on it are like two server processes — and
:func:`drop_test_databases` drops every schema made for a ``tmp_path``.

When PostgreSQL is unreachable, a test that needs it fails under CI (the ``CI``
environment variable is set) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

import pytest

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


def require_postgres() -> str:
    """The test database URL, after checking PostgreSQL answers there: fails the
    test under CI, skips it elsewhere, when it does not."""
    url = postgres_test_url()
    if url not in _reachable:
        try:
            import psycopg
        except ImportError as exc:
            _reachable[url] = f"psycopg is not installed (pip install 'basalt[postgres]'): {exc}"
        else:
            try:
                with psycopg.connect(url, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                _reachable[url] = None
            except psycopg.Error as exc:
                _reachable[url] = f"PostgreSQL is not reachable at {url}: {exc}".strip()
    problem = _reachable[url]
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so tests that need PostgreSQL must run)")
        pytest.skip(problem)
    return url


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


async def drop_test_databases(tmp_path: Path) -> None:
    """Drop every PostgreSQL schema :func:`engine_for_tests` made for ``tmp_path``
    (SQLite files go with the temporary folder). Close the engines first."""
    url = postgres_test_url()
    if _reachable.get(url, "unchecked") is not None:
        return  # no PostgreSQL engine was made for this URL
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
            (schema_prefix(tmp_path),),
        )
        for (schema,) in await cur.fetchall():
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
