"""The pytest plugin (registered as ``basalt`` via the ``pytest11`` entry point;
``pip install 'basalt-backend[testing]'`` brings it with pytest-asyncio).

Fixtures:

- ``basalt``: a started :class:`~basalt.testing.BasaltTest` for the app folder
  named by ``@pytest.mark.basalt_app("path")``, else the ``basalt_app`` ini
  option, else ``functions``; a relative path is looked for in the rootdir,
  then in the test file's folder and each folder above it (so that pytest run
  from ``tests/``, which makes that the rootdir, still finds
  ``../functions``), on the database
  ``BASALT_TEST_BACKEND`` selects: SQLite in the test's ``tmp_path`` (the
  default), or with ``postgres`` a schema of its own, dropped when the test
  ends.

An ``async def`` test that uses the ``basalt`` fixture (directly or through
another fixture) runs on pytest-asyncio without any configuration: unless the
test, its class or its module carries an ``asyncio`` mark of its own, it is
marked ``asyncio(loop_scope="function")``, the loop the fixture runs in. That
holds in pytest-asyncio's default strict mode and in auto mode alike; other
tests are left as they are.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any, Final

import pytest

#: The event loop scope of the ``basalt`` fixture, and so of the tests using it.
LOOP_SCOPE: Final = "function"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("basalt_app", "app folder for the basalt fixture", default="functions")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "basalt_app(path): the app folder the basalt fixture loads")


def _needs_asyncio_mark(metafunc: pytest.Metafunc) -> bool:
    """Whether this test is an ``async def`` test of the ``basalt`` fixture
    that nothing has marked for pytest-asyncio yet."""
    return (
        "basalt" in metafunc.fixturenames
        and inspect.iscoroutinefunction(metafunc.function)
        and metafunc.definition.get_closest_marker("asyncio") is None
    )


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture(name="basalt")
    def _basalt_without_pytest_asyncio() -> Any:
        pytest.fail(
            "the basalt fixture needs pytest-asyncio: pip install 'basalt-backend[testing]'",
            pytrace=False,
        )

else:

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_generate_tests(metafunc: pytest.Metafunc) -> Generator[None, None, None]:
        # A wrapper runs before every plain implementation, pytest-asyncio's
        # included, so the mark is there when it looks. The mark goes on the
        # test's definition (seen while parametrizing) and on the function
        # itself (the test item is made from it afterwards).
        if _needs_asyncio_mark(metafunc):
            mark = pytest.mark.asyncio(loop_scope=LOOP_SCOPE)
            metafunc.definition.add_marker(mark)
            function = getattr(metafunc.function, "__func__", metafunc.function)
            mark(function)
        return (yield)

    @pytest_asyncio.fixture(loop_scope=LOOP_SCOPE)
    async def basalt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
        from .harness import BasaltTest

        marker = request.node.get_closest_marker("basalt_app")
        folder = marker.args[0] if marker else request.config.getini("basalt_app")
        path = app_folder(Path(folder), request.config.rootpath, request.node.path)
        async with BasaltTest(path, data_dir=tmp_path) as t:
            yield t


def app_folder(folder: Path, rootdir: Path, test_file: Path) -> Path:
    """The app folder ``folder`` names: as it is if absolute, else the first
    of ``rootdir / folder``, then ``folder`` beside the test file or in a
    folder above it, that exists; fails the test listing where it looked."""
    if folder.is_absolute():
        return folder
    tried = [rootdir / folder]
    tried += [parent / folder for parent in test_file.parents if parent / folder not in tried]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    looked = "\n".join(f"  {candidate}" for candidate in tried)
    pytest.fail(
        f"the basalt fixture's app folder {str(folder)!r} (from "
        f"@pytest.mark.basalt_app or the basalt_app ini option) was not found; looked in:\n"
        f"{looked}",
        pytrace=False,
    )
