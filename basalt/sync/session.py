"""One client connection of the sync protocol, independent of the transport.

The session keeps the versions the protocol chains (query set, identity,
timestamp), the client's queries, and what it has sent. It never blocks on the
network: outgoing messages go to a ``send`` callback that only enqueues. What
a connection may hold (queries, requests in flight) is bounded by its
:class:`~basalt.sync.limits.SessionLimits`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from basalt.errors import BasaltError, Unauthenticated
from basalt.runtime.outcome import Failure, Outcome, request_id, reveals
from basalt.values.wire import to_convex_json

from . import messages as m
from .entry import QueryEntry, _encoded_error_data, identity_key, query_args_key
from .hub import SyncHub
from .limits import SessionLimits
from .remembered import Answer, mutation_key

log = logging.getLogger("basalt.sync")

#: Frames larger than this are decoded on the runtime's decoding thread.
LARGE_FRAME_BYTES = 256 << 10


class TokenVerifier(Protocol):
    """What the session needs from the server's authenticator."""

    def is_admin_key(self, key: str) -> bool: ...

    async def verify_user_token(self, token: str) -> dict[str, Any]: ...


@dataclass(slots=True)
class _Query:
    path: str
    args: dict[str, Any]
    journal: str | None
    entry: QueryEntry
    #: what the query counts against the connection's query-set bytes
    size: int
    sent_version: int = -1
    #: the result hash of what the client has (None: nothing yet)
    sent_hash: bytes | None = None


