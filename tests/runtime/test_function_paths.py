"""A wrong function path gets a "did you mean": the same path spelled with
``.`` or ``/`` for ``:``, ``.`` for ``/``, or a close module or function name —
told only to callers who see everything (it names functions)."""

from __future__ import annotations

from typing import Any

import pytest

from basalt import action, internal_mutation, query
from basalt.errors import FunctionNotFound
from basalt.runtime import App
from basalt.runtime.outcome import error_message

from .conftest import MakeRuntime


@query
async def list_messages(ctx: Any) -> str:
    return "listed"


@query
async def send(ctx: Any) -> str:
    return "sent"


@internal_mutation
async def cleanup(ctx: Any) -> None: ...


@action
async def stream(ctx: Any) -> None: ...


MODULES = {
    "messages": {"list": list_messages, "send": send, "cleanup": cleanup},
    "ai/saga": {"stream": stream},
}


@pytest.mark.parametrize(
    ("wrong", "meant"),
    [
        ("messages.list", "'messages:list'"),
        ("messages/list", "'messages:list'"),
        ("ai.saga:stream", "'ai/saga:stream'"),
        ("ai.saga.stream", "'ai/saga:stream'"),
        ("message:list", "'messages:list'"),
        ("messages:lsit", "'messages:list'"),
        ("message:cleanup", "'messages:cleanup' (internal)"),
    ],
)
def test_a_wrong_path_gets_a_did_you_mean(wrong: str, meant: str) -> None:
    app = App.from_modules(MODULES)
    with pytest.raises(FunctionNotFound) as info:
        app.function(wrong)
    assert info.value.detail is not None and f"(did you mean {meant}?)" in info.value.detail


def test_nothing_close_suggests_nothing() -> None:
    app = App.from_modules(MODULES)
    for wrong in ("nothing:here", "x" * 5000):
        with pytest.raises(FunctionNotFound) as info:
            app.function(wrong)
        assert "did you mean" not in (info.value.detail or "")


async def test_only_callers_who_see_everything_are_told(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)
    for admin in (True, False):
        outcome = await rt.call("messages.list", {}, kind="query", admin=admin)
        assert outcome.rejected and outcome.error is not None
        told_all = error_message(outcome.error, "1", full=True, rejected=True)
        assert "(did you mean 'messages:list'?)" in told_all
        told_anonymous = error_message(outcome.error, "1", full=False, rejected=True)
        assert "messages:list" not in told_anonymous and "did you mean" not in told_anonymous
