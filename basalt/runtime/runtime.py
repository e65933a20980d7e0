"""The runtime: runs an app's functions against a storage engine.

One :class:`Runtime` owns its storage for the span of ``async with``; two
runtimes can live in one process. Queries run in a read transaction at one
snapshot; mutations in a write transaction that commits only if the handler
returns (any exception rolls back everything) and is retried transparently on a
write conflict; actions run outside any transaction, off the server's event
loop (:mod:`basalt.runtime.action_workers`), and can call the others.

Queries and mutations hold the event loop while their code runs, so each has
a time budget (:attr:`Limits.max_seconds`, enforced by
:mod:`basalt.runtime.watchdog`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping
from types import CodeType
from typing import Any, Literal, TypeVar

from basalt.errors import (
    ArgumentValidationError,
    BasaltError,
    FunctionNotFound,
    InvalidValue,
    LimitExceeded,
    ReturnsValidationError,
    ValidationError,
    WriteConflict,
)
from basalt.storage.base import Persistence, ReadTransaction
from basalt.values.model import check_value

from . import determinism, logs, watchdog
from .action_workers import ActionWorkers
from .app import App, canonical_path
from .clock import Clock, CreationTimes
from .conflicts import MAX_CONFLICT_RETRIES, conflict_backoff, retry_conflicts
from .context import ActionCtx, Auth, MutationCtx, QueryCtx, SyncActionCtx
from .db import DatabaseReader, DatabaseWriter
from .functions import Function
from .loops import Blocking, OnLoop, blocking_function, on_loop
from .outcome import Outcome
from .schema_apply import apply_schema
from .services import Services
from .transaction import Limits, TxState, WriteNotAwaited

CallKind = Literal["query", "mutation", "action"]

T = TypeVar("T")
#: How many later commits ``query_at`` inspects before it gives up on a timestamp.
SNAPSHOT_CHECK_LIMIT = 10_000
#: Arguments encoded in more bytes than this are checked on a worker thread.
LARGE_ARGS_BYTES = 256 << 10


class SnapshotUnavailable(BasaltError):
    """A query asked for a past timestamp whose data has changed since."""

    code = "SnapshotUnavailable"


class Runtime:
    """Runs functions of ``app`` on ``storage``."""

    def __init__(
        self,
        app: App,
        storage: Persistence,
        *,
        clock: Clock | None = None,
        limits: Limits | None = None,
        services: Services | None = None,
        actions: ActionWorkers | None = None,
    ) -> None:
        self.app = app
        self.storage = storage
        self.clock = clock or Clock()
        self.limits = limits or Limits()
        self.creation_times = CreationTimes(self.clock)
        #: the scheduler and file storage behind ctx.scheduler / ctx.storage
        self.services = services or Services()
        self.conflict_retries = 0
        #: where actions run (off the event loop of queries and mutations)
        self.actions = actions or ActionWorkers()
        self.actions.describe = watchdog.describe_with(self._handler_codes)
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: watchdog.LoopWatch | None = None
        self._slot = watchdog.current_slot()
        self._codes: tuple[App, dict[CodeType, str]] | None = None
        self._decoder: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        determinism.install()
        logs.install()
        await self.storage.open()
        try:
            await apply_schema(self.storage, self.app.schema)
            if self.services.files is not None:
                await self.services.files.start(self)
        except BaseException:
            await self.storage.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._slot = watchdog.current_slot()
        self._watch = watchdog.watch_loop(
            self._loop,
            watchdog.describe_with(self._handler_codes),
            name="the server's event loop",
            advice="no other request is served meanwhile",
        )
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            if self._watch is not None:
                self._watch.stop()
                self._watch = None
            if self._decoder is not None:
                self._decoder.shutdown(wait=False)
                self._decoder = None
            try:
                await self.actions.close()
                if self.services.files is not None:
                    await self.services.files.stop()
            finally:
                await self.storage.close()

    async def off_loop(self, work: Callable[[], T]) -> T:
        """Run CPU-bound ``work()`` (decoding and checking large arguments) on
        this runtime's one decoding thread, so that the event loop keeps serving:
        a single thread leaves the loop at least every other turn of the GIL."""
        if self._decoder is None:
            self._decoder = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="basalt-decode"
            )
        return await asyncio.get_running_loop().run_in_executor(self._decoder, work)

    def _handler_codes(self) -> dict[CodeType, str]:
        """The code objects of the app's handlers (HTTP routes included), by
        function name, for naming what blocks an event loop."""
        app = self.app
        if self._codes is None or self._codes[0] is not app:
            codes: dict[CodeType, str] = {}
            named: list[tuple[str, Any]] = list(app.functions.items())
            if app.http is not None and hasattr(app.http, "routes"):
                named += [(route.label, route.handler) for route in app.http.routes()]
            for name, function in named:
                code = getattr(getattr(function, "handler", None), "__code__", None)
                if isinstance(code, CodeType):
                    codes[code] = name
            self._codes = (app, codes)
        return self._codes[1]

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def reload(self, app: App) -> None:
        """Switch to a newly loaded app (applying its schema first)."""
        await apply_schema(self.storage, app.schema)
        self.app = app

    # -- calling -------------------------------------------------------------
    def resolve(self, fn: Function | str, *, admin: bool) -> Function:
        """The function for a reference; internal ones only for ``admin``."""
        path = fn if isinstance(fn, str) else fn.path
        if path is None:
            raise FunctionNotFound(
                f"{fn!r} is not part of the loaded app (define it at the top level of a module "
                "in the app folder)"
            )
        try:
            found = self.app.function(path)
        except FunctionNotFound as exc:
            if admin:
                raise
            raise _not_public(path, exc.detail) from None
        if not found.is_public and not admin:
            # Worded exactly as for a missing function: a caller without the
            # admin key cannot tell which internal functions exist.
            raise _not_public(
                path, "(it is an internal function: call it from another function or as admin)"
            )
        return found

    async def call(
        self,
        fn: Function | str,
        args: Mapping[str, Any] | None = None,
        *,
        kind: CallKind | None = None,
        identity: dict[str, Any] | None = None,
        admin: bool = False,
        args_size: int = 0,
    ) -> Outcome:
        """Run a function and report its :class:`Outcome` (never raises for
        errors of the function itself). ``kind`` asserts what the caller
        expects, as the HTTP API's ``/api/query`` does. ``args_size`` is the
        encoded size of ``args`` when the caller knows it: large arguments are
        checked on a worker thread, so that the event loop serves others meanwhile."""
        lines: list[str] = []
        try:
            if args_size > LARGE_ARGS_BYTES:
                function, call_args = await self.off_loop(
                    lambda: self.prepare(fn, args, kind=kind, admin=admin)
                )
            else:
                function, call_args = self.prepare(fn, args, kind=kind, admin=admin)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            return Outcome(error=exc, log_lines=lines, rejected=True)
        if function.kind == "query":
            return await self._run_query(function, call_args, identity)
        if function.kind == "mutation":
            return await self._run_mutation(function, call_args, identity)
        return await self._run_action(function, call_args, identity)

    async def query_at(
        self,
        fn: Function | str,
        args: Mapping[str, Any] | None,
        ts: int,
        *,
        identity: dict[str, Any] | None = None,
        admin: bool = False,
    ) -> Outcome:
        """Run a query as of commit timestamp ``ts``.

        Storage keeps the current version of each document, so the query runs
        at the newest snapshot and the commit log then proves the answer is the
        one at ``ts``: if a commit after ``ts`` wrote into what the query read,
        the outcome is a :class:`SnapshotUnavailable` error instead.
        """
        outcome = await self.call(fn, args, kind="query", identity=identity, admin=admin)
        if outcome.error is not None or outcome.ts is None or outcome.ts <= ts:
            return outcome
        read_set = outcome.read_set
        commits = await self.storage.commits_since(ts, limit=SNAPSHOT_CHECK_LIMIT + 1)
        changed = len(commits) > SNAPSHOT_CHECK_LIMIT or any(
            commit.ts <= outcome.ts and read_set is not None and read_set.overlaps(commit)
            for commit in commits
        )
        if changed:
            outcome.value = None
            outcome.rejected = True  # about the timestamp the caller asked for
            outcome.error = SnapshotUnavailable(
                f"The data this query reads changed after timestamp {ts}, and Basalt keeps only "
                "the current version of documents: ask for a new timestamp (query_ts) and retry"
            )
        return outcome

    async def query(
        self, fn: Function | str, args: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        """Run a query and return its value (raising its error)."""
        return (await self.call(fn, args, kind="query", admin=True, **kw)).unwrap()

    async def mutation(
        self, fn: Function | str, args: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        """Run a mutation and return its value (raising its error)."""
        return (await self.call(fn, args, kind="mutation", admin=True, **kw)).unwrap()

    async def action(
        self, fn: Function | str, args: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        """Run an action and return its value (raising its error)."""
        return (await self.call(fn, args, kind="action", admin=True, **kw)).unwrap()

    async def run_handler(
        self,
        handler: Callable[[MutationCtx], Awaitable[Any]],
        *,
        identity: dict[str, Any] | None = None,
    ) -> Any:
        """Run ``handler(ctx)`` as a one-off mutation and return its value (tests,
        seeding, maintenance)."""

        async def run(ctx: MutationCtx) -> Any:
            return await handler(ctx)

        function = Function(run, "mutation", "internal", None, None)
        function.path = f"<handler {getattr(handler, '__qualname__', handler)}>"
        outcome = await self._run_mutation(function, {}, identity, limited=False)
        return outcome.unwrap()

    # -- internals -----------------------------------------------------------
    def _check_args(self, function: Function, args: Mapping[str, Any] | None) -> dict[str, Any]:
        if args is None:
            args = {}
        if type(args) is not dict:
            if not isinstance(args, Mapping):
                raise ArgumentValidationError(
                    f"The arguments to {function.path} must be an object, got {type(args).__name__}"
                )
            args = dict(args)
        checked: dict[str, Any] = dict(args) if type(args) is not dict else args
        try:
            check_value(checked, what=f"arguments of {function.path}")
        except InvalidValue as exc:
            raise ArgumentValidationError(exc.message) from None
        validator = function.args
        if validator is not None:
            try:
                checked = validator.validate(checked, error=ArgumentValidationError)
            except ValidationError as exc:
                raise ArgumentValidationError(
                    f"Invalid arguments for {function.path}: {exc.message}"
                ) from None
        return checked

    def _check_result(self, function: Function, value: Any) -> Any:
        if function.returns is not None:
            try:
                value = function.returns.validate(value, error=ReturnsValidationError)
            except ValidationError as exc:
                raise ReturnsValidationError(
                    f"{function.path} returned a value that does not match its returns "
                    f"validator: {exc.message}"
                ) from None
        try:
            check_value(value, what=f"return value of {function.path}")
        except InvalidValue as exc:
            raise InvalidValue(exc.message) from None
        return value

    async def _run_query(
        self, function: Function, args: dict[str, Any], identity: dict[str, Any] | None
    ) -> Outcome:
        try:
            return await self.read(lambda tx: self.run_query_in(tx, function, args, identity))
        except WriteConflict:
            return Outcome(error=_given_up(function), log_lines=[])

    async def read(self, body: Callable[[ReadTransaction], Awaitable[T]]) -> T:
        """``body(tx)`` in a read transaction, run again if the engine refuses
        the snapshot (PostgreSQL can cancel a serializable reader rather than let
        it see a state no serial order explains); raises WriteConflict after
        ``MAX_CONFLICT_RETRIES`` retries."""

        async def once() -> T:
            async with self.storage.read() as tx:
                return await body(tx)

        return await retry_conflicts(once, on_conflict=self.note_conflict)

    def note_conflict(self) -> None:
        """A transaction of this runtime lost a conflict and is run again."""
        self.conflict_retries += 1

    async def run_query_in(
        self,
        tx: ReadTransaction,
        function: Function,
        args: dict[str, Any],
        identity: dict[str, Any] | None,
    ) -> Outcome:
        """Run a query (already resolved, arguments already checked) inside a read
        transaction the caller holds, so that several queries see one snapshot."""
        lines: list[str] = []
        outcome = Outcome(log_lines=lines)
        state = TxState(
            tx, schema=self.app.schema, limits=self.limits, creation_times=self.creation_times
        )
        auth = Auth(identity)
        ctx = QueryCtx(DatabaseReader(state), auth, state, self)
        outcome.ts = tx.ts
        outcome.read_set = state.read_set
        frozen = determinism.Frozen(self.clock.time_ns(), tx.ts, "query")
        await self._invoke(function, ctx, args, outcome, frozen)
        outcome.read_auth = auth.was_read
        return outcome

    def prepare(
        self,
        fn: Function | str,
        args: Mapping[str, Any] | None,
        *,
        kind: CallKind | None = None,
        admin: bool = False,
    ) -> tuple[Function, dict[str, Any]]:
        """Resolve a function and check its arguments, as :meth:`call` does first;
        raises the error a caller would get."""
        function = self.resolve(fn, admin=admin)
        if kind is not None and function.kind != kind:
            raise FunctionNotFound(
                f"Trying to execute {function.path} as {kind.capitalize()}, but it is "
                f"defined as {function.kind.capitalize()}."
            )
        return function, self._check_args(function, args)

    async def run_mutation_with(
        self,
        fn: Function | str,
        args: Mapping[str, Any] | None,
        *,
        identity: dict[str, Any] | None = None,
        before_commit: Callable[[DatabaseWriter], Awaitable[None]] | None = None,
    ) -> Outcome:
        """Run a mutation (public or internal) and, if it succeeds, ``before_commit``
        in the same transaction with a ``ctx.db`` that may write system tables —
        so Basalt's own bookkeeping (a scheduled job marked done) commits
        atomically with the mutation's writes, or not at all."""
        try:
            function, call_args = self.prepare(fn, args, kind="mutation", admin=True)
        except Exception as exc:
            return Outcome(error=exc, rejected=True)
        return await self._run_mutation(function, call_args, identity, before_commit)

    async def run_system(self, handler: Callable[[DatabaseWriter], Awaitable[Any]]) -> Any:
        """Run ``handler(db)`` as Basalt's own transaction, allowed to write system
        tables; returns its value (raising its error)."""

        async def run(ctx: MutationCtx) -> Any:
            return await handler(ctx.db)

        function = Function(run, "mutation", "internal", None, None)
        function.path = "<system>"
        outcome = await self._run_mutation(function, {}, None, system=True, limited=False)
        return outcome.unwrap()

    async def _run_mutation(
        self,
        function: Function,
        args: dict[str, Any],
        identity: dict[str, Any] | None,
        before_commit: Callable[[DatabaseWriter], Awaitable[None]] | None = None,
        *,
        system: bool = False,
        limited: bool = True,
    ) -> Outcome:
        attempt = 0
        while True:
            lines: list[str] = []
            outcome = Outcome(log_lines=lines)
            try:
                async with self.storage.write() as tx:
                    state = TxState(
                        tx,
                        schema=self.app.schema,
                        limits=self.limits,
                        creation_times=self.creation_times,
                        system=system,
                    )
                    ctx = MutationCtx(DatabaseWriter(state), Auth(identity), state, self)
                    now = self.clock.time_ns()
                    frozen = determinism.Frozen(now, now, "mutation")
                    await self._invoke(function, ctx, args, outcome, frozen, limited=limited)
                    if outcome.error is None and state.writes is not None:
                        missed = state.unawaited()
                        if missed:
                            outcome.error = _not_awaited(function, missed)
                    if outcome.error is None and before_commit is not None:
                        system_state = TxState(
                            tx,
                            schema=self.app.schema,
                            limits=self.limits,
                            creation_times=self.creation_times,
                            system=True,
                        )
                        try:
                            await before_commit(DatabaseWriter(system_state))
                        except Exception as exc:
                            outcome.error = exc
                    if outcome.error is None:
                        outcome.ts = await tx.commit()
                return outcome
            except WriteConflict:
                attempt += 1
                self.note_conflict()
                if attempt > MAX_CONFLICT_RETRIES:
                    outcome.error = _given_up(function)
                    return outcome
                await conflict_backoff(attempt)

    def action_ctx(self, identity: dict[str, Any] | None, lines: list[str]) -> ActionCtx:
        """The ``ctx`` of an action (or HTTP action) run for ``identity`` on a
        worker's loop: what it asks of the deployment runs on the server's loop.
        The log lines of the functions it calls are appended to ``lines``."""
        loop = self._server_loop()
        run = self._action_runner(identity, lines)
        return ActionCtx(
            Auth(identity),
            lambda fn, a: on_loop(loop, run("query", fn, a)),
            lambda fn, a: on_loop(loop, run("mutation", fn, a)),
            lambda fn, a: on_loop(loop, run("action", fn, a)),
            OnLoop(self.services.scheduler_for_action(self), loop),
            OnLoop(self.services.storage_for("action", None, self), loop),
        )

    def sync_action_ctx(self, identity: dict[str, Any] | None, lines: list[str]) -> SyncActionCtx:
        """The ``ctx`` of an action declared with plain ``def``: like
        :meth:`action_ctx`, with methods that block until they are answered."""
        loop = self._server_loop()
        run = self._action_runner(identity, lines)
        return SyncActionCtx(
            Blocking(Auth(identity), loop),
            blocking_function(loop, lambda fn, a: run("query", fn, a)),
            blocking_function(loop, lambda fn, a: run("mutation", fn, a)),
            blocking_function(loop, lambda fn, a: run("action", fn, a)),
            Blocking(self.services.scheduler_for_action(self), loop),
            Blocking(self.services.storage_for("action", None, self), loop),
        )

    def _server_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the runtime is not started (use `async with Runtime(...)`)")
        return self._loop

    def _action_runner(
        self, identity: dict[str, Any] | None, lines: list[str]
    ) -> Callable[[CallKind, Function | str, dict[str, Any] | None], Awaitable[Any]]:
        """Runs a function for an action (on the server's loop); an action it
        starts is nested, so it never waits for a free worker."""

        async def run(kind: CallKind, fn: Function | str, fn_args: dict[str, Any] | None) -> Any:
            if kind == "action":
                function, call_args = self.prepare(fn, fn_args, kind="action", admin=True)
                inner = await self._run_action(function, call_args, identity, nested=True)
            else:
                inner = await self.call(fn, fn_args, kind=kind, identity=identity, admin=True)
            lines.extend(inner.log_lines)
            return inner.unwrap()

        return run

    async def _run_action(
        self,
        function: Function,
        args: dict[str, Any],
        identity: dict[str, Any] | None,
        *,
        nested: bool = False,
    ) -> Outcome:
        """Run an action off the server's loop: an ``async def`` one on the
        action loop, a ``def`` one on a thread of its own."""
        lines: list[str] = []
        outcome = Outcome(log_lines=lines)
        if function.is_async:
            ctx = self.action_ctx(identity, lines)
            await self.actions.run(lambda: self._invoke(function, ctx, args, outcome, None))
        else:
            sync_ctx = self.sync_action_ctx(identity, lines)
            await self.actions.run_in_thread(
                lambda: self._invoke_sync(function, sync_ctx, args, outcome), nested=nested
            )
        return outcome

    def _invoke_sync(
        self, function: Function, ctx: SyncActionCtx, args: dict[str, Any], outcome: Outcome
    ) -> None:
        """Run a ``def`` action's handler (on its thread), as :meth:`_invoke` does."""
        log = logs.FunctionLog(function.path or "?", outcome.log_lines)
        token = logs.current.set(log)
        try:
            outcome.value = self._check_result(function, function.handler(ctx, **args))
        except Exception as exc:
            outcome.error = exc
        finally:
            logs.current.reset(token)
            if log.partial:
                logs.finish(log)

    async def _invoke(
        self,
        function: Function,
        ctx: Any,
        args: dict[str, Any],
        outcome: Outcome,
        frozen: determinism.Frozen | None,
        *,
        limited: bool = True,
    ) -> None:
        """Run a handler with its log lines captured (and, for queries and
        mutations, the frozen clock, seeded random and time budget); its value or
        error go into ``outcome``."""
        d_token = determinism.current.set(frozen) if frozen is not None else None
        log = logs.FunctionLog(function.path or "?", outcome.log_lines)
        l_token = logs.current.set(log)
        budget = self.limits.max_seconds if frozen is not None and limited else None
        try:
            if budget is None:
                value = await function.handler(ctx, **args)
            else:
                # The watchdog charges the run while it executes (see watchdog.py).
                coro = function.handler(ctx, **args)
                slot = self._slot
                slot.runs[coro] = budget
                try:
                    value = await coro
                finally:
                    del slot.runs[coro]
                if slot.used and slot.used.pop(coro, 0.0) > budget:
                    raise watchdog.TimeLimitSignal  # also when the function swallowed it
            outcome.value = self._check_result(function, value)
        except Exception as exc:
            outcome.error = exc
        except watchdog.TimeLimitSignal:
            outcome.error = _timed_out(function, budget)
        finally:
            if d_token is not None:
                determinism.current.reset(d_token)
            logs.current.reset(l_token)
            if log.partial:
                logs.finish(log)


