"""A function's log lines: what it prints and what it logs with ``logging``,
each line with its level, attributed to the call that made it even when calls
run concurrently, echoed to the server's output with the function's path, and
never Basalt's own records."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from basalt.runtime import Runtime, load_app, logs
from basalt.testing.engines import drop_test_databases, engine_for_tests

CHAT = textwrap.dedent(
    """
    import asyncio
    import logging

    from basalt import action, query

    log = logging.getLogger(__name__)


    @action
    async def talk(ctx, name: str, rounds: float):
        for i in range(int(rounds)):
            log.info("%s %d", name, i)
            print(name, "printed", i)
            await asyncio.sleep(0)  # let the other call run in between
        log.debug("%s debug: below the app loggers' level", name)
        logging.getLogger("basalt.sync").warning("server record during %s", name)
        logging.getLogger("some.library").info("library info: below its level")
        logging.getLogger("some.library").warning("library warning %s", name)
        try:
            raise KeyError(name)
        except KeyError:
            log.exception("failed %s", name)
        return name


    @query
    async def quiet(ctx):
        return 1


    @query
    async def garbled(ctx):
        print("50%\\r100%\\x1b[2J\\x1b[31mred\\x00 \\u202egnp.exe")
        log.warning("first line\\n[chat:talk] a line of another function?")
        return 1
    """
)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "chat.py").write_text(CHAT)
    rt = Runtime(load_app(app), engine_for_tests(tmp_path, "db"))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()
        await drop_test_databases(tmp_path)


def expected(name: str) -> list[str]:
    return [
        f"[INFO] {name} 0",
        f"[LOG] {name} printed 0",
        f"[INFO] {name} 1",
        f"[LOG] {name} printed 1",
        f"[INFO] {name} 2",
        f"[LOG] {name} printed 2",
        f"[WARN] library warning {name}",
    ]


async def test_concurrent_calls_keep_their_own_lines_with_levels(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.WARNING)
    logs.install()  # as Runtime.start does, now that pytest's handlers are in place
    ann, bob = await asyncio.gather(
        runtime.call("chat:talk", {"name": "ann", "rounds": 3.0}),
        runtime.call("chat:talk", {"name": "bob", "rounds": 3.0}),
    )
    for outcome, name in ((ann, "ann"), (bob, "bob")):
        assert outcome.ok, outcome.error
        *lines, failed = outcome.log_lines
        assert lines == expected(name)
        # logger.exception: one line, with its traceback.
        assert failed.startswith(f"[ERROR] failed {name}\nTraceback (most recent call last):")
        assert failed.endswith(f"KeyError: '{name}'")
    # Echoed to the server's output (stderr) with the function's path, once.
    err = capsys.readouterr().err
    assert "[chat:talk] [INFO] ann 1" in err and "[chat:talk] bob printed 2" in err
    assert "[chat:talk] [WARN] library warning bob" in err
    # Basalt's own records stay the server's: in the logging handlers, not in the
    # lines; the function's records are not printed a second time by the handlers.
    messages = [r.getMessage() for r in caplog.records]
    assert "server record during ann" in messages
    assert not any("library warning" in m or "failed " in m for m in messages)


async def test_records_outside_calls_are_left_alone(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("some.library").warning("outside any call")
    assert "outside any call" in caplog.text
    outcome = await runtime.call("chat:quiet", {})
    assert outcome.ok and outcome.log_lines == []


async def test_control_characters_are_escaped_on_the_servers_output(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """A function's output cannot rewrite the server's terminal or log (carriage
    returns, ANSI escapes, NUL, bidi overrides) nor pass a line off as another
    function's; the caller still gets its lines as written."""
    logs.install()
    capsys.readouterr()
    outcome = await runtime.call("chat:garbled", {})
    assert outcome.ok, outcome.error
    assert outcome.log_lines == [
        "[LOG] 50%\r100%\x1b[2J\x1b[31mred\x00 \u202egnp.exe",
        "[WARN] first line\n[chat:talk] a line of another function?",
    ]
    err = capsys.readouterr().err
    assert "[chat:garbled] 50%\\r100%\\x1b[2J\\x1b[31mred\\x00 \\u202egnp.exe\n" in err
    assert "[chat:garbled] [WARN] first line\n[chat:garbled] [chat:talk] a line" in err
    assert not any(c in err for c in "\r\x1b\x00\u202e")
