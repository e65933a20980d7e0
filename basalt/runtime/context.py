"""The ``ctx`` objects handed to handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import misuse
from .db import DatabaseReader, DatabaseWriter

if TYPE_CHECKING:
    from .functions import Function
    from .runtime import Runtime
    from .transaction import TxState

FunctionRef = "Function | str"


class Auth:
    """``ctx.auth``: who is calling."""

    __slots__ = ("_identity", "was_read")

    def __init__(self, identity: dict[str, Any] | None) -> None:
        self._identity = identity
        self.was_read = False

    async def get_user_identity(self) -> dict[str, Any] | None:
        """The caller's identity (JWT claims plus ``tokenIdentifier``), or None."""
        self.was_read = True
        return None if self._identity is None else dict(self._identity)


class QueryCtx:
    """``ctx`` of a query: read-only database access, auth, and file URLs.
    ``ctx.storage`` is made on first use (most functions never touch it)."""

    __slots__ = ("_runtime", "_state", "_storage", "auth", "db")

    def __init__(self, db: DatabaseReader, auth: Auth, state: TxState, runtime: Runtime) -> None:
        self.db = db
        self.auth = auth
        self._state = state
        self._runtime = runtime
        self._storage: Any = None

    @property
    def storage(self) -> Any:
        if self._storage is None:
            self._storage = self._runtime.services.storage_for("query", self._state, self._runtime)
        return self._storage

    if not TYPE_CHECKING:  # a hint for what queries lack (type checkers see no __getattr__)

        def __getattr__(self, name: str) -> Any:
            raise misuse.no_attribute(self, name, misuse.QUERY_CTX)


class MutationCtx:
    """``ctx`` of a mutation: read-write database access, auth, the scheduler
    (jobs are part of the mutation's transaction) and file storage.
    ``ctx.scheduler`` and ``ctx.storage`` are made on first use."""

    __slots__ = ("_runtime", "_scheduler", "_state", "_storage", "auth", "db")

    def __init__(self, db: DatabaseWriter, auth: Auth, state: TxState, runtime: Runtime) -> None:
        self.db = db
        self.auth = auth
        self._state = state
        self._runtime = runtime
        self._scheduler: Any = None
        self._storage: Any = None

    @property
    def scheduler(self) -> Any:
        if self._scheduler is None:
            self._scheduler = self._runtime.services.scheduler_for_mutation(self._state)
        return self._scheduler

    @property
    def storage(self) -> Any:
        if self._storage is None:
            self._storage = self._runtime.services.storage_for(
                "mutation", self._state, self._runtime
            )
        return self._storage

    if not TYPE_CHECKING:  # a hint for what mutations lack (type checkers see no __getattr__)

        def __getattr__(self, name: str) -> Any:
            raise misuse.no_attribute(self, name, misuse.MUTATION_CTX)


Runner = Callable[[Any, dict[str, Any] | None], Awaitable[Any]]
SyncRunner = Callable[[Any, dict[str, Any] | None], Any]


class _ActionCtxBase:
    """What both kinds of action ``ctx`` hold: auth, the scheduler, file
    storage, and how to run other functions."""

    __slots__ = ("_run_action", "_run_mutation", "_run_query", "auth", "scheduler", "storage")

    def __init__(
        self,
        auth: Any,
        run_query: Any,
        run_mutation: Any,
        run_action: Any,
        scheduler: Any = None,
        storage: Any = None,
    ) -> None:
        self.auth = auth
        self._run_query = run_query
        self._run_mutation = run_mutation
        self._run_action = run_action
        self.scheduler = scheduler
        self.storage = storage

    if not TYPE_CHECKING:  # a hint for what actions lack (type checkers see no __getattr__)

        def __getattr__(self, name: str) -> Any:
            raise misuse.no_attribute(self, name, misuse.ACTION_CTX)


class ActionCtx(_ActionCtxBase):
    """``ctx`` of an action: no database, but it can run other functions, use
    the network and the real clock."""

    __slots__ = ()

    def __init__(
        self,
        auth: Auth,
        run_query: Runner,
        run_mutation: Runner,
        run_action: Runner,
        scheduler: Any = None,
        storage: Any = None,
    ) -> None:
        super().__init__(auth, run_query, run_mutation, run_action, scheduler, storage)

    async def run_query(self, fn: Function | str, args: dict[str, Any] | None = None) -> Any:
        """Run a query (public or internal) in its own read transaction."""
        return await self._run_query(fn, args)

    async def run_mutation(self, fn: Function | str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation (public or internal) in its own transaction."""
        return await self._run_mutation(fn, args)

    async def run_action(self, fn: Function | str, args: dict[str, Any] | None = None) -> Any:
        """Run another action."""
        return await self._run_action(fn, args)


class SyncActionCtx(_ActionCtxBase):
    """``ctx`` of an action declared with plain ``def``: the same as
    :class:`ActionCtx`, but every method returns its result directly (the
    action runs on a thread of its own, so waiting blocks only it)."""

    __slots__ = ()

    def __init__(
        self,
        auth: Any,
        run_query: SyncRunner,
        run_mutation: SyncRunner,
        run_action: SyncRunner,
        scheduler: Any = None,
        storage: Any = None,
    ) -> None:
        super().__init__(auth, run_query, run_mutation, run_action, scheduler, storage)

    def run_query(self, fn: Function | str, args: dict[str, Any] | None = None) -> Any:
        """Run a query (public or internal) in its own read transaction."""
        return self._run_query(fn, args)

    def run_mutation(self, fn: Function | str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation (public or internal) in its own transaction."""
        return self._run_mutation(fn, args)

    def run_action(self, fn: Function | str, args: dict[str, Any] | None = None) -> Any:
        """Run another action."""
        return self._run_action(fn, args)
