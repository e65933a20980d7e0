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

Declaration mistakes fail here, when the app loads, with a
:class:`~basalt.errors.SchemaDefinitionError` naming the function, its file
and line: a plain ``def`` query or mutation, an ``args=`` field the handler
has no parameter for (unless it takes ``**args``), a parameter no field gives
and no default fills, an optional field whose parameter has no default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, overload

from basalt.errors import SchemaDefinitionError
from basalt.schema import Validator, as_object_validator

#: How each kind of handler is declared, for error messages.
_SIGNATURES: dict[str, str] = {
    "query": "async def {name}(ctx, **args)",
    "mutation": "async def {name}(ctx, **args)",
    "action": "async def {name}(ctx, **args)",
    "http_action": "async def {name}(ctx, request)",
}

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
            raise SchemaDefinitionError(_not_async_message(handler, kind))
        #: False for an action declared with plain ``def`` (run on its worker thread)
        self.is_async = is_async
        self.handler = handler
        self.kind = kind
        self.visibility = visibility
        self.is_public = visibility == "public"
        self.args = as_object_validator(args)
        if self.args is not None:
            _check_parameters(handler, kind, self.args.fields)
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
    function = Function(handler, "http_action", "internal", None, None)
    try:
        inspect.signature(handler).bind(None, None)
    except ValueError:  # a callable inspect cannot read: checked when called
        pass
    except TypeError:
        raise SchemaDefinitionError(
            f"{_declared('http_action', handler)} must take two parameters: "
            f"`{_SIGNATURES['http_action'].format(name=getattr(handler, '__name__', 'handler'))}`"
        ) from None
    return function


def _name(handler: Handler) -> str:
    return str(getattr(handler, "__qualname__", None) or getattr(handler, "__name__", handler))


def _where(handler: Handler) -> str:
    """``file.py:12``, where ``handler`` is defined (empty if unknown)."""
    code = getattr(inspect.unwrap(handler), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""


def _declared(kind: str, handler: Handler) -> str:
    """``query 'send' (…/messages.py:12)``: the function a declaration error is about."""
    place = _where(handler)
    kind_name = "HTTP action" if kind == "http_action" else kind
    return f"{kind_name} {_name(handler)!r}" + (f" ({place})" if place else "")


def _not_async_message(handler: Handler, kind: str) -> str:
    signature = _SIGNATURES[kind].format(name=getattr(handler, "__name__", "handler"))
    only = "" if kind == "http_action" else "; only actions may also be plain 'def' functions"
    return (
        f"{_declared(kind, handler)} must be declared with 'async def' "
        f"(handlers are coroutines: `{signature}`){only}"
    )


def _check_parameters(handler: Handler, kind: str, fields: Mapping[str, Validator]) -> None:
    """Check that the handler can be called as ``handler(ctx, **args)`` with the
    arguments ``args=`` allows: every field a parameter (or ``**kwargs``), an
    optional field's parameter with a default, every parameter without a
    default a field. Runs once, when the function is declared."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # a callable inspect cannot read: checked when called
        return
    what = _declared(kind, handler)
    P = inspect.Parameter
    positional = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD, P.VAR_POSITIONAL)
    if not params or params[0].kind not in positional:
        signature = _SIGNATURES[kind].format(name=getattr(handler, "__name__", "handler"))
        raise SchemaDefinitionError(f"{what} must take ctx as its first parameter: `{signature}`")
    rest = params[1:] if params[0].kind != P.VAR_POSITIONAL else params
    by_name = {p.name: p for p in rest if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    takes_any = any(p.kind == P.VAR_KEYWORD for p in rest)
    names = ", ".join(p.name for p in params) or "none"
    for param in rest:
        if param.kind == P.POSITIONAL_ONLY and param.default is P.empty:
            raise SchemaDefinitionError(
                f"{what}: the parameter {param.name!r} is positional-only, but arguments are "
                "passed by name: remove the '/'"
            )
    for field, validator in fields.items():
        if field not in by_name and not takes_any:
            raise SchemaDefinitionError(
                f"{what}: args= has the field {field!r}, but the handler has no parameter "
                f"{field!r} (its parameters: {names}); add the parameter, or take **args"
            )
        named = by_name.get(field)
        if named is not None and validator.is_optional and named.default is P.empty:
            raise SchemaDefinitionError(
                f"{what}: the field {field!r} is optional in args=, so a call may leave it "
                f"out, but the parameter {field!r} has no default; give it one "
                f"({field}=None)"
            )
    for param in rest:
        if (
            param.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)
            and param.default is P.empty
            and param.name not in fields
        ):
            raise SchemaDefinitionError(
                f"{what}: the parameter {param.name!r} is not a field of args= "
                f"(fields: {', '.join(fields) or 'none'}), so no call can give it; "
                "add it to args=, give it a default, or remove it"
            )
