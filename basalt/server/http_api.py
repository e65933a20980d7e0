"""The Convex HTTP API (protocol.md §1): ``/api/query``, ``/api/mutation``,
``/api/action``, ``/api/function``, ``/api/run/...``, ``query_ts``,
``query_at_ts`` and ``query_batch``.

A function that ran answers HTTP 200 with ``status`` ``success`` or ``error``
(``errorData`` only for a ``ConvexError``); a request that never reached a
function answers 4xx/5xx with ``{"code", "message"}``. How much of a failure
and of the log lines a caller is told depends on who it is
(:mod:`basalt.runtime.outcome`).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from basalt.errors import (
    BadRequest,
    BasaltError,
    InvalidValue,
    LimitExceeded,
    StorageError,
    WriteConflict,
)
from basalt.runtime import Outcome, Runtime
from basalt.runtime.outcome import Failure, error_data, reveals
from basalt.storage.base import ReadTransaction
from basalt.sync.fairness import make_room
from basalt.values.wire import from_convex_json, parse_json, to_clean_json, to_convex_json

from .asgi import Request, Response, error_response, json_response
from .auth import Caller

#: Request bodies larger than this are decoded on a worker thread.
LARGE_BODY_BYTES = 256 << 10

#: Most entries one ``/api/query_batch`` request may hold. Every entry runs a
#: query, so a batch is work an anonymous client asks for in one request: a
#: thousand is more than a page of queries needs (a client holds a few dozen
#: subscriptions) and a fraction of a second of server time, where 100,000
#: entries held the server for 39 s. A client with more sends several batches.
MAX_BATCH_QUERIES = 1000
#: Seconds a batch may spend running its queries (one query alone may take up
#: to its own time limit): the entries not started by then are answered with an
#: error saying so, without running, so that one request holds the server (and a
#: snapshot) for a bounded time. The event loop serves others after every entry
#: (see :mod:`basalt.sync.fairness`).
MAX_BATCH_SECONDS = 5.0
#: Most bytes one ``query_batch`` response may take: the entry whose result
#: would go over, and those after it, are answered with an error saying so. A
#: result alone (at most the 16 MiB value limit) always fits.
MAX_BATCH_RESPONSE_BYTES = 32 << 20

ENCODED_FORMATS = {"convex_encoded_json", "convex_json"}
CLEAN_FORMATS = {"json", "convex_clean_json"}


def encode_ts(ts: int) -> str:
    return base64.b64encode(ts.to_bytes(8, "little")).decode()


def decode_ts(text: Any) -> int:
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) != 8:
            raise ValueError
    except (ValueError, TypeError):
        raise BadRequest(f"ts must be a base64 u64 from /api/query_ts, got {text!r}") from None
    return int.from_bytes(raw, "little")


def _encoder(fmt: Any) -> Any:
    if fmt is None or fmt in CLEAN_FORMATS:
        return to_clean_json
    if fmt in ENCODED_FORMATS or fmt == "export_json":
        return to_convex_json
    raise BadRequest(
        f'Unsupported format {fmt!r}: use "convex_encoded_json" or "json"', code="BadFormat"
    )


def parse_json_body(body: bytes) -> Any:
    """The request body as JSON under the wire's number rule
    (:func:`~basalt.values.wire.parse_json`: every number a float64, no
    ``NaN``/``Infinity`` literals)."""
    try:
        return parse_json(body)
    except InvalidValue as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc.message}", code="BadJsonBody"
        ) from None


def decode_args(raw: Any, *, what: str = "args") -> dict[str, Any]:
    """Arguments in either wire form: ``{...}`` or the legacy ``[{...}]``."""
    if raw is None:
        return {}
    original = raw
    if isinstance(raw, list):
        if len(raw) != 1:
            raise BadRequest(
                f"{what} must be an object or a one-element array, got {len(raw)} elements",
                code="BadJsonBody",
            )
        raw = raw[0]
    try:
        value = from_convex_json(raw)
    except InvalidValue as exc:
        raise BadRequest(f"Invalid {what}: {exc.message}", code="BadJsonBody") from None
    if not isinstance(value, dict):
        # A dict here was an encoded value: {"$integer": …}, {"$float": …}, {"$bytes": …}.
        encoded = isinstance(original, dict)
        kind = f"a {next(iter(original))} value" if encoded else _json_kind(original)
        raise BadRequest(f"{what} must be an object, got {kind}", code="BadJsonBody")
    return value


def _json_kind(value: Any) -> str:
    """What a JSON value is, in a message: ``an array holding a number``."""
    if isinstance(value, list):
        return "an empty array" if not value else f"an array holding {_json_kind(value[0])}"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "an object"


def outcome_body(
    outcome: Outcome, encode: Any, *, path: object, full: bool, dev: bool
) -> dict[str, Any]:
    """The JSON body of a function call's response.

    ``full``: the caller sees everything of a failure and the log lines (see
    :mod:`basalt.runtime.outcome`); a failure is recorded in the server log
    (``dev``: as one line) under the request id the body names.
    """
    if outcome.error is None:
        try:
            body: dict[str, Any] = {"status": "success", "value": encode(outcome.value)}
        except (InvalidValue, ValueError) as encode_error:
            outcome.error = encode_error
        else:
            if outcome.log_lines and full:
                body["logLines"] = outcome.log_lines
            return body
    failure = Failure.of(outcome)
    failure.report(path, dev=dev)
    body = {"status": "error", "errorMessage": failure.message(full=full)}
    is_convex_error, data = error_data(failure.error)
    if is_convex_error:
        try:
            body["errorData"] = encode(data)
        except (InvalidValue, ValueError):
            body["errorData"] = encode(repr(data))
    if outcome.log_lines and full:
        body["logLines"] = outcome.log_lines
    return body


def _call_body(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON object of a function call's body, and its decoded ``args``."""
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object", code="BadJsonBody")
    return body, decode_args(body.get("args"))


