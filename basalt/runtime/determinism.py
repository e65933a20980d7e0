"""Determinism inside queries and mutations.

Queries and mutations must be deterministic (they are re-run for subscriptions
and retried on conflicts), so while one runs:

- ``time.time()`` and ``time.time_ns()`` return the time the function started;
- the module-level functions of :mod:`random` and ``uuid.uuid4()`` draw from a
  generator seeded per run;
- opening a network connection raises an error that says to use an action;
- ``time.sleep()`` raises an error too (it would hold the server's event loop,
  and every other request with it).

``datetime.now()`` cannot be intercepted (it is a C type): use ``time.time()``.
Outside such functions (actions, the server itself) everything behaves as
usual; the check is one context-variable lookup.
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from contextvars import ContextVar
from typing import Any, SupportsIndex

from basalt.errors import BasaltError


class Frozen:
    """The frozen clock and seeded generator of one function run (the
    generator is made on first use: most functions never draw)."""

    __slots__ = ("_rng", "kind", "seed", "time_ns")

    def __init__(self, time_ns: int, seed: int, kind: str) -> None:
        self.time_ns = time_ns
        self.seed = seed
        self.kind = kind
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng


current: ContextVar[Frozen | None] = ContextVar("basalt_deterministic", default=None)

_installed = False
_RANDOM_FUNCTIONS = (
    "random", "uniform", "randint", "randrange", "choice", "choices", "shuffle",
    "sample", "getrandbits", "randbytes", "gauss", "normalvariate", "triangular",
    "betavariate", "expovariate",
)  # fmt: skip


class NetworkNotAllowed(BasaltError):
    code = "NetworkNotAllowed"


class BlockingCallNotAllowed(BasaltError):
    code = "BlockingCallNotAllowed"


def install() -> None:
    """Patch the clock, random and socket entry points (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    real_time, real_time_ns = time.time, time.time_ns

    def frozen_time() -> float:
        f = current.get()
        return real_time() if f is None else f.time_ns / 1e9

    def frozen_time_ns() -> int:
        f = current.get()
        return real_time_ns() if f is None else f.time_ns

    time.time = frozen_time
    time.time_ns = frozen_time_ns

    real_sleep = time.sleep

    def sleep(seconds: float | SupportsIndex) -> None:
        f = current.get()
        if f is not None:
            raise BlockingCallNotAllowed(
                f"time.sleep() is not allowed in a {f.kind}: it would hold the server, and "
                "every other request with it. Schedule the rest for later with "
                "ctx.scheduler.run_after, or wait in an action."
            )
        real_sleep(seconds)

    time.sleep = sleep

    for name in _RANDOM_FUNCTIONS:
        original = getattr(random, name, None)
        if original is None:
            continue
        setattr(random, name, _seeded(name, original))

    real_uuid4 = uuid.uuid4

    def uuid4() -> uuid.UUID:
        f = current.get()
        if f is None:
            return real_uuid4()
        return uuid.UUID(int=f.rng.getrandbits(128), version=4)

    uuid.uuid4 = uuid4

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guard(what: str) -> None:
        f = current.get()
        if f is not None:
            raise NetworkNotAllowed(
                f"{what} is not allowed in a {f.kind}: queries and mutations must be "
                "deterministic. Call the network from an action (ctx.run_mutation "
                "can store the result)."
            )

    def connect(self: socket.socket, address: Any) -> None:
        guard("Opening a network connection")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard("Opening a network connection")
        return real_connect_ex(self, address)

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        guard("Resolving a host name")
        return real_getaddrinfo(*args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo


def _seeded(name: str, original: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        f = current.get()
        if f is None:
            return original(*args, **kwargs)
        return getattr(f.rng, name)(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = original.__doc__
    return call
