"""The sync WebSocket protocol frame by frame (protocol.md §3), with a raw
``websockets`` client against a real ``basalt serve``: message shapes, version
chaining, FatalError/AuthError handling, heartbeats, slow consumers and
re-sent mutations."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex.http_client import ConvexHttpClient
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from basalt.server.websocket import MAX_FRAME_BYTES

from .harness import ADMIN_KEY, BasaltProcess, wait_until

ZERO_TS = "AAAAAAAAAAA="
#: Seconds a message the server owes us may take (a healthy server answers in ms).
STEP = 10.0
I64_MAX = 2**63 - 1


def decode_ts(text: str) -> int:
    raw = base64.b64decode(text, validate=True)
    assert len(raw) == 8, f"a ts must encode 8 bytes: {text!r}"
    ts = int.from_bytes(raw, "little")
    assert ts <= I64_MAX
    return ts


def encode_ts(ts: int) -> str:
    return base64.b64encode(ts.to_bytes(8, "little")).decode()


def connect_message(session_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "Connect",
        "sessionId": session_id or str(uuid.uuid4()),
        "connectionCount": 0,
        "lastCloseReason": "InitialConnect",
        "clientTs": 0,
        **extra,
    }


class SyncSocket:
    """One sync connection: sends client messages, receives server messages,
    and checks that every Transition starts where the previous one ended."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.version: dict[str, Any] = {"querySet": 0, "identity": 0, "ts": ZERO_TS}
        self.query_set = 0
        self.identity = 0
        self.next_request = 0
        #: the latest QueryUpdated value or QueryFailed modification of each query
        self.results: dict[int, Any] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float = STEP) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        if message.get("type") == "Transition":
            self._apply(message)
        return message

    def _apply(self, transition: dict[str, Any]) -> None:
        start, end = transition["startVersion"], transition["endVersion"]
        assert start == self.version, f"Transition does not chain: {transition}"
        assert end["querySet"] >= start["querySet"] and end["identity"] >= start["identity"]
        assert decode_ts(end["ts"]) >= decode_ts(start["ts"]), f"ts went back: {transition}"
        self.version = end
        for mod in transition["modifications"]:
            if mod["type"] == "QueryUpdated":
                self.results[mod["queryId"]] = mod["value"]
            elif mod["type"] == "QueryFailed":
                self.results[mod["queryId"]] = mod
            else:
                self.results.pop(mod["queryId"], None)

    def until(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = STEP
    ) -> list[dict[str, Any]]:
        """Messages up to and including the first ``wanted`` one."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self.recv(max(remaining, 0.001))
            except TimeoutError:
                raise AssertionError(f"timed out; received only {seen}") from None
            seen.append(message)
            if wanted(message):
                return seen

    def wait_result(
        self, query_id: int, wanted: Callable[[Any], bool], timeout: float = STEP
    ) -> Any:
        """Read until query ``query_id`` has a ``wanted`` result."""
        if query_id in self.results and wanted(self.results[query_id]):
            return self.results[query_id]
        self.until(lambda _: query_id in self.results and wanted(self.results[query_id]), timeout)
        return self.results[query_id]

    def modify(self, *modifications: dict[str, Any]) -> None:
        self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": self.query_set,
                "newVersion": self.query_set + 1,
                "modifications": list(modifications),
            }
        )
        self.query_set += 1

    def add(self, query_id: int, path: str, args: dict[str, Any], **extra: Any) -> None:
        self.modify({"type": "Add", "queryId": query_id, "udfPath": path, "args": [args], **extra})

    def request(self, kind: str, path: str, args: dict[str, Any]) -> int:
        request_id = self.next_request
        self.next_request += 1
        self.send({"type": kind, "requestId": request_id, "udfPath": path, "args": [args]})
        return request_id

    def mutate(
        self, path: str, args: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run a mutation; returns its response and every message up to the
        Transition that follows the response."""
        request_id = self.request("Mutation", path, args)
        messages = self.until(
            lambda m: m["type"] == "MutationResponse" and m["requestId"] == request_id
        )
        messages += self.until(lambda m: m["type"] == "Transition")
        response = next(m for m in messages if m["type"] == "MutationResponse")
        return response, messages

    def closed(self, timeout: float = STEP) -> list[dict[str, Any]]:
        """The messages the server sends before it closes the connection."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                seen.append(self.recv(max(remaining, 0.001)))
            except ConnectionClosed:
                return seen
            except TimeoutError:
                raise AssertionError(f"the server did not close; it sent {seen}") from None


@pytest.fixture
def open_sync() -> Iterator[Callable[..., SyncSocket]]:
    """Open sync connections (``Connect`` already sent); all closed at the end."""
    with contextlib.ExitStack() as stack:

        def make(url: str, path: str = "/api/sync", **connect_fields: Any) -> SyncSocket:
            ws = stack.enter_context(
                connect(
                    url.replace("http://", "ws://") + path,
                    max_size=None,
                    compression=None,
                    proxy=None,
                    open_timeout=STEP,
                    close_timeout=2,
                )
            )
            sync = SyncSocket(ws)
            sync.send(connect_message(**connect_fields))
            return sync

        yield make


@pytest.fixture
def sync(server: BasaltProcess, open_sync: Callable[..., SyncSocket]) -> SyncSocket:
    return open_sync(server.url)


# -- shapes and versions -------------------------------------------------------------


def _keys(message: dict[str, Any]) -> set[str]:
    return set(message)


@pytest.mark.parametrize("path", ["/api/sync", "/api/1.48.0/sync"])
def test_transition_shapes_and_version_chaining(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str, path: str
) -> None:
    sync = open_sync(server.url, path)
    sync.modify(
        {"type": "Add", "queryId": 0, "udfPath": "notes:bodies", "args": [{"tag": tag}]},
        {
            "type": "Add",
            "queryId": 1,
            "udfPath": "values:shout",
            "args": [{"text": "a"}],
            "journal": "j1",
        },
    )
    # One Transition from the initial version carries both results.
    first = sync.recv()
    assert first["type"] == "Transition", first
    assert _keys(first) <= {
        "type",
        "startVersion",
        "endVersion",
        "modifications",
        "serverTs",
        "clientClockSkew",
    }
    assert first["startVersion"] == {"querySet": 0, "identity": 0, "ts": ZERO_TS}
    end = first["endVersion"]
    assert _keys(end) == {"querySet", "identity", "ts"}
    assert (end["querySet"], end["identity"]) == (1, 0)
    assert decode_ts(end["ts"]) > 0
    # serverTs is a plain number of nanoseconds, not base64.
    assert isinstance(first["serverTs"], int)
    assert abs(first["serverTs"] - time.time_ns()) < 60 * 10**9
    mods = sorted(first["modifications"], key=lambda mod: mod["queryId"])
    assert mods[0] == {
        "type": "QueryUpdated",
        "queryId": 0,
        "value": [],
        "logLines": [],
        "journal": None,
    }
    assert _keys(mods[1]) == {"type", "queryId", "value", "logLines", "journal"}
    assert (mods[1]["value"], mods[1]["journal"]) == ("A", "j1")
    # Present, and empty: a production server sends log lines to admins only.
    assert mods[1]["logLines"] == []

    # A mutation: its response, and a Transition at or after its commit ts.
    response, messages = sync.mutate("notes:add", {"tag": tag, "body": "hello", "pos": 1.0})
    assert _keys(response) == {"type", "requestId", "success", "result", "ts", "logLines"}
    assert response["requestId"] == 0 and response["success"] is True
    assert isinstance(response["result"], str) and len(response["result"]) == 32
    assert response["logLines"] == []
    commit_ts = decode_ts(response["ts"])
    # npm resolves the mutation on the first Transition at or after its commit.
    assert messages[-1]["type"] == "Transition"
    assert decode_ts(messages[-1]["endVersion"]["ts"]) >= commit_ts
    sync.wait_result(0, lambda v: v == ["hello"])

    # A mutation failing with a ConvexError: ts null, errorData, and still a Transition.
    response, messages = sync.mutate(
        "values:fail_with", {"data": {"n": {"$integer": encode_ts(7)}}}
    )
    assert _keys(response) == {
        "type",
        "requestId",
        "success",
        "result",
        "ts",
        "logLines",
        "errorData",
    }
    assert (response["requestId"], response["success"], response["ts"]) == (1, False, None)
    assert "ConvexError" in response["result"]
    assert response["errorData"] == {"n": {"$integer": encode_ts(7)}}
    assert messages[-1]["type"] == "Transition"

    # An ordinary failure: no errorData at all.
    response, _ = sync.mutate("notes:add_many_then_fail", {"tag": tag, "count": 2.0})
    assert response["success"] is False and "errorData" not in response
    assert isinstance(response["result"], str)

    # An action: its response carries no ts.
    request_id = sync.request("Action", "values:echo_action", {"value": {"$integer": ZERO_TS}})
    [*_, action] = sync.until(lambda m: m["type"] == "ActionResponse")
    assert action == {
        "type": "ActionResponse",
        "requestId": request_id,
        "success": True,
        "result": {"$integer": ZERO_TS},
        "logLines": [],
    }

    # Removing a query: QueryRemoved, and the query set version moves on.
    sync.modify({"type": "Remove", "queryId": 0})
    [*_, removed] = sync.until(
        lambda m: m["type"] == "Transition" and m["endVersion"]["querySet"] == 2
    )
    assert {"type": "QueryRemoved", "queryId": 0} in removed["modifications"]
    assert 0 not in sync.results

    # Authenticate: each one moves the identity version by one.
    sync.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin", "value": ADMIN_KEY})
    [*_, as_admin] = sync.until(
        lambda m: m["type"] == "Transition" and m["endVersion"]["identity"] == 1
    )
    # Now an admin, the client is sent what was held back: the query's log lines.
    [shout] = [mod for mod in as_admin["modifications"] if mod["queryId"] == 1]
    assert all(isinstance(line, str) for line in shout["logLines"])
    assert any("shouting a" in line for line in shout["logLines"])
    sync.send({"type": "Authenticate", "baseVersion": 1, "tokenType": "None"})
    sync.until(lambda m: m["type"] == "Transition" and m["endVersion"]["identity"] == 2)
    assert sync.version["querySet"] == 2
    # Event messages are accepted and ignored.
    sync.send({"type": "Event", "eventType": "ClientConnect", "event": {"any": "thing"}})
    sync.add(5, "notes:bodies", {"tag": tag})
    sync.wait_result(5, lambda v: v == ["hello"])


def test_query_failed_shapes(sync: SyncSocket) -> None:
    # As an admin, who is told what the query raised.
    sync.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin", "value": ADMIN_KEY})
    sync.add(0, "values:boom", {})
    sync.add(1, "live:fail_with", {"data": {"code": "Q", "n": {"$integer": encode_ts(3)}}})
    plain = sync.wait_result(0, lambda r: isinstance(r, dict))
    assert _keys(plain) == {"type", "queryId", "errorMessage", "logLines", "journal"}
    assert plain["type"] == "QueryFailed" and plain["journal"] is None
    assert "kaboom: something broke" in plain["errorMessage"]
    assert plain["logLines"] == []
    convex = sync.wait_result(1, lambda r: isinstance(r, dict))
    assert convex["type"] == "QueryFailed" and "ConvexError" in convex["errorMessage"]
    assert convex["errorData"] == {"code": "Q", "n": {"$integer": encode_ts(3)}}


def test_integer_json_numbers_and_object_args(sync: SyncSocket, tag: str) -> None:
    """npm sends ``{"pos": 1}`` (an integer JSON number) and args as a bare object."""
    sync.send(
        {
            "type": "Mutation",
            "requestId": 0,
            "udfPath": "notes:add",
            "args": {"tag": tag, "body": "npm", "pos": 1},
        }
    )
    [*_, response] = sync.until(lambda m: m["type"] == "MutationResponse")
    assert response["success"] is True, response
    sync.add(0, "notes.js:list", {"tag": tag})
    [doc] = sync.wait_result(0, lambda v: isinstance(v, list))
    assert doc["pos"] == 1.0 and doc["body"] == "npm"


def _assert_silent(sync: SyncSocket, seconds: float) -> None:
    try:
        message = sync.recv(timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message}")


def test_unrelated_commit_sends_no_transition(
    sync: SyncSocket, client: ConvexHttpClient, tag: str
) -> None:
    """The Python client yields its values again on every Transition, so a
    client whose queries did not change must not get one (protocol.md §3.5)."""
    sync.add(0, "notes:bodies", {"tag": tag})
    sync.wait_result(0, lambda v: v == [])
    client.mutation("notes:add", {"tag": tag + "-other", "body": "elsewhere", "pos": 1.0})
    _assert_silent(sync, 1.0)
    client.mutation("notes:add", {"tag": tag, "body": "mine", "pos": 1.0})
    assert sync.wait_result(0, lambda v: v != []) == ["mine"]


# -- errors that end one connection ------------------------------------------------

FATAL_CASES = [
    pytest.param([], "{not json", "not valid JSON", id="malformed-json"),
    pytest.param([], "[1, 2]", "must be a JSON object", id="not-an-object"),
    pytest.param([], json.dumps({"type": "Bogus"}), "unknown message type", id="unknown-type"),
    pytest.param(
        [{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": []}],
        json.dumps(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 2, "modifications": []}
        ),
        "BaseVersionMismatch",
        id="modify-wrong-base-version",
    ),
    pytest.param(
        [],
        json.dumps(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 0, "modifications": []}
        ),
        "newVersion",
        id="modify-new-not-above-base",
    ),
    pytest.param(
        [],
        json.dumps(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": [{"type": "Remove", "queryId": 9}],
            }
        ),
        "not in the query set",
        id="remove-unknown-query",
    ),
    pytest.param(
        [],
        json.dumps({"type": "Authenticate", "baseVersion": 3, "tokenType": "None"}),
        "baseVersion",
        id="authenticate-wrong-base-version",
    ),
    pytest.param(
        [],
        json.dumps({"type": "Mutation", "requestId": 0, "args": [{}]}),
        "udfPath",
        id="mutation-without-path",
    ),
    pytest.param(
        [],
        json.dumps({"type": "Mutation", "requestId": -1, "udfPath": "notes:add", "args": [{}]}),
        "requestId",
        id="negative-request-id",
    ),
]


def _check_fatal(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
    bad_frames: list[str],
    pattern: str,
    timeout: float = STEP,
) -> None:
    """Send ``bad_frames`` on one connection: FatalError naming the problem, then
    that connection closes; another one keeps working and data is intact."""
    other = open_sync(server.url)
    other.add(0, "notes:bodies", {"tag": tag})
    other.mutate("notes:add", {"tag": tag, "body": "before", "pos": 1.0})
    other.wait_result(0, lambda v: v == ["before"])

    bad = open_sync(server.url)
    for frame in bad_frames:
        bad.ws.send(frame)
    messages = bad.closed(timeout)
    assert messages, "the server closed without a FatalError"
    fatal = messages[-1]
    assert _keys(fatal) == {"type", "error"} and fatal["type"] == "FatalError", messages
    assert re.search(pattern, fatal["error"]), fatal["error"]

    # The other connection still subscribes, mutates and gets updates.
    other.mutate("notes:add", {"tag": tag, "body": "after", "pos": 2.0})
    other.wait_result(0, lambda v: v == ["before", "after"])
    other.add(1, "notes:bodies", {"tag": tag})
    other.wait_result(1, lambda v: v == ["before", "after"])
    assert client.query("notes:bodies", {"tag": tag}) == ["before", "after"]


@pytest.mark.parametrize(("setup", "frame", "pattern"), FATAL_CASES)
def test_fatal_error_ends_only_that_connection(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
    setup: list[dict[str, Any]],
    frame: str,
    pattern: str,
) -> None:
    frames = [json.dumps(message) for message in setup] + [frame]
    _check_fatal(server, open_sync, client, tag, frames, pattern)


def _event_frame(size: int, filler: str = "x") -> str:
    """A valid Event message of exactly ``size`` characters."""
    head, tail = '{"type":"Event","eventType":"pad","event":"', '"}'
    return head + filler * (size - len(head) - len(tail)) + tail


def test_oversized_frame_is_a_fatal_error(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], client: ConvexHttpClient, tag: str
) -> None:
    frame = _event_frame(MAX_FRAME_BYTES + 1)
    _check_fatal(server, open_sync, client, tag, [frame], "over the limit")


def test_frame_at_the_limit_is_accepted(sync: SyncSocket, tag: str) -> None:
    sync.ws.send(_event_frame(MAX_FRAME_BYTES))
    sync.add(0, "notes:bodies", {"tag": tag})
    assert sync.wait_result(0, lambda v: True) == []


def test_oversized_frame_in_bytes_is_a_fatal_error(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], client: ConvexHttpClient, tag: str
) -> None:
    # 'é' is two bytes in UTF-8: about MAX/2 characters, just over MAX bytes.
    frame = _event_frame(MAX_FRAME_BYTES // 2 + 30, filler="é")
    assert len(frame.encode()) > MAX_FRAME_BYTES
    _check_fatal(server, open_sync, client, tag, [frame], "over the limit", timeout=3.0)


def test_connect_from_the_future_is_a_fatal_error(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], client: ConvexHttpClient, tag: str
) -> None:
    """A client that saw a newer ts than the server has (a replaced data folder):
    told so without the server's latest ts (which would tell its write activity)."""
    future = encode_ts(time.time_ns() + 3600 * 10**9)
    bad = json.dumps(connect_message(connectionCount=1, maxObservedTimestamp=future))
    _check_fatal(server, open_sync, client, tag, [bad], r"^[^0-9]*newer than[^0-9]*$")


