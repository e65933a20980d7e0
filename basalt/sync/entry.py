"""One shared execution of a query (:class:`QueryEntry`), and the keys that
decide which subscriptions share one.

An entry keeps what its last run gave (value, or failure, and log lines) in
the form it is sent, the hashes that tell whether a new run changed what each
kind of caller is told, and :attr:`QueryEntry.result_bytes`: what the result
holds in memory, measured as JSON (what a Transition carrying it adds), which
the hub charges to every subscriber (see :mod:`basalt.sync.hub`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from basalt.runtime.functions import Function
from basalt.runtime.outcome import Failure, Outcome, error_data
from basalt.values.wire import to_convex_json

if TYPE_CHECKING:
    from .session import SyncSession


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
    return _canonical(to_convex_json(args))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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
        "result_bytes",
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
        #: the oldest commit that made it dirty since it last ran (None: no
        #: commit, or not known which: then it is stale at any snapshot)
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
        #: the bytes (as JSON) of the value, log lines and failure kept
        self.result_bytes = 0
        self.subscribers: set[tuple[SyncSession, int]] = set()

    def __repr__(self) -> str:
        return f"<QueryEntry {self.path} v{self.version}>"

    def mark_dirty(self, ts: int) -> None:
        """Commit ``ts`` wrote into what this execution read."""
        self.dirty = True
        if self.dirty_from is None or ts < self.dirty_from:
            self.dirty_from = ts

    def stale_at(self, ts: int) -> bool:
        """Whether this entry's result may not be the query's result at
        snapshot ``ts`` (it has not run yet, or a commit up to ``ts`` wrote into
        what it read): a Transition to ``ts`` must wait for its next run."""
        if self.fresh:
            return True
        return self.dirty and (self.dirty_from is None or self.dirty_from <= ts)

    def record(
        self,
        outcome: Outcome,
        *,
        dev: bool,
        room: int | None = None,
        too_large: Callable[[int], Exception] | None = None,
    ) -> int | None:
        """Keep an outcome; bump ``version`` / ``public_version`` only if what
        the callers who see everything / the others are sent changed. A failure
        is recorded in the server log once, whoever is subscribed.

        ``room``: the most bytes the result may take. A larger one is not kept:
        the entry records the error ``too_large(size)`` instead (a call the
        server refused, told in full to every caller), and returns that size.
        """
        self.read_auth = outcome.read_auth
        payload: Any = None
        payload_text = "null"
        if outcome.error is None:
            try:
                payload = to_convex_json(outcome.value)
                payload_text = _canonical(payload)
            except Exception as exc:
                outcome.error = exc
                payload, payload_text = None, "null"
        failure = None if outcome.error is None else Failure.of(outcome)
        data = _encoded_error_data(failure.error) if failure else (False, None)
        lines = outcome.log_lines
        error_text = "" if failure is None else _canonical([failure.message(full=True), data])
        size = len(payload_text) + len(error_text) + sum(len(line) + 3 for line in lines)
        refused: int | None = None
        if room is not None and size > room:
            assert too_large is not None
            refused = size
            payload, payload_text, lines = None, "null", []
            failure = Failure(too_large(size), rejected=True)
            data = (False, None)
            error_text = _canonical([failure.message(full=True), data])
            size = len(payload_text) + len(error_text)
        if failure is not None:
            failure.report(self.path, dev=dev)
        self.error_data = data
        self.value_payload, self.failure = payload, failure
        self.log_lines = lines
        self.result_bytes = size
        # The request id in an error message changes on every run: hash without it.
        encoded = payload_text.encode()
        full = _digest(encoded, failure, data, lines, full=True)
        public = _digest(encoded, failure, data, [], full=False)
        if full != self.result_hash or self.fresh:
            self.result_hash = full
            self.version += 1
        if public != self.public_hash or self.fresh:
            self.public_hash = public
            self.public_version += 1
        self.fresh = False
        return refused

    def record_failure(self, exc: Exception, *, dev: bool) -> None:
        """The query could not be run for its caller (no such function, bad
        arguments, a result over a limit)."""
        self.record(Outcome(error=exc, rejected=True), dev=dev)

    def release(self) -> None:
        """Nothing is subscribed any more: let go of the result now (a cycle
        that ran the entry may still hold the entry itself for a while)."""
        self.value_payload = None
        self.log_lines = []
        self.result_bytes = 0


def _digest(
    payload: bytes,
    failure: Failure | None,
    data: tuple[bool, Any],
    log_lines: list[str],
    *,
    full: bool,
) -> bytes:
    error = None if failure is None else [_stable(failure.message(full=full)), data]
    digest = hashlib.blake2b(payload, digest_size=16)
    digest.update(b"\x00")
    digest.update(_canonical([error, log_lines]).encode())
    return digest.digest()


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
