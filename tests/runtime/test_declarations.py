"""Declaration mistakes fail when the function is declared (so when the app
loads), naming the function, its file and line, and the parameter at fault —
not at the first call, with a bare TypeError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from basalt import action, http_action, internal_mutation, mutation, query, v
from basalt.errors import SchemaDefinitionError
from basalt.runtime import load_app

from .conftest import MakeRuntime

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).name


def test_a_field_the_handler_cannot_take_is_refused() -> None:
    async def q(ctx: Any, m: float) -> float:
        return m

    with pytest.raises(SchemaDefinitionError) as info:
        query(args={"n": v.float64()})(q)
    message = info.value.message
    assert message.startswith("query 'test_a_field_the_handler_cannot_take_is_refused.<locals>.q'")
    assert f"{HERE}:" in message
    assert "args= has the field 'n', but the handler has no parameter 'n'" in message
    assert "(its parameters: ctx, m)" in message


def test_a_parameter_no_call_can_give_is_refused() -> None:
    async def q3(ctx: Any, n: float, extra: str) -> float:
        return n

    # The message says where: this file and the handler's first line.
    told = rf"q3' \(.*{HERE}:\d+\): the parameter 'extra' is not a field of args= \(fields: n\)"
    with pytest.raises(SchemaDefinitionError, match=told):
        mutation(args={"n": v.float64()})(q3)
    with pytest.raises(SchemaDefinitionError, match=told):
        internal_mutation(args={"n": v.float64()})(q3)


def test_an_optional_field_needs_a_parameter_with_a_default() -> None:
    async def q(ctx: Any, n: float) -> float:
        return n

    with pytest.raises(SchemaDefinitionError, match=r"'n' is optional .* give it one \(n=None\)"):
        query(args={"n": v.optional(v.float64())})(q)


def test_the_handler_must_take_ctx_and_names_not_positions() -> None:
    async def no_ctx() -> None: ...

    async def positional(ctx: Any, n: float, /) -> None: ...

    with pytest.raises(SchemaDefinitionError, match="must take ctx as its first parameter"):
        query(args={})(no_ctx)
    with pytest.raises(SchemaDefinitionError, match="'n' is positional-only"):
        query(args={"n": v.float64()})(positional)


async def test_kwargs_defaults_and_keyword_only_parameters_are_accepted(
    make_runtime: MakeRuntime,
) -> None:
    @query(args={"n": v.float64(), "label": v.optional(v.string())})
    async def anything(ctx: Any, **args: Any) -> list[str]:
        return sorted(args)

    @query(args={"n": v.float64(), "label": v.optional(v.string())})
    async def defaults(ctx: Any, n: float, *, label: str = "none", unused: int = 0) -> str:
        return f"{n} {label} {unused}"

    @action(args={"n": v.float64()})
    def plain(ctx: Any, n: float) -> float:
        return n

    rt = await make_runtime({"f": {"anything": anything, "defaults": defaults, "plain": plain}})
    assert await rt.query("f:anything", {"n": 1.0}) == ["n"]
    assert await rt.query("f:defaults", {"n": 1.0}) == "1.0 none 0"
    assert await rt.query("f:defaults", {"n": 1.0, "label": "x"}) == "1.0 x 0"
    assert await rt.action("f:plain", {"n": 2.0}) == 2.0


def test_a_plain_def_is_told_the_signature_of_its_kind() -> None:
    def not_async(ctx: Any) -> None: ...

    def route(ctx: Any, request: Any) -> None: ...

    with pytest.raises(SchemaDefinitionError, match=r"`async def not_async\(ctx, \*\*args\)`"):
        query(not_async)
    with pytest.raises(SchemaDefinitionError) as info:
        http_action(route)
    assert "HTTP action 'test_a_plain_def_is_told_the_signature_of_its_kind.<locals>.route'" in str(
        info.value
    )
    assert "`async def route(ctx, request)`" in info.value.message
    assert "**args" not in info.value.message


def test_an_http_action_takes_ctx_and_request() -> None:
    async def route(ctx: Any) -> None: ...

    with pytest.raises(SchemaDefinitionError, match=r"must take two parameters: `async def route"):
        http_action(route)


@pytest.mark.parametrize(
    "folder",
    [
        "examples/quickstart/functions",
        "examples/celstate/functions",
        "basalt/cli/template",
        *sorted(
            str(p.relative_to(ROOT))
            for p in [*ROOT.glob("tests/*/apps/*"), *ROOT.glob("bench/apps/*")]
            if p.is_dir()
        ),
    ],
)
def test_every_app_of_the_repository_still_loads(folder: str) -> None:
    """The checks refuse no app this repository ships or tests with."""
    app = load_app(ROOT / folder)
    assert app.functions