def test_connect_with_an_observed_ts_reconnects(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    first = open_sync(server.url)
    first.add(0, "notes:bodies", {"tag": tag})
    first.wait_result(0, lambda v: v == [])
    seen = first.version["ts"]
    again = open_sync(
        server.url, connectionCount=1, lastCloseReason="InactiveServer", maxObservedTimestamp=seen
    )
    again.add(0, "notes:bodies", {"tag": tag})
    again.wait_result(0, lambda v: v == [])
    assert decode_ts(again.version["ts"]) >= decode_ts(seen)


# -- auth --------------------------------------------------------------------------


def test_bad_admin_key_is_an_auth_error_then_close(sync: SyncSocket, tag: str) -> None:
    sync.add(0, "notes:bodies", {"tag": tag})
    sync.wait_result(0, lambda v: v == [])
    sync.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "None"})
    sync.until(lambda m: m["type"] == "Transition" and m["endVersion"]["identity"] == 1)
    sync.send({"type": "Authenticate", "baseVersion": 1, "tokenType": "Admin", "value": "wrong"})
    messages = sync.closed()
    error = messages[-1]
    assert _keys(error) == {"type", "error", "baseVersion", "authUpdateAttempted"}
    assert error["type"] == "AuthError" and isinstance(error["error"], str) and error["error"]
    assert error["baseVersion"] == 1
    assert error["authUpdateAttempted"] is True


