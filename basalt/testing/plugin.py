"""The pytest plugin (registered as ``basalt`` via the ``pytest11`` entry point).

Fixtures:

- ``basalt``: a started :class:`~basalt.testing.BasaltTest` for the app folder
  named by ``@pytest.mark.basalt_app("path")``, else the ``basalt_app`` ini
  option, else ``functions`` (relative to the rootdir), on the database
  ``BASALT_TEST_BACKEND`` selects: SQLite in the test's ``tmp_path`` (the
  default), or with ``postgres`` a schema of its own, dropped when the test
  ends. Needs pytest-asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("basalt_app", "app folder for the basalt fixture", default="functions")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "basalt_app(path): the app folder the basalt fixture loads")


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixture needs pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def basalt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
        from .harness import BasaltTest

        marker = request.node.get_closest_marker("basalt_app")
        folder = marker.args[0] if marker else request.config.getini("basalt_app")
        path = Path(folder)
        if not path.is_absolute():
            path = Path(request.config.rootpath) / path
        async with BasaltTest(path, data_dir=tmp_path) as t:
            yield t