def _timed_out(function: Function, budget: float | None) -> LimitExceeded:
    return LimitExceeded(
        f"{function.path} timed out: a query or mutation may run its code for at most "
        f"{budget:g} s (it holds the server meanwhile). Move long work to an action, or split "
        "it across several mutations (ctx.scheduler)",
        code="FunctionTimeout",
    )


def _not_awaited(function: Function, missed: list[str]) -> WriteNotAwaited:
    calls = ", ".join(f"{name}(...)" for name in dict.fromkeys(missed))
    return WriteNotAwaited(
        f"{function.path} called {calls} without `await`, so the write would not have "
        f"happened; nothing was written. Write `await {missed[0]}(...)`"
    )


def _not_public(path: str, detail: str | None) -> FunctionNotFound:
    """What a caller without the admin key is told of a function it cannot call;
    ``detail`` only reaches callers who see everything (``basalt dev``)."""
    return FunctionNotFound(
        f"Could not find public function for '{canonical_path(path)}'. "
        "Did you forget to define it in the app folder?",
        detail=detail,
    )


def _given_up(function: Function) -> BasaltError:
    return BasaltError(
        f"{function.path} kept conflicting with other writes and was given up "
        f"after {MAX_CONFLICT_RETRIES} retries",
        code="OptimisticConcurrencyControlFailure",
    )
