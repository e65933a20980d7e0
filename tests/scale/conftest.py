"""Fixtures of the multi-process tests: a fresh PostgreSQL schema per test
(``BASALT_DATABASE_SCHEMA``), dropped at the end, and a factory of ``basalt
serve`` processes on it, all stopped (or already killed) at the end.

PostgreSQL unreachable: the tests fail under CI and are skipped elsewhere
(:func:`basalt.testing.engines.require_postgres`).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from basalt.testing.engines import require_postgres

_HARNESS = Path(__file__).resolve().parents[1] / "server" / "harness.py"
_spec = importlib.util.spec_from_file_location("_basalt_scale_test_harness", _HARNESS)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

BASIC_APP = Path(__file__).resolve().parents[1] / "server" / "apps" / "basic"
#: the app of the fail-over and shared-file tests (jobs, slow actions, files)
FAILOVER_APP = Path(__file__).resolve().parent / "apps" / "failover"


def copy_app(source: Path, tmp_path: Path) -> Path:
    """A copy of the app folder ``source`` in the test's folder (so that no
    test writes next to the sources)."""
    app = tmp_path / "app"
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("__pycache__"))
    return app


@pytest.fixture
def pg_env() -> Iterator[dict[str, str]]:
    """``BASALT_DATABASE_URL`` and a fresh ``BASALT_DATABASE_SCHEMA``; the
    schema is dropped after the test."""
    url = require_postgres()
    schema = "scale_" + uuid.uuid4().hex[:16]
    yield {"BASALT_DATABASE_URL": url, "BASALT_DATABASE_SCHEMA": schema}
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def basic_app(tmp_path: Path) -> Path:
    return copy_app(BASIC_APP, tmp_path)


@pytest.fixture
def failover_app(tmp_path: Path) -> Path:
    return copy_app(FAILOVER_APP, tmp_path)


@pytest.fixture
def serve(tmp_path: Path, pg_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """``serve(app)`` starts one more ``basalt serve`` on the test's schema
    (each with a data folder of its own) and returns its ``BasaltProcess``."""
    started: list[Any] = []

    def make(app: Path) -> Any:
        process = harness.BasaltProcess(app, tmp_path / f"data{len(started)}", env=pg_env)
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()