def test_bad_user_token_is_an_auth_error(sync: SyncSocket) -> None:
    sync.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": "nope"})
    error = sync.closed()[-1]
    assert error["type"] == "AuthError", error
    assert (error["baseVersion"], error["authUpdateAttempted"]) == (0, True)


# -- heartbeat ---------------------------------------------------------------------


def test_idle_connection_gets_a_json_ping(sync: SyncSocket, tag: str) -> None:
    started = time.monotonic()
    message = sync.recv(timeout=25.0)  # nothing is due before the ping
    waited = time.monotonic() - started
    assert message == {"type": "Ping"}
    assert 13.0 <= waited <= 20.0, waited
    # The connection is alive and well after it.
    sync.add(0, "notes:bodies", {"tag": tag})
    assert sync.wait_result(0, lambda v: True) == []


# -- re-sent mutations -------------------------------------------------------------


def _count(client: ConvexHttpClient, tag: str) -> int:
    return len(client.query("notes:list", {"tag": tag}))


def test_resent_mutation_is_not_applied_twice(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], client: ConvexHttpClient, tag: str
) -> None:
    session = str(uuid.uuid4())
    args = {"tag": tag, "body": "once", "pos": 1.0}
    first = open_sync(server.url, session_id=session)
    answer, _ = first.mutate("notes:add", args)
    assert answer["success"] is True
    first.ws.close()
    # npm keeps its sessionId on reconnect and re-sends with the same requestId.
    second = open_sync(server.url, session_id=session, connectionCount=1)
    again, _ = second.mutate("notes:add", args)
    assert again["success"] is True and again["result"] == answer["result"]
    assert _count(client, tag) == 1
    # Another session's requestId 0 is another mutation.
    third = open_sync(server.url)
    other, _ = third.mutate("notes:add", args)
    assert other["result"] != answer["result"]
    assert _count(client, tag) == 2


