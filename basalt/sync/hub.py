"""The subscription hub: shared query executions, invalidation, refresh cycles.

A :class:`~basalt.sync.entry.QueryEntry` is one execution of one query
(function, arguments and, if the query asked who the caller is, identity)
shared by every subscriber. Each commit is matched against the entries' read
sets (see :mod:`basalt.sync.index`) as soon as it is durable; matched entries
are marked dirty. A *refresh cycle* then opens one snapshot, re-runs every
dirty or new entry in it, and lets every session that has something to say
send one Transition ending at that snapshot's timestamp. Cycles run one at a
time and coalesce: commits that arrive during a cycle are handled by the next
one, including those that hit a read set the cycle had not filed yet.

**Fairness.** A cycle serves connections in turns, those served longest ago
first, running each one's entries together (an entry belongs to one of its
subscribers). It starts no connection's turn once it has run for
:attr:`SyncHub.cycle_seconds`, and ends a turn once that connection's runs
have taken :attr:`SyncHub.session_seconds` (it always runs one entry). What it
did not reach waits for the next cycle, and the hub first leaves the event loop
to other work for a share of the time the cycle took (see
:mod:`basalt.sync.fairness`). So a connection with many (or slow) queries
delays the others by about one turn, while one whose queries take less than a
turn together is refreshed within one cycle. A session with an entry that is
not up to date at a cycle's snapshot sends nothing until it is, so a
Transition never mixes snapshots.

**Result memory.** What an entry's result holds (its size as JSON, see
:attr:`~basalt.sync.entry.QueryEntry.result_bytes`) is bounded twice:

- per connection: every query is charged its entry's result (see
  :class:`~basalt.sync.limits.SessionLimits`); a query whose result would take
  its connection over the limit is served a failure of its own instead (the
  entry, if nobody else is subscribed, is dropped at once);
- per hub: the results of all entries together (each counted once, however
  many subscribe) stay within :attr:`SyncHub.max_result_bytes`. A run whose
  result would go over keeps a failure instead, for all its subscribers, and
  runs again when what it read changes or once the others' results leave room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from basalt.errors import LimitExceeded, WriteConflict
from basalt.runtime import Runtime
from basalt.runtime.conflicts import retry_conflicts
from basalt.runtime.outcome import Outcome
from basalt.runtime.transaction import ReadSet
from basalt.storage.base import Commit

from .entry import QueryEntry, identity_key, query_args_key
from .fairness import make_room
from .index import SubscriptionIndex
from .remembered import RememberedMutations

if TYPE_CHECKING:
    from .session import SyncSession

log = logging.getLogger("basalt.sync")

#: Most bytes (as JSON) of query results the subscriptions of one hub hold.
MAX_TOTAL_RESULT_BYTES = 512 << 20
#: Seconds after which a refresh cycle starts no other connection's turn.
CYCLE_SECONDS = 0.25
#: Seconds of runs one connection's turn may take in one refresh cycle.
SESSION_SECONDS = 0.5


class SyncHub:
    """Subscriptions of every connection to one runtime.

    ``max_result_bytes``: the bytes of results all its entries may hold;
    ``cycle_seconds`` and ``session_seconds``: how long one refresh cycle
    starts new turns for, and how long one connection's turn may take (see the
    module's docstring).
    """

    #: Commits a cycle reads back from the commit log when its snapshot is ahead of
    #: the commits it was told about; beyond this, every subscription is re-run.
    CATCH_UP_LIMIT = 10_000

    def __init__(
        self,
        runtime: Runtime,
        *,
        dev: bool = False,
        max_result_bytes: int = MAX_TOTAL_RESULT_BYTES,
        cycle_seconds: float = CYCLE_SECONDS,
        session_seconds: float = SESSION_SECONDS,
    ) -> None:
        if max_result_bytes < 1:
            raise ValueError(f"max_result_bytes must be positive, got {max_result_bytes}")
        if not (cycle_seconds > 0 and session_seconds > 0):
            raise ValueError(
                "cycle_seconds and session_seconds must be positive, got "
                f"{cycle_seconds} and {session_seconds}"
            )
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
        #: cycles that ran out of time and left entries to the next one
        self.cycles_over_time = 0
        self.cycle_seconds = cycle_seconds
        self.session_seconds = session_seconds
        #: the bytes of the results of all live entries, and their limit
        self.result_bytes = 0
        self.max_result_bytes = max_result_bytes
        #: results not kept because of a limit (a connection's or the hub's)
        self.results_refused = 0
        #: entries whose result the hub's limit refused → the size refused
        self._refused: dict[QueryEntry, int] = {}
        self._pending: set[QueryEntry] = set()
        #: sessions that have something to tell their client at the next cycle
        self._flush_requests: set[SyncSession] = set()
        #: the newest commit matched against the subscriptions (None: before the first cycle)
        self._seen_ts: int | None = None
        #: commits that arrived while a cycle was running (see :meth:`cycle`)
        self._late: list[Commit] = []
        self._cycling = False
        #: seconds the last cycle took, if it ran out of time (see :meth:`_run`)
        self._overran = 0.0
        #: a counter that orders the turns given to sessions (see :meth:`_in_turns`)
        self._turns = 0
        self._cycle_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        #: the answers of committed mutations, for re-sent ones (see .remembered)
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
        """Attach a session's query to a shared entry (made if needed), or to a
        failure of its own if the entry's result does not fit in the session's
        limit; ``args_key`` is :func:`query_args_key` of ``args`` if the caller
        has it."""
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
        attached = self._attach(session, query_id, entry)
        if attached is not entry and not entry.subscribers:
            self._drop(entry)
        self._wake.set()
        return attached

    def unsubscribe(self, session: SyncSession, query_id: int, entry: QueryEntry) -> None:
        self._detach(session, query_id, entry)
        if not entry.subscribers:
            self._drop(entry)

    def _attach(self, session: SyncSession, query_id: int, entry: QueryEntry) -> QueryEntry:
        """Subscribe a session's query to ``entry`` and charge it the result;
        a result the session has no room for is replaced by a failure of its own
        (which is returned)."""
        size = entry.result_bytes
        held = session.result_bytes
        if held and size and held + size > session.limits.max_result_bytes:
            entry = self._refusal(session, entry, size)
        entry.subscribers.add((session, query_id))
        session.result_bytes += entry.result_bytes
        return entry

    def _detach(self, session: SyncSession, query_id: int, entry: QueryEntry) -> None:
        if (session, query_id) in entry.subscribers:
            entry.subscribers.discard((session, query_id))
            session.result_bytes -= entry.result_bytes

    def _refusal(self, session: SyncSession, entry: QueryEntry, size: int) -> QueryEntry:
        """A failure, of the session's own, for a query whose result of ``size``
        bytes does not fit in the session's limit."""
        limit = session.limits.max_result_bytes
        refusal = QueryEntry(
            entry.path, entry.args, entry.args_key, entry.identity, entry.identity_key, None, None
        )
        refusal.record_failure(
            LimitExceeded(
                f"this query's result ({size} bytes as JSON) would make the results of this "
                f"connection's queries {session.result_bytes + size} bytes, over the limit of "
                f"{limit} bytes per connection: remove queries, or make this one return less",
                code="ResultsTooLarge",
            ),
            dev=self.dev,
        )
        self.result_bytes += refusal.result_bytes
        self.results_refused += 1
        return refusal

    def _drop(self, entry: QueryEntry) -> None:
        """Nobody is subscribed to ``entry`` any more: forget it and its result."""
        self.index.remove(entry)
        self._pending.discard(entry)
        self._refused.pop(entry, None)
        for key in (
            (entry.path, entry.args_key, "*"),
            (entry.path, entry.args_key, entry.identity_key),
        ):
            if self.entries.get(key) is entry:
                del self.entries[key]
        freed = entry.result_bytes
        self.result_bytes -= freed
        entry.release()
        if freed:
            self._room_freed()

    def _move(self, session: SyncSession, query_id: int, old: QueryEntry, new: QueryEntry) -> None:
        """Serve a session's query from ``new`` (an equivalent entry) instead of ``old``."""
        self._detach(session, query_id, old)
        session.rebind(query_id, old, self._attach(session, query_id, new))
        self._flush_requests.add(session)

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
            if session.serves(query_id, entry):
                self._move(session, query_id, entry, into)
            else:
                self._detach(session, query_id, entry)
        self._drop(entry)

    # -- result memory -------------------------------------------------------
    def _record(self, entry: QueryEntry, outcome: Outcome) -> None:
        """Keep a run's outcome within the hub's limit, and charge the change
        in its size to the subscribers (see the module's docstring)."""
        old = entry.result_bytes
        room = max(old, self.max_result_bytes - (self.result_bytes - old))
        refused = entry.record(outcome, dev=self.dev, room=room, too_large=self._too_large)
        if refused is None:
            self._refused.pop(entry, None)
        else:
            self._refused[entry] = refused
            self.results_refused += 1
        delta = entry.result_bytes - old
        self.result_bytes += delta
        if delta > 0:
            for session, query_id in list(entry.subscribers):
                session.result_bytes += delta
                held = session.result_bytes
                if held > session.limits.max_result_bytes and held > entry.result_bytes:
                    # Over its connection's limit, with other results held: this
                    # one is not kept for it.
                    self._detach(session, query_id, entry)
                    refusal = self._refusal(session, entry, entry.result_bytes)
                    refusal.subscribers.add((session, query_id))
                    session.result_bytes += refusal.result_bytes
                    session.rebind(query_id, entry, refusal)
                    self._flush_requests.add(session)
        elif delta < 0:
            for session, _ in entry.subscribers:
                session.result_bytes += delta
            self._room_freed()

    def _too_large(self, size: int) -> Exception:
        return LimitExceeded(
            f"this query's result ({size} bytes as JSON) would make the query results this "
            f"server holds {self.result_bytes + size} bytes, over its limit of "
            f"{self.max_result_bytes} bytes: the query runs again when what it read changes, "
            "or once the server has room",
            code="ResultsTooLarge",
        )

    def _room_freed(self) -> None:
        """Results left: run again the entries whose result the hub refused
        and which now fit."""
        if not self._refused:
            return
        room = self.max_result_bytes - self.result_bytes
        for entry, size in list(self._refused.items()):
            if size <= room:
                del self._refused[entry]
                room -= size
                entry.dirty = True  # not up to date anywhere until it has run
                self._pending.add(entry)
                self._wake.set()

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
            if self._overran:
                # Entries wait for the next cycle: let others use the loop first.
                held, self._overran = self._overran, 0.0
                await make_room(held)

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
        order: list[QueryEntry] = []
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
                order, turns = self._in_turns(pending)
                started = turn_started = time.perf_counter()
                for entry, turn in zip(order, turns, strict=True):
                    now = time.perf_counter()
                    if turn is not None:  # the first entry of a session's turn
                        if done and now - started >= self.cycle_seconds:
                            break  # the other turns wait for the next cycle
                        turn_started = now
                        self._turns += 1
                        turn.served = self._turns
                    elif now - turn_started >= self.session_seconds:
                        break  # so do the rest of this turn, and the others
                    done += 1
                    if not entry.subscribers:
                        continue  # its last subscriber left while others ran
                    # A commit after this snapshot marks it dirty again (for the next cycle).
                    entry.dirty = False
                    entry.dirty_from = None
                    if entry.function is None:
                        self._record(
                            entry,
                            Outcome(
                                error=entry.prepare_error or RuntimeError("no function"),
                                rejected=True,
                            ),
                        )
                        ran.append((entry, None))
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
                            continue
                    outcome = await runtime.run_query_in(
                        tx, entry.function, entry.args, entry.identity
                    )
                    if not entry.subscribers:  # removed while it ran (and dropped)
                        continue
                    self._record(entry, outcome)
                    if entry.subscribers:
                        if outcome.read_set is not None:
                            self.index.add(entry, outcome.read_set)
                        self._split_if_personal(entry)
                    if entry.subscribers:  # the split may have moved them all
                        self._file(entry)
                    else:  # moved, or none of them had room for the result
                        self._drop(entry)
                    ran.append((entry, outcome.read_set))
                if done < len(order):
                    self._pending.update(e for e in order[done:] if e.subscribers)
                    self._overran = time.perf_counter() - started
                    self.cycles_over_time += 1
                    self._wake.set()
        except WriteConflict:
            # Nothing this snapshot gave may be sent: all of it runs again.
            self._run_again(order)
            raise
        except BaseException:
            # What did not run waits for the next cycle.
            self._run_again(order[max(done - 1, 0) :])
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

    def _run_again(self, entries: list[QueryEntry]) -> None:
        """Entries a failed cycle may have run: not up to date anywhere until
        the next cycle has run them."""
        for entry in entries:
            if entry.subscribers:
                entry.dirty = entry.dirty or not entry.fresh
                self._pending.add(entry)

    def _in_turns(
        self, pending: list[QueryEntry]
    ) -> tuple[list[QueryEntry], list[SyncSession | None]]:
        """The order to run entries in: the sessions served longest ago first,
        each session's entries together (an entry belongs to one of its
        subscribers); and, for each entry, the session whose turn it starts
        (None: it continues one)."""
        groups: dict[SyncSession, list[QueryEntry]] = {}
        for entry in pending:
            session = next(iter(entry.subscribers))[0]
            groups.setdefault(session, []).append(entry)
        order: list[QueryEntry] = []
        turns: list[SyncSession | None] = []
        for session, entries in sorted(groups.items(), key=lambda item: item[0].served):
            order += entries
            turns += [session] + [None] * (len(entries) - 1)
        return order, turns

    def _split_if_personal(self, entry: QueryEntry) -> None:
        """An entry shared by several callers that now reads auth gets one
        entry per caller (the others re-run on the next cycle)."""
        if not entry.read_auth:
            return
        others = [(s, q) for s, q in entry.subscribers if s.identity_key != entry.identity_key]
        for session, query_id in others:
            self._detach(session, query_id, entry)
            session.resubscribe(query_id)
