"""Fixtures every test folder may use.

``server_env``: what a ``basalt serve`` subprocess needs in its environment to
keep its data in this test's database on the backend ``BASALT_TEST_BACKEND``
selects: nothing for SQLite (the server's data folder holds the file), a
PostgreSQL schema of its own otherwise, dropped at the end of the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from basalt.testing.engines import drop_test_databases_sync
from basalt.testing.engines import server_env as server_database_env


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    try:
        yield server_database_env(tmp_path)
    finally:
        drop_test_databases_sync(tmp_path)
