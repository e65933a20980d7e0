"""The messages of the Convex sync protocol (protocol.md §3), parsed and built.

Client messages are checked field by field; anything malformed raises
:class:`ProtocolError` naming the message type and the field, which the
connection reports as a ``FatalError``. Server messages are plain dicts ready
for ``json.dumps``; values inside them are already in the Convex JSON encoding.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from basalt.errors import BasaltError, InvalidValue
from basalt.values.wire import from_convex_json, parse_json

from .limits import MAX_SESSION_ID_CHARS

U32_MAX = 2**32 - 1


class ProtocolError(BasaltError):
    """A client message that breaks the protocol; the connection is closed."""

    code = "BadClientMessage"


def encode_ts(ts: int) -> str:
    """A timestamp as the wire's base64 of 8 little-endian bytes."""
    return base64.b64encode(ts.to_bytes(8, "little")).decode()


def decode_ts(text: Any, what: str) -> int:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ProtocolError(f"{what} must be a base64 u64 timestamp, got {text!r}") from None
    if len(raw) != 8:
        raise ProtocolError(f"{what} must encode 8 bytes, got {len(raw)}")
    return int.from_bytes(raw, "little")


# -- client → server ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    session_id: str
    connection_count: int
    last_close_reason: str | None
    max_observed_ts: int | None


@dataclass(frozen=True, slots=True)
class AddQuery:
    query_id: int
    udf_path: str
    args: dict[str, Any]
    journal: str | None
    component_path: str | None


@dataclass(frozen=True, slots=True)
class RemoveQuery:
    query_id: int


@dataclass(frozen=True, slots=True)
class ModifyQuerySet:
    base_version: int
    new_version: int
    modifications: list[AddQuery | RemoveQuery]


@dataclass(frozen=True, slots=True)
class FunctionRequest:
    """A ``Mutation`` or an ``Action``."""

    kind: str  # "mutation" | "action"
    request_id: int
    udf_path: str
    args: dict[str, Any]
    component_path: str | None
    #: the size of the frame it came in (large arguments are checked off the loop)
    size: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Authenticate:
    base_version: int
    token_type: str  # "User" | "Admin" | "None"
    value: str | None
    impersonating: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Event:
    event_type: str


ClientMessage = Connect | ModifyQuerySet | FunctionRequest | Authenticate | Event


def _field(msg: dict[str, Any], name: str, kind: str) -> Any:
    if name not in msg:
        raise ProtocolError(f"{kind} message is missing the field {name!r}")
    return msg[name]


def _u32(msg: dict[str, Any], name: str, kind: str) -> int:
    value = _field(msg, name, kind)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 <= value <= U32_MAX:
        raise ProtocolError(f"{kind}.{name} must be an integer in 0..2^32-1, got {value!r}")
    return value


def _str(msg: dict[str, Any], name: str, kind: str, *, optional: bool = False) -> Any:
    if optional and msg.get(name) is None:
        return None
    value = _field(msg, name, kind)
    if not isinstance(value, str):
        raise ProtocolError(f"{kind}.{name} must be a string, got {type(value).__name__}")
    return value


