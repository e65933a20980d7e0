"""Testing Basalt apps: the real runtime on a temporary database.

::

    import pytest

    from basalt.testing import BasaltTest

    @pytest.mark.asyncio  # not needed in pytest-asyncio's auto mode
    async def test_send():
        async with BasaltTest("functions") as t:
            await t.mutation("messages:send", {"author": "ann", "body": "hi"})
            assert len(await t.query("messages:list")) == 1

With pytest, the ``basalt`` fixture (from the plugin this package registers;
``pip install 'basalt-backend[testing]'``) does the same for the app folder
named by the ``basalt_app`` ini option (default ``functions``) or the
``@pytest.mark.basalt_app("path")`` marker, and its async tests need no mark.

The database is a SQLite file in a temporary folder, or with
``BASALT_TEST_BACKEND=postgres`` a PostgreSQL schema of its own on the test
database (``BASALT_TEST_DATABASE_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``), dropped at the end; see
:mod:`basalt.testing.engines`. ``BasaltTest(app, storage=engine)`` runs on an
engine of your choice. Importing this package does not import pytest.
"""

from .harness import BasaltTest

__all__ = ["BasaltTest"]