class HttpApi:
    """Handlers of the ``/api`` routes for one runtime."""

    def __init__(self, runtime: Runtime, *, dev: bool = False) -> None:
        self.runtime = runtime
        #: a development server: every caller sees everything (see basalt.runtime.outcome)
        self.dev = dev

    async def _call(
        self,
        caller: Caller,
        path: Any,
        args: dict[str, Any],
        kind: Any,
        fmt: Any,
        *,
        ts: int | None = None,
        args_size: int = 0,
    ) -> Response:
        if path is None or path == "":
            raise BadRequest('"path" is missing: name the function to call, like "messages:list"')
        if not isinstance(path, str):
            raise BadRequest(
                f'"path" must be a function path like "messages:list", got {_json_kind(path)}'
            )
        encode = _encoder(fmt)
        if ts is None:
            outcome = await self.runtime.call(
                path,
                args,
                kind=kind,
                identity=caller.identity,
                admin=caller.admin,
                args_size=args_size,
            )
        else:
            outcome = await self.runtime.query_at(
                path, args, ts, identity=caller.identity, admin=caller.admin
            )
        full = reveals(dev=self.dev, admin=caller.admin)
        return json_response(outcome_body(outcome, encode, path=path, full=full, dev=self.dev))

    async def function(self, request: Request, caller: Caller, kind: Any) -> Response:
        """``POST /api/query|mutation|action|function`` and ``GET /api/query``."""
        if request.method == "GET":
            path = request.query_param("path")
            raw_args = request.query_param("args")
            args = decode_args(parse_json_body((raw_args or "{}").encode()))
            return await self._call(caller, path, args, kind, request.query_param("format"))
        raw = await request.body()
        if len(raw) > LARGE_BODY_BYTES:  # decoded on a worker thread: the loop serves on
            body, args = await self.runtime.off_loop(lambda: _call_body(raw))
        else:
            body, args = _call_body(raw)
        return await self._call(
            caller, body.get("path"), args, kind, body.get("format"), args_size=len(raw)
        )

    async def run(self, request: Request, caller: Caller, rest: str) -> Response:
        """``POST /api/run/<module path>/<function>``; default format is clean JSON."""
        module, _, name = rest.rstrip("/").rpartition("/")
        if not module or not name:
            raise BadRequest(
                f"/api/run/{rest}: expected /api/run/<module>/<function>, "
                "e.g. /api/run/messages/list"
            )
        raw = await request.body()
        body = parse_json_body(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object", code="BadJsonBody")
        args = decode_args(body.get("args"))
        return await self._call(caller, f"{module}:{name}", args, None, body.get("format", "json"))

    async def query_ts(self, request: Request, caller: Caller) -> Response:
        return json_response({"ts": encode_ts(await self.runtime.storage.latest_ts())})

    async def query_at_ts(self, request: Request, caller: Caller) -> Response:
        body = parse_json_body(await request.body())
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object", code="BadJsonBody")
        ts = decode_ts(body.get("ts"))
        latest = await self.runtime.storage.latest_ts()
        if ts > latest:
            raise BadRequest(f"ts {ts} is in the future (latest is {latest})", code="BadTimestamp")
        args = decode_args(body.get("args"))
        return await self._call(caller, body.get("path"), args, "query", body.get("format"), ts=ts)

    async def query_batch(self, request: Request, caller: Caller) -> Response:
        """``POST /api/query_batch``: up to :data:`MAX_BATCH_QUERIES` queries, all
        run in one read transaction (one snapshot, so one timestamp), within
        :data:`MAX_BATCH_SECONDS` and :data:`MAX_BATCH_RESPONSE_BYTES`, letting
        the event loop serve other clients after every entry."""
        body = parse_json_body(await request.body())
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list):
            raise BadRequest('query_batch takes {"queries": [{path, args, format}, ...]}')
        if len(queries) > MAX_BATCH_QUERIES:
            raise BadRequest(
                f"query_batch got {len(queries)} queries, over the limit of "
                f"{MAX_BATCH_QUERIES}: send them in several batches",
                code="TooManyQueries",
            )
        entries = [_batch_entry(item, i) for i, item in enumerate(queries)]
        full = reveals(dev=self.dev, admin=caller.admin)

        async def run_all(tx: ReadTransaction) -> list[bytes]:
            parts: list[bytes] = []
            size = 0
            spent = 0.0  # seconds spent running the entries
            count = len(entries)
            for i, (path, args, encode) in enumerate(entries):
                if i and spent >= MAX_BATCH_SECONDS:
                    return parts + self._not_run(
                        count - i,
                        full,
                        f"query_batch ran {i} of its {count} queries in {spent:.1f} s, the "
                        f"most one batch may take is {MAX_BATCH_SECONDS:g} s: queries[{i}] and "
                        f"the {count - i - 1} after it were not run; send them in another batch",
                        "BatchTimeLimit",
                    )
                started = time.perf_counter()
                try:
                    function, call_args = self.runtime.prepare(
                        path, args, kind="query", admin=caller.admin
                    )
                except Exception as exc:
                    outcome = Outcome(error=exc, log_lines=[], rejected=True)
                else:
                    outcome = await self.runtime.run_query_in(
                        tx, function, call_args, caller.identity
                    )
                part = _json_bytes(
                    outcome_body(outcome, encode, path=path, full=full, dev=self.dev)
                )
                del outcome  # the value is in the part now
                if size + len(part) > MAX_BATCH_RESPONSE_BYTES:
                    return parts + self._not_run(
                        count - i,
                        full,
                        f"query_batch's response would be {size + len(part)} bytes with "
                        f"queries[{i}], over the limit of {MAX_BATCH_RESPONSE_BYTES} bytes per "
                        f"response: queries[{i}] and the {count - i - 1} after it were not "
                        "answered; send them in another batch",
                        "BatchResponseTooLarge",
                    )
                parts.append(part)
                size += len(part)
                held = time.perf_counter() - started
                spent += held
                if i + 1 < count:
                    await make_room(held)  # other clients' requests run in between
            return parts

        try:
            parts = await self.runtime.read(run_all)
        except WriteConflict:
            raise StorageError(
                "query_batch could not get a consistent snapshot (the database kept "
                "cancelling it): retry"
            ) from None
        return Response(
            b'{"results":[' + b",".join(parts) + b"]}", content_type="application/json"
        )

    def _not_run(self, count: int, full: bool, message: str, code: str) -> list[bytes]:
        """The answers of ``count`` batch entries a limit left unanswered: one
        error, logged once."""
        failure = Failure(LimitExceeded(message, code=code), rejected=True)
        failure.report("query_batch", dev=self.dev)
        answer = _json_bytes({"status": "error", "errorMessage": failure.message(full=full)})
        return [answer] * count


def _json_bytes(data: Any) -> bytes:
    """``data`` as the JSON of a response body (as :func:`json_response` writes it)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _batch_entry(item: Any, i: int) -> tuple[str, dict[str, Any], Any]:
    """One ``query_batch`` entry checked: its path, arguments and encoder."""
    if not isinstance(item, dict):
        raise BadRequest(f"queries[{i}] must be an object, got {type(item).__name__}")
    path = item.get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest(
            f'queries[{i}].path must be a function path like "messages:list", got {path!r}'
        )
    return (
        path,
        decode_args(item.get("args"), what=f"queries[{i}].args"),
        _encoder(item.get("format")),
    )


def bad_request(exc: BasaltError) -> Response:
    return error_response(exc.http_status, exc.code, exc.message)
