"""Function declarations: the ``query``/``mutation``/``action`` decorators.

A decorated handler becomes a :class:`Function`. It knows its kind, whether
clients may call it (``public``) or only other functions and admins
(``internal``), and its argument and return validators. Its ``path``
(``"module:name"``) is set when the app folder is loaded.

Both spellings work::

    @query
    async def count(ctx): ...

    @mutation(args={"body": v.string()})
    async def send(ctx, body): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

from basalt.errors import SchemaDefinitionError
from basalt.schema import Validator, as_object_validator

Kind = Literal["query", "mutation", "action", "http_action"]
#: ``async def handler(ctx, **args)`` (actions may also be plain ``def``)
Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)


class Function:
    """A registered function: a handler plus its kind, visibility and validators."""

    def __init__(
        self,
        handler: Handler,
        kind: Kind,
        visibility: Literal["public", "internal"],
        args: dict[str, Validator] | Validator | None,
        returns: Validator | None,
    ) -> None:
        is_async = inspect.iscoroutinefunction(handler)
        if not is_async and not (kind == "action" and callable(handler)):
            raise SchemaDefinitionError(
                f"{kind} {getattr(handler, '__qualname__', handler)!r} must be declared with "
                f"'async def' (handlers are coroutines: async def handler(ctx, **args)); "
                "only actions may also be plain 'def' functions"
            )
        #: False for an action declared with plain ``def`` (run on its worker thread)
        self.is_async = is_async
        self.handler = handler
        self.kind = kind
        self.visibility = visibility
        self.is_public = visibility == "public"
        self.args = as_object_validator(args)
        if returns is not None and not isinstance(returns, Validator):
            raise SchemaDefinitionError(
                f"returns= of {handler.__qualname__} must be a validator such as v.string(), "
                f"got {returns!r}"
            )
        self.returns = returns
        self.path: str | None = None
        self.__name__ = handler.__name__
        self.__doc__ = handler.__doc__

    def __repr__(self) -> str:
        where = self.path or self.handler.__qualname__
        return f"<{self.visibility} {self.kind} {where}>"

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calling a function object directly runs its handler as plain Python
        (no validation, no transaction) — handy for helpers shared between
        functions. Use ``ctx.run_query`` & co. to run it as a function."""
        if not self.is_async:
            return self.handler(*args, **kwargs)
        return await self.handler(*args, **kwargs)


def _decorator(kind: Kind, visibility: Literal["public", "internal"]) -> Any:
    @overload
    def decorate(handler: F, /) -> Function: ...
    @overload
    def decorate(
        handler: None = None,
        /,
        *,
        args: dict[str, Validator] | Validator | None = None,
        returns: Validator | None = None,
    ) -> Callable[[F], Function]: ...

    def decorate(
        handler: Handler | None = None,
        /,
        *,
        args: dict[str, Validator] | Validator | None = None,
        returns: Validator | None = None,
    ) -> Function | Callable[[Handler], Function]:
        if handler is not None:
            return Function(handler, kind, visibility, args, returns)

        def wrap(fn: Handler) -> Function:
            return Function(fn, kind, visibility, args, returns)

        return wrap

    decorate.__name__ = kind if visibility == "public" else f"internal_{kind}"
    decorate.__doc__ = (
        f"Declare a {visibility} {kind}. Use as ``@{decorate.__name__}`` or "
        f"``@{decorate.__name__}(args={{...}}, returns=...)``."
    )
    return decorate


query = _decorator("query", "public")
mutation = _decorator("mutation", "public")
action = _decorator("action", "public")
internal_query = _decorator("query", "internal")
internal_mutation = _decorator("mutation", "internal")
internal_action = _decorator("action", "internal")


def http_action(handler: Handler) -> Function:
    """Declare an HTTP action: ``async def handler(ctx, request) -> response``."""
    return Function(handler, "http_action", "internal", None, None)
