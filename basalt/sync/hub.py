"""The subscription hub: shared query executions, invalidation, refresh cycles.

A :class:`QueryEntry` is one execution of one query (function, arguments and,
if the query asked who the caller is, identity) shared by every subscriber.
Each commit is matched against the entries' read sets (see
:mod:`basalt.sync.index`) as soon as it is durable; matched entries are marked
dirty. A *refresh cycle* then opens one snapshot, re-runs every dirty or new
entry in it, and lets every session that has something to say send one
Transition ending at that snapshot's timestamp. Cycles run one at a time and
coalesce: commits that arrive during a cycle are handled by the next one,
including those that hit a read set the cycle had not filed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from basalt.errors import WriteConflict
from basalt.runtime import Runtime
from basalt.runtime.conflicts import retry_conflicts
from basalt.runtime.functions import Function
from basalt.runtime.outcome import Failure, Outcome, error_data
from basalt.runtime.transaction import ReadSet
from basalt.storage.base import Commit
from basalt.values.wire import to_convex_json

from .index import SubscriptionIndex
from .remembered import RememberedMutations

if TYPE_CHECKING:
    from .session import SyncSession

log = logging.getLogger("basalt.sync")


def identity_key(identity: dict[str, Any] | None, admin: bool) -> str:
    """A stable key for a caller, used to keep apart executions that read auth."""
    if identity is None:
        return "admin" if admin else ""
    token = identity.get("tokenIdentifier")
    if isinstance(token, str):
        return token
    return json.dumps(identity, sort_keys=True, default=repr)


def query_args_key(args: dict[str, Any]) -> str:
    """Query arguments as canonical JSON: equal arguments give equal keys."""
    return json.dumps(to_convex_json(args), sort_keys=True, separators=(",", ":"))


class QueryEntry:
    """One shared execution of a query."""

    __slots__ = (
        "args",
        "args_key",
        "dirty",
        "dirty_from",
        "error_data",
        "failure",
        "fresh",
        "function",
        "identity",
        "identity_key",
        "log_lines",
        "path",
        "prepare_error",
        "public_hash",
        "public_version",
        "read_auth",
        "result_hash",
        "subscribers",
        "value_payload",
        "version",
    )

    def __init__(
        self,
        path: str,
        args: dict[str, Any],
        args_key: str,
        identity: dict[str, Any] | None,
        ident_key: str,
        function: Function | None,
        prepare_error: Exception | None,
    ) -> None:
        self.path = path
        self.args = args
        self.args_key = args_key
        self.identity = identity
        self.identity_key = ident_key
        self.function = function
        self.prepare_error = prepare_error
        self.fresh = True
        self.dirty = False
        #: the oldest commit that made it dirty since it last ran (None: no commit)
        self.dirty_from: int | None = None
        self.read_auth = False
        #: bumped when what a caller who sees everything is sent changes (value,
        #: error, log lines); ``public_version``: what every other caller is sent
        #: (see basalt.runtime.outcome)
        self.version = 0
        self.public_version = 0
        self.result_hash = b""
        self.public_hash = b""
        self.value_payload: Any = None
        #: the last run's failure (told to each subscriber in its own measure)
        self.failure: Failure | None = None
        self.error_data: tuple[bool, Any] = (False, None)
        self.log_lines: list[str] = []
        self.subscribers: set[tuple[SyncSession, int]] = set()

    def __repr__(self) -> str:
        return f"<QueryEntry {self.path} v{self.version}>"

    def mark_dirty(self, ts: int) -> None:
        """Commit ``ts`` wrote into what this execution read."""
        self.dirty = True
        if self.dirty_from is None or ts < self.dirty_from:
            self.dirty_from = ts

    def record(self, outcome: Outcome, *, dev: bool) -> None:
        """Keep an outcome; bump ``version`` / ``public_version`` only if what
        the callers who see everything / the others are sent changed. A failure
        is recorded in the server log once, whoever is subscribed."""
        self.read_auth = outcome.read_auth
        if outcome.error is None:
            try:
                payload: Any = to_convex_json(outcome.value)
            except Exception as exc:
                outcome.error = exc
        failure = None
        if outcome.error is not None:
            payload = None
            failure = Failure.of(outcome)
            failure.report(self.path, dev=dev)
        self.error_data = _encoded_error_data(failure.error) if failure else (False, None)
        self.value_payload, self.failure = payload, failure
        self.log_lines = outcome.log_lines
        # The request id in an error message changes on every run: hash without it.
        full = _digest(payload, failure, self.error_data, outcome.log_lines, full=True)
        public = _digest(payload, failure, self.error_data, [], full=False)
        if full != self.result_hash or self.fresh:
            self.result_hash = full
            self.version += 1
        if public != self.public_hash or self.fresh:
            self.public_hash = public
            self.public_version += 1
        self.fresh = False

    def record_failure(self, exc: Exception, *, dev: bool) -> None:
        """The query could not be run for its caller (no such function, bad arguments)."""
        self.record(Outcome(error=exc, rejected=True), dev=dev)


def _digest(
    payload: Any,
    failure: Failure | None,
    data: tuple[bool, Any],
    log_lines: list[str],
    *,
    full: bool,
) -> bytes:
    error = None if failure is None else [_stable(failure.message(full=full)), data]
    source = json.dumps([payload, error, log_lines], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(source.encode(), digest_size=16).digest()


def _stable(message: str) -> str:
    first, _, rest = message.partition("\n")
    return rest if first.startswith("[Request ID:") else message


def _encoded_error_data(exc: BaseException) -> tuple[bool, Any]:
    is_convex, data = error_data(exc)
    if not is_convex:
        return False, None
    try:
        return True, to_convex_json(data)
    except Exception:
        return True, repr(data)


class SyncHub:
    """Subscriptions of every connection to one runtime."""

    #: Commits a cycle reads back from the commit log when its snapshot is ahead of
    #: the commits it was told about; beyond this, every subscription is re-run.
    CATCH_UP_LIMIT = 10_000

    def __init__(self, runtime: Runtime, *, dev: bool = False) -> None:
        self.runtime = runtime
        #: a development server: every subscriber sees everything of failures and
        #: the log lines (see basalt.runtime.outcome); otherwise only admins do
        self.dev = dev
        self.index: SubscriptionIndex[QueryEntry] = SubscriptionIndex()
        self.entries: dict[tuple[str, str, str], QueryEntry] = {}
        self.sessions: set[SyncSession] = set()
        #: the snapshot timestamp of the last cycle: every clean entry is valid there
        self.ts = 0
        self.cycles = 0
        self._pending: set[QueryEntry] = set()
        #: sessions that have something to tell their client at the next cycle
        self._flush_requests: set[SyncSession] = set()
        #: the newest commit matched against the subscriptions (None: before the first cycle)
        self._seen_ts: int | None = None
        #: commits that arrived while a cycle was running (see :meth:`cycle`)
        self._late: list[Commit] = []
        self._cycling = False
        self._cycle_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        #: (session id, request id) → the response already sent (re-sent mutations)
        self.mutation_results = RememberedMutations()

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._unlisten = self.runtime.storage.on_commit(self._on_commit)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="basalt-sync")

    async def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    def request_flush(self, session: SyncSession) -> None:
        """Let ``session`` send a Transition at the next cycle."""
        self._flush_requests.add(session)
        self._wake.set()

    async def reload(self) -> None:
        """The runtime now runs a newly loaded app: every live subscription
        resolves its function again, as a fresh subscribe would (a query that
        is gone, or whose arguments the new validators refuse, fails), and the
        next cycle runs them all at one snapshot; clients get the results that
        changed. Nothing is shared with an execution of the old code any more,
        so later commits re-run the new code."""
        async with self._cycle_lock:  # a cycle running the old code finishes first
            self.entries.clear()
            for session in list(self.sessions):
                for query_id in list(session.queries):
                    session.resubscribe(query_id)
        self._wake.set()

    @property
    def has_pending(self) -> bool:
        """Whether a cycle is running or some subscription or session waits for one."""
        return bool(self._pending or self._flush_requests) or self._cycle_lock.locked()

    # -- invalidation --------------------------------------------------------
    def _on_commit(self, commit: Commit) -> None:
        if self._cycling:
            self._late.append(commit)
        if self._seen_ts is not None:
            if commit.ts <= self._seen_ts:
                return  # already read back from the commit log by a cycle
            self._seen_ts = commit.ts
        self._match(commit)
        self._wake.set()

    def _match(self, commit: Commit) -> None:
        hits = self.index.matches(commit)
        if hits:
            for entry in hits:
                entry.mark_dirty(commit.ts)
            self._pending.update(hits)

    async def _catch_up(self, snapshot_ts: int) -> None:
        """Match the commits inside a cycle's snapshot that no notification
        reported yet (a commit made durable on a worker thread is visible a
        moment before it is announced; another process's commits never are)."""
        seen = self._seen_ts
        assert seen is not None
        commits = await self.runtime.storage.commits_since(seen, limit=self.CATCH_UP_LIMIT)
        if len(commits) >= self.CATCH_UP_LIMIT:
            for entry in set(self.entries.values()) | set(self.index):
                entry.dirty = True
                self._pending.add(entry)
        else:
            for commit in commits:
                if commit.ts <= snapshot_ts:
                    self._match(commit)
        self._seen_ts = snapshot_ts

    # -- subscriptions -------------------------------------------------------
    def subscribe(
        self,
        session: SyncSession,
        query_id: int,
        path: str,
        args: dict[str, Any],
        identity: dict[str, Any] | None,
        admin: bool,
        args_key: str | None = None,
    ) -> QueryEntry:
        """Attach a session's query to a shared entry (made if needed);
        ``args_key`` is :func:`query_args_key` of ``args`` if the caller has it."""
        if args_key is None:
            args_key = query_args_key(args)
        ident = identity_key(identity, admin)
        try:
            function, args = self.runtime.prepare(path, args, kind="query", admin=admin)
        except Exception as exc:
            # Not shared: the same path may resolve for another caller (an admin,
            # for an internal query), and this caller's error is theirs alone.
            entry = QueryEntry(path, args, args_key, identity, ident, None, exc)
            self._pending.add(entry)
        else:
            canonical = function.path or path
            # An execution that did not read the caller's identity serves every caller.
            shared = self.entries.get((canonical, args_key, "*"))
            if shared is not None and not shared.read_auth:
                entry = shared
            else:
                own = self.entries.get((canonical, args_key, ident))
                if own is None:
                    own = QueryEntry(canonical, args, args_key, identity, ident, function, None)
                    self.entries[(canonical, args_key, ident)] = own
                    self._pending.add(own)
                entry = own
        entry.subscribers.add((session, query_id))
        self._wake.set()
        return entry

    def unsubscribe(self, session: SyncSession, query_id: int, entry: QueryEntry) -> None:
        entry.subscribers.discard((session, query_id))
        if not entry.subscribers:
            self._drop(entry)

    def _drop(self, entry: QueryEntry) -> None:
        self.index.remove(entry)
        self._pending.discard(entry)
        for key in (
            (entry.path, entry.args_key, "*"),
            (entry.path, entry.args_key, entry.identity_key),
        ):
            if self.entries.get(key) is entry:
                del self.entries[key]

    def _file(self, entry: QueryEntry) -> None:
        """Index an entry under its identity key, or as shared if it ignored auth.

        An entry that ignored auth while another such execution of the same query
        is already shared (callers with different identities subscribed before
        either ran) hands its subscribers over to that one.
        """
        shared_key = (entry.path, entry.args_key, "*")
        own_key = (entry.path, entry.args_key, entry.identity_key)
        if not entry.read_auth:
            if self.entries.get(own_key) is entry:
                del self.entries[own_key]
            shared = self.entries.get(shared_key)
            if shared is None or shared is entry:
                self.entries[shared_key] = entry
            elif not shared.dirty and not shared.fresh:
                # Both are valid at this cycle's snapshot.
                self._merge(entry, shared)
        else:
            if self.entries.get(shared_key) is entry:
                del self.entries[shared_key]
            self.entries[own_key] = entry

    def _merge(self, entry: QueryEntry, into: QueryEntry) -> None:
        for session, query_id in list(entry.subscribers):
            session.rebind(query_id, entry, into)
            self._flush_requests.add(session)
        entry.subscribers.clear()
        self._drop(entry)

    # -- refresh cycles ------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except (Exception, WriteConflict):
                log.exception("subscription refresh failed")

    async def cycle(self) -> None:
        """Re-run what changed at one snapshot, then let sessions send transitions.

        Cycles run one at a time (a call waits for the running one to finish).
        A snapshot the engine refuses (a serializable read that PostgreSQL
        cancels) is given up whole and the cycle runs again.
        """

        async def once() -> None:
            async with self._cycle_lock:  # not held during the backoff
                await self._cycle()

        await retry_conflicts(once, on_conflict=self.runtime.note_conflict)

    async def _cycle(self) -> None:
        runtime = self.runtime
        pending: list[QueryEntry] = []
        ran: list[tuple[QueryEntry, ReadSet | None]] = []
        done = 0
        self._cycling = True
        try:
            async with runtime.storage.read() as tx:
                snapshot = tx.ts
                if self._seen_ts is None:
                    self._seen_ts = snapshot  # nothing was filed before the first cycle
                elif snapshot > self._seen_ts:
                    await self._catch_up(snapshot)
                pending = [e for e in self._pending if e.subscribers]
                self._pending.clear()
                # An entry that only commits newer than this snapshot made dirty (they
                # were announced while it was being taken) would run to its last
                # result: the next cycle runs it, at a snapshot that holds them.
                later = {e for e in pending if e.dirty_from is not None and e.dirty_from > snapshot}
                if later:
                    pending = [e for e in pending if e not in later]
                    self._pending.update(later)
                    self._wake.set()
                for entry in pending:
                    # A commit after this snapshot marks it dirty again (for the next cycle).
                    entry.dirty = False
                    entry.dirty_from = None
                    if entry.function is None:
                        entry.record_failure(
                            entry.prepare_error or RuntimeError("no function"), dev=self.dev
                        )
                        ran.append((entry, None))
                        done += 1
                        continue
                    if entry.fresh:
                        shared = self.entries.get((entry.path, entry.args_key, "*"))
                        if (
                            shared is not None
                            and shared is not entry
                            and not (shared.read_auth or shared.dirty or shared.fresh)
                        ):
                            # Another caller's subscription to the same query ran
                            # first (in this cycle or before) and ignored auth.
                            self._merge(entry, shared)
                            done += 1
                            continue
                    outcome = await runtime.run_query_in(
                        tx, entry.function, entry.args, entry.identity
                    )
                    done += 1
                    entry.record(outcome, dev=self.dev)
                    if entry.subscribers:  # not removed while it ran
                        if outcome.read_set is not None:
                            self.index.add(entry, outcome.read_set)
                        self._split_if_personal(entry)
                    if entry.subscribers:  # the split may have moved them all
                        self._file(entry)
                    ran.append((entry, outcome.read_set))
        except WriteConflict:
            # Nothing this snapshot gave may be sent: all of it runs again.
            self._pending.update(e for e in pending if e.subscribers)
            raise
        except BaseException:
            # What did not run waits for the next cycle.
            self._pending.update(e for e in pending[done:] if e.subscribers)
            raise
        finally:
            self._cycling = False
            late, self._late = self._late, []
        # A commit that became durable while this cycle ran, after its snapshot,
        # was matched against the read sets filed at that moment, not against the
        # ones this cycle has just filed: match those now.
        late = [c for c in late if c.ts > snapshot]
        if late:
            for entry, read_set in ran:
                if read_set is None or not entry.subscribers:
                    continue
                hit = [c.ts for c in late if read_set.overlaps(c)]
                if hit:
                    entry.mark_dirty(hit[0])  # late is in commit order
                    self._pending.add(entry)
                    self._wake.set()
        self.ts = max(self.ts, snapshot)
        self.cycles += 1
        targets, self._flush_requests = self._flush_requests, set()
        for entry, _ in ran:
            targets.update(session for session, _ in entry.subscribers)
        for session in targets:
            if session in self.sessions:
                session.flush(self.ts)

    def _split_if_personal(self, entry: QueryEntry) -> None:
        """An entry shared by several callers that now reads auth gets one
        entry per caller (the others re-run on the next cycle)."""
        if not entry.read_auth:
            return
        others = [(s, q) for s, q in entry.subscribers if s.identity_key != entry.identity_key]
        for session, query_id in others:
            entry.subscribers.discard((session, query_id))
            session.resubscribe(query_id)