class SyncSession:
    """The server side of one sync connection."""

    def __init__(
        self,
        hub: SyncHub,
        verifier: TokenVerifier,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        limits: SessionLimits | None = None,
    ) -> None:
        self.hub = hub
        self.limits = limits or SessionLimits()
        self.runtime = hub.runtime
        self.verifier = verifier
        self._send = send
        self._close = close
        self.session_id: str | None = None
        self.query_set_version = 0
        self.identity_version = 0
        self.identity: dict[str, Any] | None = None
        self.admin = False
        self.identity_key = ""
        self.queries: dict[int, _Query] = {}
        #: bytes of the queries' arguments, journals and paths (see SessionLimits)
        self.query_set_bytes = 0
        #: bytes of the queries' results (each query's entry's; kept by the hub)
        self.result_bytes = 0
        #: when the hub last gave this session a turn (see SyncHub._in_turns)
        self.served = 0
        #: removed query ids the client has not been told about (an ordered set)
        self._removed: dict[int, None] = {}
        self._sent: tuple[int, int, int] = (0, 0, 0)
        #: the client waits for a Transition (after a query set or auth change, or
        #: after the response to one of its mutations or actions)
        self._needs_transition = False
        #: the client waits for a Transition at or after this commit (its mutation's)
        self._await_ts: int | None = None
        self._closed = False
        self._mutation_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        #: bytes of the messages of the requests in ``_tasks``
        self._request_bytes = 0
        self._request_done = asyncio.Event()
        hub.sessions.add(self)

    # -- incoming ------------------------------------------------------------
    async def handle(self, text: str | bytes) -> None:
        """Handle one client frame; :class:`~basalt.sync.messages.ProtocolError`
        means the connection must end with a FatalError."""
        if len(text) > LARGE_FRAME_BYTES:  # decoded off the loop: it serves others meanwhile
            msg = await self.runtime.off_loop(lambda: m.parse(text))
        else:
            msg = m.parse(text)
        if isinstance(msg, m.Connect):
            await self._connect(msg)
        elif isinstance(msg, m.ModifyQuerySet):
            self._modify(msg)
        elif isinstance(msg, m.FunctionRequest):
            size = len(text)
            if self._tasks and not self._admits(size):
                await self._admission(size)
            # It runs as the caller the client was when it sent it, whatever
            # Authenticate follows while it waits for earlier mutations.
            task = asyncio.get_running_loop().create_task(
                self._run_function(msg, self.identity, self.admin)
            )
            self._tasks.add(task)
            self._request_bytes += size
            task.add_done_callback(partial(self._request_finished, size))
        elif isinstance(msg, m.Authenticate):
            await self._authenticate(msg)
        # Event messages carry client telemetry: nothing to do.

    async def _connect(self, msg: m.Connect) -> None:
        self.session_id = msg.session_id
        latest = max(self.hub.ts, await self.runtime.storage.latest_ts())
        if msg.max_observed_ts is not None and msg.max_observed_ts > latest:
            raise m.ProtocolError(  # without the numbers: they tell the write activity
                "Connect.maxObservedTimestamp is newer than this server's latest timestamp: "
                "the client saw data this server does not have (was the data folder or "
                "database replaced, or restored from an older backup?)"
            )

    def _admits(self, size: int) -> bool:
        limits = self.limits
        return (
            len(self._tasks) < limits.max_requests
            and self._request_bytes + size <= limits.max_request_bytes
        )

    async def _admission(self, size: int) -> None:
        """Wait until a request of ``size`` bytes fits in the connection's limits
        (or none is in flight): the client's next messages wait meanwhile."""
        while self._tasks and not self._admits(size):
            self._request_done.clear()
            await self._request_done.wait()

    def _request_finished(self, size: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._request_bytes -= size
        self._request_done.set()

    def _modify(self, msg: m.ModifyQuerySet) -> None:
        if msg.base_version != self.query_set_version:
            raise m.ProtocolError(
                f"BaseVersionMismatch: ModifyQuerySet.baseVersion is {msg.base_version}, "
                f"but the query set is at version {self.query_set_version}"
            )
        if msg.new_version <= msg.base_version:
            raise m.ProtocolError(
                f"ModifyQuerySet.newVersion ({msg.new_version}) must be greater than "
                f"baseVersion ({msg.base_version})"
            )
        # Check the whole message before applying any of it.
        limits = self.limits
        present = set(self.queries)
        total = self.query_set_bytes
        new_sizes: dict[int, int] = {}  # the sizes of the queries this message adds
        added: list[tuple[str, int]] = []  # each Add's arguments key and size
        for i, mod in enumerate(msg.modifications):
            if isinstance(mod, m.AddQuery):
                if mod.query_id in present:
                    raise m.ProtocolError(
                        f"ModifyQuerySet.modifications[{i}]: query {mod.query_id} is already "
                        "in the query set"
                    )
                present.add(mod.query_id)
                if len(present) > limits.max_queries:
                    raise m.ProtocolError(
                        f"ModifyQuerySet.modifications[{i}]: adding query {mod.query_id} would "
                        f"make the query set hold {len(present)} queries, over the limit of "
                        f"{limits.max_queries} queries per connection"
                    )
                key = query_args_key(mod.args)
                size = len(key) + len(mod.udf_path) + len(mod.journal or "")
                added.append((key, size))
                new_sizes[mod.query_id] = size
                total += size
                if total > limits.max_query_set_bytes:
                    raise m.ProtocolError(
                        f"ModifyQuerySet.modifications[{i}]: adding query {mod.query_id} "
                        f"({size} bytes of arguments, journal and path) would make the query "
                        f"set {total} bytes, over the limit of {limits.max_query_set_bytes} "
                        "bytes per connection"
                    )
            else:
                if mod.query_id not in present:
                    raise m.ProtocolError(
                        f"ModifyQuerySet.modifications[{i}]: query {mod.query_id} is not in "
                        "the query set"
                    )
                present.discard(mod.query_id)
                if mod.query_id in new_sizes:
                    total -= new_sizes.pop(mod.query_id)
                else:
                    total -= self.queries[mod.query_id].size
        adds = iter(added)
        for mod in msg.modifications:
            if isinstance(mod, m.AddQuery):
                key, size = next(adds)
                entry = self.hub.subscribe(
                    self, mod.query_id, mod.udf_path, mod.args, self.identity, self.admin, key
                )
                self.queries[mod.query_id] = _Query(
                    mod.udf_path, mod.args, mod.journal, entry, size
                )
                self.query_set_bytes += size
                self._removed.pop(mod.query_id, None)
            else:
                query = self.queries.pop(mod.query_id)
                self.query_set_bytes -= query.size
                self.hub.unsubscribe(self, mod.query_id, query.entry)
                self._removed[mod.query_id] = None
        self.query_set_version = msg.new_version
        self._needs_transition = True
        self.hub.request_flush(self)

    async def _authenticate(self, msg: m.Authenticate) -> None:
        if msg.base_version != self.identity_version:
            raise m.ProtocolError(
                f"Authenticate.baseVersion is {msg.base_version}, but the identity is at "
                f"version {self.identity_version}"
            )
        try:
            identity, admin = await self._identity_for(msg)
        except Unauthenticated as exc:
            self._send(m.auth_error(exc.message, self.identity_version))
            self._close()
            return
        saw_everything = self.sees_everything
        self.identity, self.admin = identity, admin
        self.identity_key = identity_key(identity, admin)
        self.identity_version += 1
        for query_id in list(self.queries):
            self.resubscribe(query_id)
            if self.sees_everything != saw_everything:
                query = self.queries[query_id]  # told in another measure now
                query.sent_version, query.sent_hash = -1, None
        self._needs_transition = True
        self.hub.request_flush(self)

    async def _identity_for(self, msg: m.Authenticate) -> tuple[dict[str, Any] | None, bool]:
        if msg.token_type == "None":
            return None, False
        assert msg.value is not None
        if msg.token_type == "Admin":
            if not self.verifier.is_admin_key(msg.value):
                raise Unauthenticated("The admin key is not valid", code="BadAdminKey")
            if msg.impersonating is not None:
                identity = dict(msg.impersonating)
                identity.setdefault(
                    "tokenIdentifier", f"{identity.get('issuer', '')}|{identity.get('subject', '')}"
                )
                return identity, True
            return None, True
        return await self.verifier.verify_user_token(msg.value), False

    def resubscribe(self, query_id: int) -> None:
        """Attach a query to the entry that fits the session's current identity."""
        query = self.queries[query_id]
        old = query.entry
        query.entry = self.hub.subscribe(
            self, query_id, query.path, query.args, self.identity, self.admin
        )
        if old is not query.entry:
            self.hub.unsubscribe(self, query_id, old)
            query.sent_version = -1

    def serves(self, query_id: int, entry: QueryEntry) -> bool:
        """Whether query ``query_id`` is served from ``entry``."""
        query = self.queries.get(query_id)
        return query is not None and query.entry is entry

    def rebind(self, query_id: int, old: QueryEntry, entry: QueryEntry) -> None:
        """Serve a query from another entry (the hub has subscribed it there):
        an equivalent execution, or a failure of its own."""
        query = self.queries.get(query_id)
        if query is None or query.entry is not old:
            return
        query.entry = entry
        if self.sees_everything:
            up_to_date = old.result_hash == entry.result_hash and query.sent_version == old.version
            query.sent_version = entry.version if up_to_date else -1
        else:
            up_to_date = (
                old.public_hash == entry.public_hash and query.sent_version == old.public_version
            )
            query.sent_version = entry.public_version if up_to_date else -1

    @property
    def sees_everything(self) -> bool:
        """Whether this client is told everything of failures, and the log lines
        (an admin, or any client of a development server)."""
        return reveals(dev=self.hub.dev, admin=self.admin)

    # -- mutations and actions ----------------------------------------------
    @property
    def has_requests(self) -> bool:
        """Whether mutations or actions of this connection are still running."""
        return bool(self._tasks)

    async def join_requests(self) -> None:
        """Wait until the mutations and actions in flight have been answered."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run_function(
        self, req: m.FunctionRequest, identity: dict[str, Any] | None, admin: bool
    ) -> None:
        ts: int | None = None
        try:
            if req.kind == "mutation":
                async with self._mutation_lock:  # one connection's mutations run in order
                    response, ts = await self._mutation(req, identity, admin)
                self._send(response)
            else:
                outcome = await self.runtime.call(
                    req.udf_path,
                    req.args,
                    kind="action",
                    identity=identity,
                    admin=admin,
                    args_size=req.size,
                )
                self._send(self._response(m.action_response, req, outcome, admin))
        except Exception as exc:
            # Not the function's failure (that is answered above): Basalt's own.
            rid = request_id()
            log.error(
                "internal error answering request %s [Request ID: %s]",
                req.request_id,
                rid,
                exc_info=exc,
            )
            self._send(
                m.fatal_error(
                    f"internal error answering request {req.request_id} [Request ID: {rid}]"
                )
            )
            self._close()
            return
        # As the real server does, a Transition follows every response: the Rust
        # client resolves a mutation (also a ConvexError one) on the next one, npm
        # a successful one on the first that reaches its commit timestamp.
        if req.kind == "mutation" and ts is not None:
            self._await_ts = ts if self._await_ts is None else max(self._await_ts, ts)
        else:
            self._needs_transition = True
        self.hub.request_flush(self)

    async def _mutation(
        self, req: m.FunctionRequest, identity: dict[str, Any] | None, admin: bool
    ) -> Answer:
        if self.session_id is None:
            # A client that never sent Connect cannot reconnect as the same
            # session: nothing to remember (and no key that is its own alone).
            return await self._apply_mutation(req, identity, admin)
        caller = f"{'admin' if admin else 'user'}|{identity_key(identity, admin)}"
        session_id = self.session_id

        def key_of() -> bytes:
            return mutation_key(caller, session_id, req.request_id, req.udf_path, req.args)

        # Hashing the arguments costs CPU in proportion to their size: large
        # ones are hashed off the loop, as they were decoded.
        key = await self.runtime.off_loop(key_of) if req.size > LARGE_FRAME_BYTES else key_of()
        results = self.hub.mutation_results
        earlier = results.get(key)
        if earlier is not None:  # re-sent after a reconnect: answer, do not apply again
            return await asyncio.shield(earlier)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        results.add(key, answer)
        try:
            response, ts = await self._apply_mutation(req, identity, admin)
        except BaseException as exc:
            answer.set_exception(exc)
            answer.exception()  # retrieved: re-senders get it through the shield
            results.discard(key, answer)
            raise
        answer.set_result((response, ts))
        if ts is None:
            results.discard(key, answer)  # nothing committed: a re-send may run it
        else:
            results.settle(key, answer, _json_size(response))
        return response, ts

    async def _apply_mutation(
        self, req: m.FunctionRequest, identity: dict[str, Any] | None, admin: bool
    ) -> Answer:
        outcome = await self.runtime.call(
            req.udf_path,
            req.args,
            kind="mutation",
            identity=identity,
            admin=admin,
            args_size=req.size,
        )
        committed = outcome.ts  # set only by a commit
        response = self._response(m.mutation_response, req, outcome, admin)
        return response, committed

    # -- outgoing ------------------------------------------------------------
    def flush(self, ts: int) -> None:
        """Send one Transition to ``ts`` if the client has anything to learn.

        Called by the hub after a refresh cycle at snapshot ``ts``. A client with
        nothing to learn gets nothing (the Python client yields its subscriptions'
        values again on every Transition, even an empty one).
        """
        if self._closed:
            return
        if any(q.entry.stale_at(ts) for q in self.queries.values()):
            # A new query has not run yet, or one is to run again at this
            # snapshot: the hub flushes again once it has.
            return
        ts = max(ts, self._sent[2])
        needs_transition = self._needs_transition
        if self._await_ts is not None:
            if ts >= self._await_ts:
                self._await_ts = None
                needs_transition = True
            else:
                # Its mutation committed after this cycle's snapshot; the next
                # cycle reaches it.
                self.hub.request_flush(self)
        modifications: list[dict[str, Any]] = [m.query_removed(q) for q in self._removed]
        self._removed.clear()
        full = self.sees_everything
        for query_id, query in self.queries.items():
            entry = query.entry
            version = entry.version if full else entry.public_version
            if query.sent_version == version:
                continue
            query.sent_version = version
            told = entry.result_hash if full else entry.public_hash
            if told == query.sent_hash:
                continue  # a new execution (after a reload, say) with what the client has
            query.sent_hash = told
            # logLines must be present, if empty (the official clients break otherwise).
            lines = entry.log_lines if full else []
            if entry.failure is None:
                modifications.append(
                    m.query_updated(query_id, entry.value_payload, lines, query.journal)
                )
            else:
                message = entry.failure.message(full=full)
                modifications.append(
                    m.query_failed(query_id, message, lines, query.journal, entry.error_data)
                )
        end = (self.query_set_version, self.identity_version, ts)
        if not modifications and end[:2] == self._sent[:2] and not needs_transition:
            return
        self._send(
            m.transition(
                m.state_version(*self._sent), m.state_version(*end), modifications, time.time_ns()
            )
        )
        self._sent = end
        self._needs_transition = False

    def close(self) -> None:
        """The connection ended: drop its subscriptions."""
        if self._closed:
            return
        self._closed = True
        for query_id, query in self.queries.items():
            self.hub.unsubscribe(self, query_id, query.entry)
        self.queries.clear()
        self.query_set_bytes = 0
        self.hub.sessions.discard(self)

    def _response(
        self,
        build: Callable[..., dict[str, Any]],
        req: m.FunctionRequest,
        outcome: Outcome,
        admin: bool,
    ) -> dict[str, Any]:
        """The MutationResponse or ActionResponse for ``outcome``, told in the
        measure the caller (an admin or not when it sent the request) may see."""
        full = reveals(dev=self.hub.dev, admin=admin)
        # logLines must be present, if empty (the official clients break otherwise).
        lines = outcome.log_lines if full else []
        if outcome.error is None:
            try:
                value = to_convex_json(outcome.value)
            except BasaltError as exc:
                outcome.error = exc
            else:
                if build is m.mutation_response:
                    return build(
                        req.request_id, success=True, result=value, ts=outcome.ts, log_lines=lines
                    )
                return build(req.request_id, success=True, result=value, log_lines=lines)
        failure = Failure.of(outcome)
        failure.report(req.udf_path, dev=self.hub.dev)
        message = failure.message(full=full)
        data = _encoded_error_data(failure.error)
        if build is m.mutation_response:
            return build(
                req.request_id,
                success=False,
                result=message,
                ts=None,
                log_lines=lines,
                error_data=data,
            )
        return build(
            req.request_id, success=False, result=message, log_lines=lines, error_data=data
        )


def _json_size(message: dict[str, Any]) -> int:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
