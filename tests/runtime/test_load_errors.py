"""What a developer is told when the app folder does not load: the file and
line (once), the error in the names the developer knows (``messages``, never
the package Basalt imports the folder as, nor Basalt's module paths), and a
hint for the usual import mistakes; crons that could never run fail here too."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from basalt.errors import AppLoadError
from basalt.runtime import load_app

MESSAGES = """
from basalt import mutation, query, v

@query
async def send(ctx):
    return "sent"

@mutation(args={"days": v.int64()})
async def cleanup(ctx, days):
    return days
"""


CRONS = """
from basalt import cron_jobs
from .messages import cleanup

crons = cron_jobs()
crons.daily("digest", {"hourUTC": 7, "minuteUTC": 0}, "messages:cleanup", {"days": 3})
crons.cron("nightly cleanup", "0 3 * * *", %s)
"""


def load_error(folder: Path, files: dict[str, str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {"messages.py": MESSAGES, **files}.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(AppLoadError) as info:
        load_app(folder)
    message = info.value.message
    assert "_basalt_app_" not in message, message
    return message


def test_an_absolute_import_of_an_app_module_gets_the_relative_one(tmp_path: Path) -> None:
    told = load_error(tmp_path / "a", {"other.py": "from messages import send\n"})
    assert (
        f"{tmp_path / 'a' / 'other.py'}:1: ModuleNotFoundError: No module named 'messages'" in told
    )
    assert "`from .messages import send`" in told
    told = load_error(tmp_path / "b", {"other.py": "import messages\n"})
    assert "`from . import messages`" in told
    # A module that is not the app's gets no such hint.
    told = load_error(tmp_path / "c", {"other.py": "import no_such_package_anywhere\n"})
    assert "No module named 'no_such_package_anywhere'" in told and "relative" not in told


def test_a_missing_name_is_told_from_the_module_the_developer_wrote(tmp_path: Path) -> None:
    told = load_error(tmp_path / "a", {"crons.py": "from .messages import clean_up\n"})
    assert "cannot import name 'clean_up' from 'messages'" in told
    told = load_error(tmp_path / "b", {"other.py": "from . import nothing_here\n"})
    assert f"cannot import name 'nothing_here' from '{tmp_path / 'b'}'" in told


def test_errors_keep_the_names_the_developer_knows(tmp_path: Path) -> None:
    told = load_error(
        tmp_path / "a",
        {"other.py": "class Oops(Exception):\n    pass\n\nraise Oops('at import')\n"},
    )
    assert told.endswith(f"{tmp_path / 'a' / 'other.py'}:4: other.Oops: at import"), told
    told = load_error(
        tmp_path / "b",
        {"crons.py": CRONS.replace('"0 3 * * *", %s', "'0 3', 'messages:cleanup'")},
    )
    assert "crons.py:6: InvalidScheduleCall: cron 'nightly cleanup': '0 3' is not a cron" in told
    assert "basalt.runtime" not in told and "SchedulingError" not in told


def test_a_syntax_error_says_its_location_once(tmp_path: Path) -> None:
    told = load_error(tmp_path, {"bad.py": "from basalt import query\n\nx = (\n"})
    assert (
        told
        == f"Failed to load the app: {tmp_path / 'bad.py'}:3: SyntaxError: '(' was never closed"
    )


def test_a_def_http_action_is_told_its_signature_once(tmp_path: Path) -> None:
    http = """
    from basalt import HttpRouter, http_action

    http = HttpRouter()

    @http_action
    def hook(ctx, request):
        return None
    """
    told = load_error(tmp_path, {"http.py": http})
    assert "`async def hook(ctx, request)`" in told and "**args" not in told
    assert told.count("http.py") == 1, told


@pytest.mark.parametrize("fn", ['"messages:cleanup"', "cleanup"])
def test_cron_arguments_are_checked_when_the_app_loads(tmp_path: Path, fn: str) -> None:
    """The arguments a cron will pass are checked against the function's args=
    now, not at its first run (at 3 a.m.); by path or by function object."""
    told = load_error(tmp_path, {"crons.py": CRONS % (fn + ', {"day": 30.0}')})
    assert f"cron 'nightly cleanup' ({tmp_path / 'crons.py'}:6)" in told
    assert "do not match the args= of" in told and '"days" is missing' in told
    told = load_error(tmp_path, {"crons.py": CRONS % (fn + ', {"days": 30.0}')})
    assert "at .days: expected v.int64(), got float64 30.0" in told
    # Right arguments load.
    (tmp_path / "crons.py").write_text(textwrap.dedent(CRONS % (fn + ', {"days": 30}')))
    assert len(load_app(tmp_path).crons) == 2


def test_a_cron_of_a_missing_or_wrong_function_fails_when_the_app_loads(tmp_path: Path) -> None:
    told = load_error(tmp_path, {"crons.py": CRONS % '"messages:cleanpu"'})
    assert (
        "cron 'nightly cleanup'" in told
        and "Could not find function for 'messages:cleanpu'" in told
    )
    assert "did you mean 'messages:cleanup'" in told  # the developer is told everything
    told = load_error(tmp_path, {"crons.py": CRONS % '"messages:send"'})
    assert "messages:send is a query; a cron runs a mutation or an action" in told
    told = load_error(tmp_path, {"crons.py": "crons = 5\n"})
    assert "crons.py must define `crons = cron_jobs()`" in told
