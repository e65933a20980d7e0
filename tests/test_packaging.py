"""How Basalt is installed: the distribution's name (`basalt-backend`; `basalt`
on PyPI is an unrelated project), its extras, its licence, and every install
hint the package, the docs and the examples give."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import basalt
from basalt._version import __version__
from basalt.auth.fetch import _user_agent

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DISTRIBUTION = "basalt-backend"
DEV_TOOLS = {"ruff", "mypy", "import-linter", "moto", "hypothesis", "pytest-timeout"}

#: Ways of naming the bare `basalt` distribution: an extras spec, `pip install`
#: of it, and reading its metadata. (This file, which spells them out, is not
#: scanned.)
BARE_NAME = re.compile(
    r"(?<![\w./-])basalt\\?\[|"
    r"pip3? install\s+(?:-e\s+)?['\"]?basalt(?![\w-])|"
    r"metadata\.\w+\(\s*['\"]basalt['\"]"
)


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name for r in requirements}


def shipped_text_files() -> list[Path]:
    """The package, docs, examples, tests, benchmarks and build files."""
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / ".ci" / "run"]
    for folder in ("basalt", "examples", "tests", "bench"):
        for path in (ROOT / folder).rglob("*"):
            if "node_modules" in path.parts or not path.is_file() or path == THIS_FILE:
                continue
            if path.suffix in (".py", ".md", ".txt", ".toml", ".sh", ".mjs", ".json"):
                files.append(path)
    return files


def test_no_install_hint_names_the_bare_basalt_distribution() -> None:
    found = []
    for path in shipped_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if BARE_NAME.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_hint_pattern_finds_what_it_should() -> None:
    bare = "basalt"
    assert BARE_NAME.search(f"pip install '{bare}[postgres]'")
    assert BARE_NAME.search(f'match=r"{bare}\\[s3\\]"')
    assert BARE_NAME.search(f"pip install {bare}")
    assert BARE_NAME.search(f"importlib.metadata.version('{bare}')")
    assert not BARE_NAME.search(f"pip install '{DISTRIBUTION}[postgres]'")
    assert not BARE_NAME.search("`basalt dev` reloads; `basalt.testing` has the harness")


def test_the_distribution_is_basalt_backend_with_the_basalt_command_and_plugin() -> None:
    assert PROJECT["name"] == DISTRIBUTION
    assert PROJECT["scripts"] == {"basalt": "basalt.cli.main:main"}
    assert PROJECT["entry-points"]["pytest11"] == {"basalt": "basalt.testing.plugin"}


def test_the_version_has_one_source() -> None:
    assert "version" in PROJECT["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "basalt._version.__version__"
    assert basalt.__version__ == __version__
    assert _user_agent() == f"basalt/{__version__}"


def test_the_testing_extra_is_light_and_dev_includes_it() -> None:
    extras = PROJECT["optional-dependencies"]
    assert {"pytest", "pytest-asyncio"} <= names(extras["testing"])
    assert not names(extras["testing"]) & (DEV_TOOLS | names(extras["server"]))
    [own] = [Requirement(r) for r in extras["dev"] if Requirement(r).name == DISTRIBUTION]
    assert {"server", "s3", "postgres", "testing"} <= own.extras
    assert names(extras["dev"]) >= DEV_TOOLS


def requirement_closure(roots: set[str]) -> set[str]:
    """The installed distributions ``roots`` need, transitively (extras left out)."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        seen.add(name)
        with contextlib.suppress(PackageNotFoundError):  # not installed: nothing to follow
            todo.extend(Requirement(r) for r in requires(requirement.name) or [])
    return seen


def test_the_testing_extra_has_everything_the_fixture_imports() -> None:
    """An app test on the fixture's default database (a mutation, a query, a
    signed-in call, the clock and the scheduler) imports nothing beyond
    Basalt's own dependencies and the `testing` extra."""
    code = """
import asyncio, json, sys
from importlib.metadata import packages_distributions
before = set(sys.modules)
import basalt.testing.plugin
from basalt.testing import BasaltTest

async def main():
    async with BasaltTest(sys.argv[1]) as t:
        await t.mutation("messages:send", {"author": "ann", "body": "hi"})
        await t.query("messages:list", {})
        async def whoami(ctx):
            return await ctx.auth.get_user_identity()
        await t.with_identity({"subject": "ann"}).run(whoami)
        await t.advance(60)

asyncio.run(main())
tops = {m.split(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)
distributions = packages_distributions()
print(json.dumps(sorted({d for top in tops for d in distributions.get(top, [])})))
"""
    template = ROOT / "basalt" / "cli" / "template"
    env = {**os.environ, "BASALT_TEST_BACKEND": "sqlite"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(template)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    imported = {d.lower().replace("_", "-") for d in json.loads(out.stdout)}
    extras = PROJECT["optional-dependencies"]
    allowed = requirement_closure(set(PROJECT["dependencies"]) | set(extras["testing"]))
    # this checkout itself, whichever name the environment installed it under
    allowed |= {DISTRIBUTION, "basalt"}
    assert imported - allowed == set()
    assert {"pytest", "pytest-asyncio", "apsw"} <= imported


def test_the_licence_pyproject_names_is_there() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
