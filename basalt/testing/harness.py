"""The test harness: an app on the real runtime, a temporary database and a
clock that only moves when the test says so.

The database is the one ``BASALT_TEST_BACKEND`` selects (see
:mod:`basalt.testing.engines`): a SQLite file in the data folder by default, or
with ``BASALT_TEST_BACKEND=postgres`` a PostgreSQL schema of its own, dropped
when the harness exits. ``BasaltTest(app, storage=engine)`` uses a given engine
instead.

``query``, ``mutation`` and ``action`` pass their arguments and results through
the wire encoding, as the official Python client does: an ``int`` argument
arrives as a float64 number (use :class:`~basalt.Int64` for an int64), a plain
``int`` result comes back as a ``float`` and an int64 as an ``Int64``, and a
``ConvexError``'s data comes back decoded the same way. What a test sees is
what a client sees.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from basalt.errors import ConvexError, InvalidValue
from basalt.files import LocalBlobStore
from basalt.runtime import App, ManualClock, MutationCtx, Outcome, Runtime, load_app
from basalt.runtime.files import FileService
from basalt.runtime.functions import Function
from basalt.runtime.services import Services
from basalt.scheduler import Scheduler
from basalt.storage.base import Persistence
from basalt.storage.sqlite import SqliteEngine
from basalt.values.wire import dumps, loads

from .engines import drop_test_databases, engine_for_tests, selected_backend

T = TypeVar("T")

#: the name of the harness's own database (see :func:`engine_for_tests`)
_DATABASE = "basalt"


class BasaltTest:
    """An app running on a fresh temporary database.

    ``app`` is an app folder or an :class:`App`. Calls run as an admin, so
    internal functions are reachable; ``with_identity`` gives a view whose
    calls carry a user identity. ``clock`` is a :class:`ManualClock`.

    ``data_dir`` holds the file blobs and, with SQLite, the database
    (``basalt.sqlite3``); without it, a temporary folder is made and removed
    on exit.

    ``storage`` is the storage engine to run on (not yet opened: the harness
    opens it on entry and closes it on exit, and leaves its data alone).
    Without it, the engine is the one ``BASALT_TEST_BACKEND`` selects: SQLite
    in ``data_dir`` (the default), or a PostgreSQL schema of its own (named
    after ``data_dir``) that is dropped on exit, even when ``data_dir`` was
    given. To keep PostgreSQL data between two harnesses, pass ``storage``.
    """

    def __init__(
        self,
        app: str | Path | App,
        *,
        data_dir: str | Path | None = None,
        clock: ManualClock | None = None,
        identity: dict[str, Any] | None = None,
        storage: Persistence | None = None,
        _runtime: Runtime | None = None,
        _scheduler: Scheduler | None = None,
    ) -> None:
        self._app_source = app
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._own_dir = False
        self._storage = storage
        #: the PostgreSQL test database this harness made (dropped on exit)
        self._own_database = False
        self.clock = clock or ManualClock()
        #: the origin file URLs start with (nothing listens there in tests)
        self.origin = "http://127.0.0.1:3210"
        self.identity = identity
        self._runtime = _runtime
        self._scheduler = _scheduler

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("use `async with BasaltTest(...) as t:` (or the basalt fixture)")
        return self._scheduler

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("use `async with BasaltTest(...) as t:` (or the basalt fixture)")
        return self._runtime

    async def __aenter__(self) -> BasaltTest:
        app = self._app_source if isinstance(self._app_source, App) else load_app(self._app_source)
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="basalt-test-"))
            self._own_dir = True
        try:
            storage = self._storage
            if storage is None:
                storage = self._default_storage(self._data_dir)
            self._scheduler = Scheduler()
            files = FileService(LocalBlobStore(self._data_dir / "blobs"), origin=self.origin)
            self._runtime = Runtime(
                app,
                storage,
                clock=self.clock,
                services=Services(scheduler=self._scheduler, files=files),
            )
            await self._runtime.start()
            try:
                await self._scheduler.start(self._runtime)
            except BaseException:
                await self._runtime.stop()
                raise
        except BaseException:
            self._scheduler = self._runtime = None
            await self._clean_up()
            raise
        return self

    def _default_storage(self, data_dir: Path) -> Persistence:
        """The engine ``BASALT_TEST_BACKEND`` selects, for this data folder."""
        if selected_backend() == "sqlite":
            return SqliteEngine(data_dir / "basalt.sqlite3")
        engine = engine_for_tests(data_dir, _DATABASE, backend="postgres")
        self._own_database = True
        return engine

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._scheduler is not None:
                await self._scheduler.stop()
        finally:
            try:
                if self._runtime is not None:
                    await self._runtime.stop()
            finally:
                await self._clean_up()

    async def _clean_up(self) -> None:
        """Drop the database and remove the folder this harness made."""
        try:
            if self._own_database and self._data_dir is not None:
                self._own_database = False
                await drop_test_databases(self._data_dir, _DATABASE)
        finally:
            if self._own_dir and self._data_dir is not None:
                shutil.rmtree(self._data_dir, ignore_errors=True)
                self._data_dir, self._own_dir = None, False

    def with_identity(self, identity: dict[str, Any]) -> BasaltTest:
        """A view of the same app whose calls carry ``identity`` (JWT-like claims;
        ``tokenIdentifier`` is filled in from ``issuer`` and ``subject``)."""
        identity = dict(identity)
        identity.setdefault("issuer", "https://test.basalt")
        identity.setdefault("subject", identity.get("tokenIdentifier", "test-user"))
        identity.setdefault("tokenIdentifier", f"{identity['issuer']}|{identity['subject']}")
        return BasaltTest(
            self._app_source, clock=self.clock, identity=identity, _runtime=self.runtime
        )

    async def query(self, fn: Function | str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a query (internal ones too) and return its value as a client receives
        it (see the module docstring); raises its error."""
        return await self._call("query", fn, args)

    async def mutation(self, fn: Function | str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a mutation; its value as a client receives it, or its error."""
        return await self._call("mutation", fn, args)

    async def action(self, fn: Function | str, args: Mapping[str, Any] | None = None) -> Any:
        """Run an action; its value as a client receives it, or its error."""
        return await self._call("action", fn, args)

    async def _call(
        self, kind: Literal["query", "mutation", "action"], fn: Function | str, args: Any
    ) -> Any:
        if args is not None:
            args = through_the_wire(dict(args))
        outcome = await self.runtime.call(fn, args, kind=kind, identity=self.identity, admin=True)
        return received(outcome)

    async def finish_scheduled(self) -> int:
        """Run every scheduled function due at the clock's time; returns how many ran."""
        return await self.scheduler.run_due()

    async def advance(self, seconds: float) -> int:
        """Move the clock forward and run what became due (crons included)."""
        self.clock.advance(seconds)
        return await self.scheduler.run_due()

    async def finish_all_scheduled(self) -> int:
        """Run scheduled functions, moving the clock as needed, until none is left."""
        return await self.scheduler.run_all()

    async def run(self, handler: Callable[[MutationCtx], Awaitable[T]]) -> T:
        """Run ``handler(ctx)`` as a one-off mutation (to set up or inspect data)."""
        result: T = await self.runtime.run_handler(handler, identity=self.identity)
        return result


def through_the_wire(value: Any) -> Any:
    """``value`` as it is after a trip through ``convex_encoded_json``: a plain
    ``int`` becomes a ``float``, an int64 an ``Int64`` (raises ``InvalidValue``
    for what cannot be sent, such as an int beyond ±2**53)."""
    return loads(dumps(value))


def received(outcome: Outcome) -> Any:
    """A call's value as a client receives it, or raise its error (a
    ``ConvexError`` with its data as a client receives it)."""
    error = outcome.error
    if error is not None:
        if isinstance(error, ConvexError):
            # (data that cannot be sent stays as it is: the server sends its repr())
            with contextlib.suppress(InvalidValue):
                error.data = through_the_wire(error.data)
        raise error
    return through_the_wire(outcome.value)