def test_mutation_resent_while_in_flight_is_not_applied_twice(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], client: ConvexHttpClient, tag: str
) -> None:
    session = str(uuid.uuid4())
    args = {"tag": tag, "body": "once", "pos": 1.0}
    first = open_sync(server.url, session_id=session)
    first.request("Mutation", "notes:add", args)
    first.ws.close()  # gone before reading the answer
    second = open_sync(server.url, session_id=session, connectionCount=1)
    again, _ = second.mutate("notes:add", args)
    assert again["success"] is True
    docs = client.query("notes:list", {"tag": tag})
    assert [d["_id"] for d in docs] == [again["result"]]


# -- a client that does not read ---------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class NonReader:
    """A sync client over a plain socket that subscribes and then never reads."""

    def __init__(self, url: str, subscriptions: list[dict[str, Any]]) -> None:
        uri = parse_uri(url.replace("http://", "ws://") + "/api/sync")
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(STEP)
        self.sock.connect((uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self.protocol.receive_data(self.sock.recv(65536))
        assert self.protocol.handshake_exc is None
        self.protocol.events_received()  # the handshake response
        self.send(connect_message())
        self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": subscriptions,
            }
        )

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def read_to_end(self, timeout: float) -> tuple[list[Frame], bool]:
        """Read everything until the server closes: the frames, and whether it
        ended with a close frame (rather than a reset or a bare EOF)."""
        deadline = time.monotonic() + timeout
        frames: list[Frame] = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except ConnectionResetError:
                return frames, False
            if not data:
                return frames, False
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                assert isinstance(event, Frame)
                frames.append(event)
                if event.opcode is Opcode.CLOSE:
                    return frames, True
        raise AssertionError(f"the server did not end the connection within {timeout} s")

    def close(self) -> None:
        self.sock.close()


