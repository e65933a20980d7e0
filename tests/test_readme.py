"""The README's examples run as written."""

from __future__ import annotations

import json
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
from basalt.testing.engines import drop_test_databases_sync, server_env

from .cli.shell import ShellServer, fake_venv

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


def section(title: str) -> str:
    """The README's text under the heading ``title``, up to the next heading of its level."""
    level = title.split(" ")[0]
    start = README.index(f"\n{title}\n")
    end = README.find(f"\n{level} ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_readme_run_an_app_runs_as_written(tmp_path: Path) -> None:
    """After `make install`: the README's commands of "Run an app" as typed
    (`.venv/bin/activate` here puts this checkout's `basalt` on the PATH), then
    its Python client call against the server they start, then `basalt run`
    in the project's folder."""
    run_an_app = section("## Run an app")
    commands = code_blocks(run_an_app, "sh")[0]
    client_call = code_blocks(run_an_app, "python")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASALT_")}
    env.update(server_env(tmp_path, "myproject"))
    fake_venv(tmp_path, env)
    data = tmp_path / "myproject" / ".basalt"
    server = ShellServer(commands, tmp_path, env, data)
    try:
        server.start()
        assert (data / "admin_key").is_file()
        assert ".basalt/" in (tmp_path / "myproject" / ".gitignore").read_text()
        assert "http://127.0.0.1:3210" in client_call
        script = client_call.replace("http://127.0.0.1:3210", server.url)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "'body': 'hello'" in out.stdout
        [run_command] = re.findall(r"in the project's folder: `(basalt run [^`]+)`", run_an_app)
        listed = subprocess.run(
            ["bash", "-c", f". ../.venv/bin/activate && {run_command}"],
            cwd=tmp_path / "myproject",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert [m["body"] for m in json.loads(listed.stdout)] == ["hello"]
    finally:
        try:
            server.stop()
        finally:
            drop_test_databases_sync(tmp_path)


def test_readme_runs_the_example_as_its_own_readme_does() -> None:
    """The README's command for the example in this repository is the one
    examples/quickstart/README.md gives (tests/examples/test_quickstart.py runs it)."""
    quickstart = code_blocks(section("## Run an app"), "sh")[1]
    example_readme = (ROOT / "examples" / "quickstart" / "README.md").read_text()
    assert code_blocks(example_readme, "sh") == [quickstart]


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
