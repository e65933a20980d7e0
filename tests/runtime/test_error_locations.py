"""Where a developer is told an error happened: the app's own lines, whatever
folder the project sits in, never the standard library's, an installed
package's or Basalt's — in error messages, the one-line log of a failed call,
and the event-loop watchdog's warning about blocking code."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest

from basalt.runtime.outcome import Failure, error_message, one_line
from basalt.testing import BasaltTest

APP = """
import json
import time

from basalt import action, query


@query
async def fails(ctx):
    raise ValueError("boom")


@query
async def bad_json(ctx):
    return json.loads("{not json")


@action
async def naps(ctx):
    time.sleep(1.0)
    return "rested"
"""


def write_app(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "things.py").write_text(textwrap.dedent(APP).lstrip("\n"))
    return folder / "things.py"


def at_lines(message: str) -> list[str]:
    return re.findall(r"^    at (\S+) \((.+)\)$", message, flags=re.MULTILINE)


async def test_a_project_in_a_folder_named_basalt_keeps_its_locations(tmp_path: Path) -> None:
    """The README clones into a folder named ``basalt``: the app's frames are
    still the app's."""
    source = write_app(tmp_path / "basalt" / "functions")
    async with BasaltTest(source.parent, data_dir=tmp_path / "data") as t:
        outcome = await t.runtime.call("things:fails", {}, admin=True)
    assert outcome.error is not None
    message = error_message(outcome.error, full=True)
    assert at_lines(message) == [("fails", f"{source}:9")], message
    assert f"(at fails, {source}:9)" in one_line(Failure(outcome.error), "things:fails")


async def test_the_app_line_comes_first_and_library_frames_never(tmp_path: Path) -> None:
    """``json.loads`` raising deep in the standard library: the location is the
    app's line that called it, and no frame of json/decoder.py is shown."""
    source = write_app(tmp_path / "functions")
    async with BasaltTest(source.parent, data_dir=tmp_path / "data") as t:
        outcome = await t.runtime.call("things:bad_json", {}, admin=True)
    assert outcome.error is not None
    message = error_message(outcome.error, full=True)
    assert "JSONDecodeError" in message
    assert at_lines(message) == [("bad_json", f"{source}:14")], message
    assert "json/decoder.py" not in message
    line = one_line(Failure(outcome.error), "things:bad_json")
    assert line.endswith(f"(at bad_json, {source}:14)"), line


async def test_the_blocking_warning_names_the_app_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``time.sleep`` in an async action holds the action loop: the warning
    points at the action's line, not at Basalt's patched ``time.sleep``."""
    source = write_app(tmp_path / "basalt" / "functions")
    async with BasaltTest(source.parent, data_dir=tmp_path / "data") as t:
        with caplog.at_level(logging.WARNING, logger="basalt.runtime"):
            assert await t.action("things:naps", {}) == "rested"
    [warning] = [r.getMessage() for r in caplog.records if "has blocked" in r.getMessage()]
    assert warning.startswith("things:naps has blocked the action loop"), warning
    assert f"(at {source}:19)" in warning, warning
    assert "determinism.py" not in warning
