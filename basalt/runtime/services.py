"""Optional services behind ``ctx.scheduler`` and ``ctx.storage``.

The runtime runs functions; the scheduler and file storage are services that
hand each function a context object bound to its transaction (mutations) or
to the runtime (actions). A runtime built without one gives functions a stand-in
that explains what is missing instead of an ``AttributeError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from basalt.errors import BasaltError

if TYPE_CHECKING:
    from .runtime import Runtime
    from .transaction import TxState


class ServiceUnavailable(BasaltError):
    code = "ServiceUnavailable"


class Unavailable:
    """Stands in for a service this runtime was not given."""

    __slots__ = ("_hint", "_what")

    def __init__(self, what: str, hint: str) -> None:
        self._what = what
        self._hint = hint

    def __getattr__(self, name: str) -> Any:
        raise ServiceUnavailable(f"ctx.{self._what}.{name} is not available here: {self._hint}")


class SchedulerService(Protocol):
    """Makes ``ctx.scheduler`` objects."""

    def for_mutation(self, state: TxState) -> Any:
        """A scheduler whose jobs are written in the mutation's transaction."""
        ...

    def for_action(self, runtime: Runtime) -> Any:
        """A scheduler whose jobs are written at once (each in its own transaction)."""
        ...


class FilesService(Protocol):
    """Makes ``ctx.storage`` objects."""

    def for_query(self, state: TxState) -> Any: ...

    def for_mutation(self, state: TxState) -> Any: ...

    def for_action(self, runtime: Runtime) -> Any: ...

    async def start(self, runtime: Runtime) -> None:
        """Called by ``Runtime.start`` once storage is open."""
        ...

    async def stop(self) -> None:
        """Called by ``Runtime.stop`` before storage closes."""
        ...


@dataclass
class Services:
    """The optional services of one runtime."""

    scheduler: SchedulerService | None = None
    files: FilesService | None = None

    def scheduler_for_mutation(self, state: TxState) -> Any:
        if self.scheduler is None:
            return Unavailable("scheduler", "this runtime has no scheduler")
        return self.scheduler.for_mutation(state)

    def scheduler_for_action(self, runtime: Runtime) -> Any:
        if self.scheduler is None:
            return Unavailable("scheduler", "this runtime has no scheduler")
        return self.scheduler.for_action(runtime)

    def storage_for(self, kind: str, state: TxState | None, runtime: Runtime) -> Any:
        if self.files is None:
            return Unavailable("storage", "this runtime has no file storage configured")
        if kind == "query":
            assert state is not None
            return self.files.for_query(state)
        if kind == "mutation":
            assert state is not None
            return self.files.for_mutation(state)
        return self.files.for_action(runtime)
