"""The ``basalt`` command: ``init``, ``serve``, ``run`` and ``dev``, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from convex import ConvexError
from convex.http_client import ConvexExecutionError, ConvexHttpClient

from basalt.cli.scaffold import ScaffoldError, scaffold

from .conftest import Databases, basalt, clean_env, wait_until
from .shell import ShellServer, basalt_on_path

SEND = '{"author": "ada", "body": "hello"}'

# -- basalt init ----------------------------------------------------------------


def test_init_scaffolds_an_app_that_serves(
    tmp_path: Path, basalt_process: Callable[..., Any]
) -> None:
    root = tmp_path / "proj"
    result = basalt("init", str(root))
    assert result.returncode == 0, result.stderr
    app = root / "functions"
    assert (app / "schema.py").is_file() and (app / "messages.py").is_file()
    assert ".basalt/" in (root / ".gitignore").read_text()
    assert "basalt dev" in result.stdout

    server = basalt_process(app, root / ".basalt").start()
    client = server.client()
    message_id = client.mutation("messages:send", {"author": "ada", "body": "hi there"})
    assert isinstance(message_id, str)
    [doc] = client.query("messages:list", {})
    assert (doc["_id"], doc["author"], doc["body"]) == (message_id, "ada", "hi there")
    assert client.mutation("messages:like", {"id": message_id}) == 1.0
    assert client.query("messages:by_author", {"author": "ada"})[0]["likes"] == 1.0
    with pytest.raises(ConvexError) as info:
        client.mutation("messages:send", {"author": "ada", "body": "   "})
    assert info.value.data["code"] == "EMPTY"


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_the_next_command_init_prints_keeps_data_and_admin_key_in_the_project(
    tmp_path: Path, databases: Databases
) -> None:
    """`basalt init myproject`, then its "Next:" command as typed: the data
    folder (database, admin key, server.json) is inside the project, and the
    project's .gitignore keeps it out of git."""
    project = tmp_path / "myproject"
    result = basalt("init", "myproject", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [hint] = [line for line in result.stdout.splitlines() if line.startswith("Next: ")]
    env = basalt_on_path(tmp_path / "bin", databases.env(project / ".basalt"))
    server = ShellServer(hint.removeprefix("Next: "), tmp_path, env, project / ".basalt")
    try:
        server.start()
        client = ConvexHttpClient(server.url)
        client.mutation("messages:send", {"author": "ada", "body": "hi"})
        assert [m["body"] for m in client.query("messages:list", {})] == ["hi"]
        assert (project / ".basalt" / "admin_key").is_file()
        assert not (tmp_path / ".basalt").exists()
        assert git("init", "-q", cwd=project).returncode == 0
        ignored = git("check-ignore", ".basalt/admin_key", ".basalt/server.json", cwd=project)
        assert ignored.stdout.split() == [".basalt/admin_key", ".basalt/server.json"]
        untracked = git("status", "--porcelain", "--untracked-files=all", cwd=project).stdout
        assert sorted(line.split()[-1] for line in untracked.splitlines()) == [
            ".gitignore",
            "functions/messages.py",
            "functions/schema.py",
        ]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["init"], "basalt dev"),
        (["init", "my app"], "cd 'my app' && basalt dev"),
        (["init", "proj", "--app", "api"], "cd proj && basalt dev --app api"),
    ],
)
def test_the_next_command_names_the_project_and_app_folders(
    tmp_path: Path, args: list[str], hint: str
) -> None:
    result = basalt(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"Next: {hint}"


def test_init_adds_the_data_folder_to_an_existing_gitignore(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/")
    result = basalt("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".gitignore").read_text() == "node_modules/\n.basalt/\n__pycache__/\n"
    assert "updated .gitignore" in result.stdout


def test_init_in_the_current_folder(tmp_path: Path) -> None:
    result = basalt("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "functions" / "messages.py").is_file()


def test_init_refuses_to_overwrite(project: Path) -> None:
    messages = project / "functions" / "messages.py"
    messages.write_text("# my own work\n")
    result = basalt("init", str(project))
    assert result.returncode != 0
    assert "already exist" in result.stderr
    assert "messages.py" in result.stderr
    assert "Traceback" not in result.stderr
    assert messages.read_text() == "# my own work\n"


def test_init_says_which_files_already_exist_in_plain_words(tmp_path: Path) -> None:
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "schema.py").write_text("# mine\n")
    with pytest.raises(ScaffoldError, match=r"schema\.py already exists; choose another folder"):
        scaffold(tmp_path, "functions")
    (tmp_path / "functions" / "messages.py").write_text("# mine too\n")
    with pytest.raises(ScaffoldError, match=r"messages\.py, \S+schema\.py already exist; choose"):
        scaffold(tmp_path, "functions")


# -- basalt run -----------------------------------------------------------------


def run_json(*args: str, **kw: Any) -> Any:
    result = basalt("run", *args, **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_in_process_then_through_the_running_server(
    project: Path, tmp_path: Path, basalt_process: Callable[..., Any], databases: Databases
) -> None:
    app, data = project / "functions", project / ".basalt"
    where = ["--app", str(app), "--data", str(data)]
    env = databases.env(data)
    databases.create(data)  # as a first `basalt dev` would

    # No server: the function runs in this process, on the data folder.
    first_id = run_json("messages:send", SEND, *where, env=env)
    assert isinstance(first_id, str)
    [doc] = run_json("messages:list", *where, env=env)
    assert (doc["_id"], doc["body"]) == (first_id, "hello")
    assert not (data / "server.json").exists()

    # A server runs for the data folder, with its admin key from its environment:
    # `basalt run` goes through it, with the key from its own environment (the
    # server does not write it to disk). The app folder given to `basalt run` is
    # empty, so only the server can run the function.
    server_key = "key-only-the-server-knows|" + "k" * 32
    server = basalt_process(app, data, admin_key=server_key).start()
    assert server_key not in (data / "server.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    elsewhere = ["--app", str(empty), "--data", str(data)]
    without_key = basalt("run", "messages:list", *elsewhere, env=env)
    assert without_key.returncode == 2
    assert without_key.stderr == (
        f"error: the server at {server.url} (pid {server.pid}) takes its admin key from "
        "BASALT_ADMIN_KEY, which is not set here: set it to the server's key, or pass "
        "--admin-key\n"
    )
    env = {**env, "BASALT_ADMIN_KEY": server_key}
    second_id = run_json(
        "messages:send", '{"author": "bob", "body": "via server"}', *elsewhere, env=env
    )
    bodies = [d["body"] for d in server.client().query("messages:by_author", {"author": "bob"})]
    assert bodies == ["via server"]
    result = basalt("run", "messages:list", *elsewhere, env=env)  # and says so on stderr
    assert result.returncode == 0, result.stderr
    assert f"on the server at {server.url} (pid {server.pid})" in result.stderr
    listed = run_json("messages:list", *elsewhere, env=env)
    assert [d["_id"] for d in listed] == [second_id, first_id]  # newest first

    # Errors come back from the server too.
    result = basalt("run", "messages:nope", *elsewhere, env=env)
    assert result.returncode != 0
    assert "messages:nope" in result.stderr
    result = basalt("run", "messages:send", '{"author": "a", "body": " "}', *elsewhere, env=env)
    assert result.returncode != 0
    assert "EMPTY" in result.stderr

    # Once the server is gone (even killed, leaving its marker), back to in-process.
    server.kill9()
    assert (data / "server.json").exists()
    assert len(run_json("messages:list", *where, env=env)) == 2


def test_run_with_explicit_url_and_admin_key(
    project: Path, tmp_path: Path, basalt_process: Callable[..., Any]
) -> None:
    key = "k1" * 16
    server = basalt_process(project / "functions", tmp_path / "data", admin_key=key).start()
    args = ["--url", server.url, "--app", str(tmp_path / "none"), "--data", str(tmp_path / "d")]
    assert isinstance(run_json("messages:send", SEND, *args, "--admin-key", key), str)
    result = basalt("run", "messages:list", *args, "--admin-key", "wrong")
    assert result.returncode != 0
    assert "401" in result.stderr and "BadAdminKey" in result.stderr
    result = basalt("run", "messages:list", *args, env=clean_env(BASALT_ADMIN_KEY=key))
    assert result.returncode == 0, result.stderr
    # Nothing listens there: a clear error, no traceback.
    result = basalt("run", "messages:list", "--url", "http://127.0.0.1:9", "--admin-key", key)
    assert result.returncode != 0
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr


def test_run_with_a_bad_function_path(project: Path, databases: Databases) -> None:
    where = ["--app", str(project / "functions"), "--data", str(project / ".basalt")]
    env = databases.env(project / ".basalt")
    databases.create(project / ".basalt")
    for path in ("messages:nope", "nomodule:fn"):
        result = basalt("run", path, *where, env=env)
        assert result.returncode != 0
        assert path in result.stderr
        assert "Could not find function" in result.stderr
        assert result.stdout == ""


def test_run_with_bad_arguments(project: Path, databases: Databases) -> None:
    where = ["--app", str(project / "functions"), "--data", str(project / ".basalt")]
    env = databases.env(project / ".basalt")
    databases.create(project / ".basalt")
    result = basalt("run", "messages:send", "{not json", *where, env=env)
    assert result.returncode != 0 and "JSON" in result.stderr
    result = basalt("run", "messages:send", "[1]", *where, env=env)
    assert result.returncode != 0 and "object" in result.stderr
    result = basalt("run", "messages:send", '{"author": "a"}', *where, env=env)
    assert result.returncode != 0 and "body" in result.stderr
    result = basalt("run", "messages:send", '{"author": "a", "body": "  "}', *where, env=env)
    assert result.returncode != 0 and "EMPTY" in result.stderr


# -- basalt dev -----------------------------------------------------------------

BROKEN = "\n\n@query\nasync def broken(ctx:\n    return 1\n"  # a syntax error


def call_until(fn: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Call ``fn`` until it stops raising, for at most ``timeout`` s."""
    errors: list[BaseException] = []

    def attempt() -> Any:
        try:
            return (fn(),)
        except (ConvexExecutionError, ConvexError) as exc:
            errors.append(exc)
            return None

    try:
        return wait_until(attempt, timeout, "the reloaded function", interval=0.05)[0]
    except AssertionError:
        raise AssertionError(f"still failing: {errors[-1] if errors else None}") from None


def test_dev_keeps_serving_through_a_syntax_error_and_reloads_the_fix(
    project: Path, basalt_process: Callable[..., Any]
) -> None:
    app = project / "functions"
    dev = basalt_process(app, project / ".basalt", command="dev").start()
    client = dev.client()
    client.mutation("messages:send", {"author": "ada", "body": "before"})

    messages = app / "messages.py"
    good = messages.read_text()
    broken_line = good.count("\n") + 4  # the line of `async def broken(ctx:`
    mark = len(dev.output())
    messages.write_text(good + BROKEN)
    out = dev.wait_for_output("still serving the previous version", start=mark)[mark:]
    assert f"messages.py:{broken_line}" in out
    assert "SyntaxError" in out
    # The old functions still serve, and the data is intact.
    client.mutation("messages:send", {"author": "ada", "body": "during"})
    assert [d["body"] for d in client.query("messages:by_author", {"author": "ada"})] == [
        "before",
        "during",
    ]

    fixed = good + '\n\n@query\nasync def hello(ctx):\n    return "hello from the fix"\n'
    messages.write_text(fixed)
    assert call_until(lambda: client.query("messages:hello")) == "hello from the fix"
    assert len(client.query("messages:list", {})) == 2
    assert "reloaded" in dev.output()[mark:]
    assert dev.stop() == 0


def test_dev_starts_with_a_broken_app_and_serves_once_fixed(
    project: Path, basalt_process: Callable[..., Any]
) -> None:
    app = project / "functions"
    messages = app / "messages.py"
    good = messages.read_text()
    messages.write_text(good + BROKEN)
    dev = basalt_process(app, project / ".basalt", command="dev")
    dev.launch()
    dev.wait_for_output("messages.py:")
    messages.write_text(good)
    dev.wait_ready()
    assert dev.client().query("messages:list", {}) == []


def test_dev_reloads_an_edit_that_keeps_size_and_mtime(
    project: Path, basalt_process: Callable[..., Any], tmp_path: Path
) -> None:
    app = project / "functions"
    messages = app / "messages.py"
    messages.write_text(
        messages.read_text() + '\n\n@query\nasync def version(ctx):\n    return "v1"\n'
    )
    dev = basalt_process(app, project / ".basalt", command="dev")
    dev.env.pop("PYTHONDONTWRITEBYTECODE", None)  # as for most users: bytecode is cached
    client = dev.start().client()
    assert client.query("messages:version") == "v1"

    # An editor saves a same-length change within the same second: same size, and
    # (set explicitly here, so the test does not depend on timing) the same mtime.
    before = messages.stat()
    staged = tmp_path / "messages.py.new"
    staged.write_text(messages.read_text().replace('"v1"', '"v2"'))
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
    mark = len(dev.output())
    shutil.move(staged, messages)
    dev.wait_for_output("reloaded", start=mark)
    assert client.query("messages:version") == "v2"


def test_serve_with_a_broken_app_exits_with_the_error(
    project: Path, tmp_path: Path, databases: Databases
) -> None:
    messages = project / "functions" / "messages.py"
    messages.write_text(messages.read_text() + BROKEN)
    data = tmp_path / "d"
    result = basalt(
        "serve",
        "--app",
        str(project / "functions"),
        "--data",
        str(data),
        "--port",
        "0",
        env=databases.env(data),
    )
    assert result.returncode != 0
    assert "messages.py:" in result.stderr and "SyntaxError" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_missing_app_folder_is_a_clear_error(
    command: str, tmp_path: Path, databases: Databases
) -> None:
    data = tmp_path / "data"
    where = ["--app", str(tmp_path / "missing"), "--data", str(data), "--port", "0"]
    result = basalt(command, *where, env=databases.env(data))
    assert result.returncode != 0
    assert "missing" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists()


def test_version() -> None:
    result = basalt("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("basalt ")
