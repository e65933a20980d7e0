"""The pytest plugin in a project of a user's: pytest runs in a subprocess, in a
fresh folder outside this repository (so none of this repository's pytest
settings apply), on the backend ``BASALT_TEST_BACKEND`` selects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "basalt" / "cli" / "template"

#: settings a user's project may have; none of them mentions the basalt fixture
CONFIGS = {
    "no config file": None,
    "pyproject.toml without asyncio settings": (
        "pyproject.toml",
        '[tool.pytest.ini_options]\naddopts = "-ra"\n',
    ),
    "asyncio_mode=auto": ("pytest.ini", "[pytest]\nasyncio_mode = auto\n"),
}


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in ``project`` as a user runs it, with this process's
    Basalt importable, and every outcome listed (``-rA``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``{test name: PASSED|FAILED|...}`` from the short summary of ``-rA``."""
    summary = r"^(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) \S+::(\S+)"
    found = re.findall(summary, result.stdout, re.M)
    return {name: outcome for outcome, name in found}


def make_project(root: Path, config: tuple[str, str] | None, tests: str) -> Path:
    root.mkdir()
    (root / "functions").mkdir()
    for source in TEMPLATE.glob("*.py"):
        (root / "functions" / source.name).write_text(source.read_text())
    if config is not None:
        (root / config[0]).write_text(config[1])
    (root / "test_app.py").write_text(textwrap.dedent(tests))
    return root


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_async_tests_of_the_basalt_fixture_run_without_configuration(
    tmp_path: Path, config: tuple[str, str] | None
) -> None:
    project = make_project(
        tmp_path / "project",
        config,
        """
        import asyncio

        import pytest


        async def test_direct(basalt):
            await basalt.mutation("messages:send", {"author": "ann", "body": "hi"})
            assert len(await basalt.query("messages:list", {})) == 1


        class TestInAClass:
            async def test_method(self, basalt):
                assert await basalt.query("messages:list", {}) == []


        @pytest.fixture
        def app(basalt):
            return basalt


        async def test_through_another_fixture(app):
            assert await app.query("messages:list", {}) == []


        @pytest.mark.parametrize("body", ["one", "two"])
        async def test_parametrized(basalt, body):
            await basalt.mutation("messages:send", {"author": "ann", "body": body})
            [message] = await basalt.query("messages:list", {})
            assert message["body"] == body
        """,
    )
    result = run_pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result) == {
        "test_direct": "PASSED",
        "test_method": "PASSED",
        "test_through_another_fixture": "PASSED",
        "test_parametrized[one]": "PASSED",
        "test_parametrized[two]": "PASSED",
    }


def test_other_async_tests_are_left_as_pytest_asyncio_has_them(tmp_path: Path) -> None:
    """In strict mode an unmarked async test that does not use the fixture is
    still not run by pytest-asyncio, and a mark of the user's keeps its loop
    scope (here two tests share a module's loop)."""
    project = make_project(
        tmp_path / "project",
        None,
        """
        import asyncio

        import pytest

        loops = []


        async def test_unmarked():
            pass


        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop_first():
            loops.append(asyncio.get_running_loop())


        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop_second():
            assert loops == [asyncio.get_running_loop()]
        """,
    )
    with_plugin = outcomes(run_pytest(project))
    without_plugin = outcomes(run_pytest(project, "-p", "no:basalt"))
    assert with_plugin == without_plugin
    assert with_plugin["test_module_loop_first"] == "PASSED"
    assert with_plugin["test_module_loop_second"] == "PASSED"
    assert with_plugin["test_unmarked"] != "PASSED"


APP_TESTS = """
import pytest


@pytest.mark.basalt_app("{folder}")
async def test_send(basalt):
    await basalt.mutation("messages:send", {{"author": "ann", "body": "hi"}})
    assert len(await basalt.query("messages:list", {{}})) == 1
"""


def project_with_tests_folder(root: Path, folder: str) -> Path:
    """``functions/`` at the project's root, the tests in ``tests/`` (no pytest
    settings anywhere: run from ``tests/``, pytest makes that the rootdir)."""
    make_project(root, None, "")
    (root / "test_app.py").unlink()
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(APP_TESTS.format(folder=folder))
    return root / "tests"


def test_the_app_folder_is_found_above_the_test_file(tmp_path: Path) -> None:
    tests = project_with_tests_folder(tmp_path / "project", "functions")
    result = run_pytest(tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result) == {"test_send": "PASSED"}


def test_a_missing_app_folder_fails_listing_where_it_looked(tmp_path: Path) -> None:
    project = tmp_path / "project"
    tests = project_with_tests_folder(project, "nosuch")
    result = run_pytest(tests)
    assert outcomes(result) == {"test_send": "ERROR"}
    assert "the basalt fixture's app folder 'nosuch'" in result.stdout, result.stdout
    for place in (tests / "nosuch", project / "nosuch", tmp_path / "nosuch"):
        assert f"\n  {place}\n" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout and "AppLoadError" not in result.stdout