def _args(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    raw = _field(msg, "args", kind)
    if isinstance(raw, list):
        if len(raw) != 1:
            raise ProtocolError(f"{kind}.args must be a one-element array, got {len(raw)} elements")
        raw = raw[0]
    try:
        value = from_convex_json(raw)
    except InvalidValue as exc:
        raise ProtocolError(f"{kind}.args: {exc.message}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind}.args must hold an object, got {type(value).__name__}")
    return value


def parse(text: str | bytes) -> ClientMessage:
    """Parse one client frame."""
    try:
        msg = parse_json(text)  # the same number rule as HTTP bodies
    except InvalidValue as exc:
        raise ProtocolError(f"a message is not valid JSON: {exc.message}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    if "type" not in msg:
        raise ProtocolError("a message is missing the field 'type'")
    kind = msg["type"]
    if kind == "Connect":
        max_ts = msg.get("maxObservedTimestamp")
        reason = msg.get("lastCloseReason")
        session_id = _str(msg, "sessionId", kind)
        if len(session_id) > MAX_SESSION_ID_CHARS:
            raise ProtocolError(
                f"Connect.sessionId is {len(session_id)} characters long, over the limit of "
                f"{MAX_SESSION_ID_CHARS} (the official clients send a UUID)"
            )
        return Connect(
            session_id=session_id,
            connection_count=_u32(msg, "connectionCount", kind),
            last_close_reason=reason if isinstance(reason, str) else None,
            max_observed_ts=None
            if max_ts is None
            else decode_ts(max_ts, "Connect.maxObservedTimestamp"),
        )
    if kind == "ModifyQuerySet":
        raw_mods = _field(msg, "modifications", kind)
        if not isinstance(raw_mods, list):
            raise ProtocolError("ModifyQuerySet.modifications must be an array")
        mods: list[AddQuery | RemoveQuery] = []
        for i, mod in enumerate(raw_mods):
            where = f"ModifyQuerySet.modifications[{i}]"
            if not isinstance(mod, dict):
                raise ProtocolError(f"{where} must be an object")
            if mod.get("type") == "Add":
                journal = mod.get("journal")
                mods.append(
                    AddQuery(
                        query_id=_u32(mod, "queryId", where),
                        udf_path=_str(mod, "udfPath", where),
                        args=_args(mod, where),
                        journal=journal if isinstance(journal, str) else None,
                        component_path=_str(mod, "componentPath", where, optional=True),
                    )
                )
            elif mod.get("type") == "Remove":
                mods.append(RemoveQuery(query_id=_u32(mod, "queryId", where)))
            else:
                raise ProtocolError(
                    f'{where}.type must be "Add" or "Remove", got {mod.get("type")!r}'
                )
        return ModifyQuerySet(
            base_version=_u32(msg, "baseVersion", kind),
            new_version=_u32(msg, "newVersion", kind),
            modifications=mods,
        )
    if kind in ("Mutation", "Action"):
        return FunctionRequest(
            kind=kind.lower(),
            request_id=_u32(msg, "requestId", kind),
            udf_path=_str(msg, "udfPath", kind),
            args=_args(msg, kind),
            component_path=_str(msg, "componentPath", kind, optional=True),
            size=len(text),
        )
    if kind == "Authenticate":
        token_type = msg.get("tokenType")
        if token_type not in ("User", "Admin", "None"):
            raise ProtocolError(
                f'Authenticate.tokenType must be "User", "Admin" or "None", got {token_type!r}'
            )
        impersonating = msg.get("impersonating")
        return Authenticate(
            base_version=_u32(msg, "baseVersion", kind),
            token_type=token_type,
            value=None if token_type == "None" else _str(msg, "value", kind),
            impersonating=impersonating if isinstance(impersonating, dict) else None,
        )
    if kind == "Event":
        return Event(event_type=str(msg.get("eventType")))
    raise ProtocolError(f"unknown message type {kind!r}")


# -- server → client ---------------------------------------------------------------


def state_version(query_set: int, identity: int, ts: int) -> dict[str, Any]:
    return {"querySet": query_set, "identity": identity, "ts": encode_ts(ts)}


def transition(
    start: dict[str, Any], end: dict[str, Any], modifications: list[dict[str, Any]], server_ts: int
) -> dict[str, Any]:
    return {
        "type": "Transition",
        "startVersion": start,
        "endVersion": end,
        "modifications": modifications,
        "serverTs": server_ts,
    }


def query_updated(
    query_id: int, value: Any, log_lines: list[str], journal: str | None
) -> dict[str, Any]:
    return {
        "type": "QueryUpdated",
        "queryId": query_id,
        "value": value,
        "logLines": log_lines,
        "journal": journal,
    }


def query_failed(
    query_id: int,
    message: str,
    log_lines: list[str],
    journal: str | None,
    error_data: tuple[bool, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "QueryFailed",
        "queryId": query_id,
        "errorMessage": message,
        "logLines": log_lines,
        "journal": journal,
    }
    if error_data[0]:
        body["errorData"] = error_data[1]
    return body


def query_removed(query_id: int) -> dict[str, Any]:
    return {"type": "QueryRemoved", "queryId": query_id}


def mutation_response(
    request_id: int,
    *,
    success: bool,
    result: Any,
    ts: int | None,
    log_lines: list[str],
    error_data: tuple[bool, Any] = (False, None),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "MutationResponse",
        "requestId": request_id,
        "success": success,
        "result": result,
        "ts": None if ts is None else encode_ts(ts),
        "logLines": log_lines,
    }
    if error_data[0]:
        body["errorData"] = error_data[1]
    return body


def action_response(
    request_id: int,
    *,
    success: bool,
    result: Any,
    log_lines: list[str],
    error_data: tuple[bool, Any] = (False, None),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "ActionResponse",
        "requestId": request_id,
        "success": success,
        "result": result,
        "logLines": log_lines,
    }
    if error_data[0]:
        body["errorData"] = error_data[1]
    return body


def auth_error(message: str, base_version: int, *, attempted: bool = True) -> dict[str, Any]:
    return {
        "type": "AuthError",
        "error": message,
        "baseVersion": base_version,
        "authUpdateAttempted": attempted,
    }


def fatal_error(message: str) -> dict[str, Any]:
    return {"type": "FatalError", "error": message}


PING: dict[str, Any] = {"type": "Ping"}