def _server_holds_connection(pid: int, server_port: int, client_port: int) -> bool:
    """Whether the server process still has the socket of the connection from
    ``client_port`` open (found through /proc/net/tcp's inode)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                    and inode != "0"
                ):
                    inodes.add(f"socket:[{inode}]")
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return bool(inodes & links)


#: Characters of padding in each value pushed to the non-reading client, and how
#: many changes to push: 6000 x 40 kB would be 240 MB if the server queued them all.
PAD = 40_000
CHANGES = 6_000


def _flood(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], counter: str, changes: int
) -> float:
    """Bump ``counter`` ``changes`` times (pipelined); returns the peak RSS in MB."""
    writer = open_sync(server.url)
    window, sent, done = 20, 0, 0
    peak = _rss_mb(server.pid)
    while done < changes:
        while sent < changes and sent - done < window:
            writer.request("Mutation", "live:bump", {"id": counter})
            sent += 1
        message = writer.recv()
        if message["type"] == "MutationResponse":
            assert message["success"] is True, message
            done += 1
            if done % 100 == 0:
                peak = max(peak, _rss_mb(server.pid))
    return peak


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its memory and connections are measured)."""
    return basalt_process(basic_app, tmp_path / "data").start()


def test_slow_consumer_is_disconnected_with_bounded_memory(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    server = own_server
    http = server.client()
    counter = http.mutation("live:create", {"tag": tag})
    # Warm up the code paths the flood uses, then take the baseline.
    _flood(server, open_sync, counter, 50)
    baseline = _rss_mb(server.pid)
    slow = NonReader(
        server.url,
        [
            {
                "type": "Add",
                "queryId": 0,
                "udfPath": "live:padded",
                "args": [{"id": counter, "size": float(PAD)}],
            }
        ],
    )
    try:
        peak = _flood(server, open_sync, counter, CHANGES)
        assert peak - baseline < 200, f"RSS grew from {baseline:.0f} MB to {peak:.0f} MB"
        # Others are served: a new subscriber sees every change, HTTP answers.
        reader = open_sync(server.url)
        reader.add(0, "live:padded", {"id": counter, "size": 1.0})
        reader.wait_result(0, lambda v: v["value"] == 50.0 + CHANGES)
        assert http.query("live:padded", {"id": counter, "size": 0.0})["value"] == 50.0 + CHANGES
        # When the slow client finally reads, the connection ends after a part of
        # the changes: with a FatalError naming the problem if it ends cleanly.
        frames, clean = slow.read_to_end(timeout=STEP)
        texts = [json.loads(f.data) for f in frames if f.opcode is Opcode.TEXT]
        assert len(texts) < CHANGES
        if clean:
            assert texts and texts[-1]["type"] == "FatalError", texts[-3:]
            assert "not reading" in texts[-1]["error"]
    finally:
        slow.close()
    assert _rss_mb(server.pid) - baseline < 200


def test_slow_consumer_is_dropped_without_its_cooperation(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    server = own_server
    counter = server.client().mutation("live:create", {"tag": tag})
    server_port = int(server.url.rsplit(":", 1)[1])
    slow = NonReader(
        server.url,
        [
            {
                "type": "Add",
                "queryId": 0,
                "udfPath": "live:padded",
                "args": [{"id": counter, "size": float(PAD)}],
            }
        ],
    )
    try:
        assert wait_until(
            lambda: _server_holds_connection(server.pid, server_port, slow.port),
            STEP,
            "the server to accept the connection",
        )
        _flood(server, open_sync, counter, 3000)
        wait_until(
            lambda: not _server_holds_connection(server.pid, server_port, slow.port),
            3.0,
            "the server to drop the connection of a client that does not read",
        )
    finally:
        slow.close()


# -- one JSON number rule for HTTP bodies and WebSocket frames ----------------------

#: Numbers that JSON (as Python reads it) would turn into NaN or ±Infinity, and
#: the phrase both transports must use to refuse them.
NON_FINITE_NUMBERS = [
    pytest.param("NaN", "NaN is not valid JSON", id="nan-literal"),
    pytest.param("Infinity", "Infinity is not valid JSON", id="infinity-literal"),
    pytest.param("-Infinity", "-Infinity is not valid JSON", id="minus-infinity-literal"),
    pytest.param("1e400", "outside the float64 range", id="overflowing-exponent"),
    pytest.param("-1e400", "outside the float64 range", id="overflowing-negative"),
    pytest.param("9" * 400, "outside the float64 range", id="overflowing-digits"),
]


@pytest.mark.parametrize(("number", "phrase"), NON_FINITE_NUMBERS)
def test_one_json_number_rule_for_http_and_websocket(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
    number: str,
    phrase: str,
) -> None:
    """A NaN/Infinity literal or a number beyond float64 is refused over HTTP
    (400) and over the WebSocket (FatalError for that connection only), with
    the same explanation; only {"$float": ...} spells NaN and ±Infinity."""
    args = '{"tag": "' + tag + '", "body": "x", "pos": ' + number + "}"
    response = httpx.post(
        server.url + "/api/mutation",
        content=('{"path": "notes:add", "args": ' + args + "}").encode(),
        timeout=STEP,
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BadJsonBody"
    http_message = response.json()["message"]
    assert phrase in http_message and '{"$float": ...}' in http_message

    frame = '{"type": "Mutation", "requestId": 0, "udfPath": "notes:add", "args": [' + args + "]}"
    bad = open_sync(server.url)
    bad.ws.send(frame)
    messages = bad.closed(STEP)
    assert messages and messages[-1]["type"] == "FatalError", messages
    ws_message = messages[-1]["error"]
    # The same explanation, from where each names the problem on.
    assert ws_message[ws_message.index(phrase) :] == http_message[http_message.index(phrase) :]
    # Nothing was written, and others are still served.
    assert client.query("notes:bodies", {"tag": tag}) == []
    other = open_sync(server.url)
    other.mutate("notes:add", {"tag": tag, "body": "fine", "pos": 1.0})
    assert client.query("notes:bodies", {"tag": tag}) == ["fine"]
