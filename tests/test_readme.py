"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import basalt
from basalt import ConvexError
from basalt.testing import BasaltTest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def app_files() -> dict[str, str]:
    """The README's code blocks that start with `# functions/<file>`."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# functions/"):
            files[first[len("# functions/") :]] = rest
    return files


async def test_readme_app_runs(tmp_path: Path) -> None:
    files = app_files()
    assert set(files) == {"schema.py", "messages.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    async with BasaltTest(tmp_path) as t:
        await t.mutation("messages:send", {"author": "ann", "body": "hello"})
        await t.mutation("messages:send", {"author": "bob", "body": "hi"})
        assert [m["body"] for m in await t.query("messages:by_author", {"author": "ann"})] == [
            "hello"
        ]
        with pytest.raises(ConvexError):
            await t.mutation("messages:send", {"author": "ann", "body": " "})


def pytest_example() -> str:
    """The README's example test of an app (the block that uses the `basalt` fixture)."""
    [block] = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "(basalt)" in b]
    return block


def test_readme_pytest_example_runs_in_a_fresh_project(tmp_path: Path) -> None:
    """The README's app and its pytest example, as written, in a project of
    their own with no pytest settings: `pytest` passes."""
    project = tmp_path / "myproject"
    (project / "functions").mkdir(parents=True)
    for name, text in app_files().items():
        (project / "functions" / name).write_text(text)
    (project / "test_messages.py").write_text(pytest_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_readme_commands_exist() -> None:
    assert "make install" in README and "make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make install" in ci and "make test" in ci
    assert (ROOT / "examples" / "quickstart" / "functions" / "messages.py").exists()


def test_quickstart_example_is_what_basalt_init_scaffolds() -> None:
    """examples/quickstart is the README's `basalt dev` app: the `basalt init` template."""
    example = ROOT / "examples" / "quickstart" / "functions"
    template = ROOT / "basalt" / "cli" / "template"
    names = sorted(p.name for p in template.glob("*.py"))
    assert names == sorted(p.name for p in example.glob("*.py"))
    for name in names:
        assert (example / name).read_text() == (template / name).read_text(), name


def test_import_basalt_stays_light() -> None:
    code = (
        "import sys, basalt; heavy = {'uvicorn', 'apsw', 'httptools', 'websockets', 'httpx'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported() -> None:
    for name in basalt.__all__:
        assert hasattr(basalt, name), name
    assert {"query", "mutation", "action", "v", "define_schema", "ConvexError"} <= set(
        basalt.__all__
    )


def test_every_python_block_in_the_readme_compiles() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 5
    for block in blocks:
        compile(textwrap.dedent(block), "README.md", "exec")
