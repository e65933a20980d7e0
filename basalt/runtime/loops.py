"""Crossing between the server's event loop and an action worker's loop.

Storage, the scheduler and file storage belong to the server's loop (their
connections, locks and futures are bound to it). Code on a worker's loop
reaches them by running each call there (:func:`on_loop`); an async iterator
handed across is read where it was made (:func:`relay`). Handlers declared
with plain ``def`` get objects whose methods block until the server's loop has
answered (:class:`Blocking`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def on_loop(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` on ``loop`` (directly if that is the running loop)."""
    if asyncio.get_running_loop() is loop:
        return await awaitable
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_await(awaitable), loop))


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def run_blocking(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` on ``loop`` from another thread, blocking until it is done."""
    return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()


async def relay(source: AsyncIterable[T], loop: asyncio.AbstractEventLoop) -> AsyncIterator[T]:
    """The items of ``source``, which belongs to ``loop``, read from any loop.
    Closing this iterator closes ``source`` (on its loop)."""
    iterator = aiter(source)
    try:
        while True:
            try:
                item = await on_loop(loop, anext(iterator))
            except StopAsyncIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await on_loop(loop, close())


def _relayed_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], here: asyncio.AbstractEventLoop
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments with every async iterable made readable from another loop."""

    def fix(value: Any) -> Any:
        if isinstance(value, AsyncIterable):
            return relay(value, here)
        return value

    return tuple(fix(a) for a in args), {k: fix(v) for k, v in kwargs.items()}


class _View:
    """A view of ``target`` (a service object of the server's loop, such as
    ``ctx.storage``) whose ``async`` methods are called through :meth:`_call`."""

    __slots__ = ("_loop", "_target")

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        call = self._call(attr)
        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call

    def _call(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self._target)


class OnLoop(_View):
    """A view whose ``async`` methods run on ``loop`` when called from another loop."""

    __slots__ = ()

    def _call(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        loop = self._loop

        async def call(*args: Any, **kwargs: Any) -> Any:
            here = asyncio.get_running_loop()
            if here is not loop:
                args, kwargs = _relayed_args(args, kwargs, here)
            return await on_loop(loop, method(*args, **kwargs))

        return call


class Blocking(_View):
    """A view whose ``async`` methods are plain functions that block until
    ``loop`` has run them (for ``def`` action handlers)."""

    __slots__ = ()

    def _call(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        return blocking_function(self._loop, method)


def blocking_function(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., Awaitable[T]]
) -> Callable[..., T]:
    """``fn`` as a plain function that blocks until ``loop`` has run it."""

    def call(*args: Any, **kwargs: Any) -> T:
        return run_blocking(loop, fn(*args, **kwargs))

    return call
