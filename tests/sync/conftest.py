"""In-process harness for the sync layer: a real Runtime on the database
``BASALT_TEST_BACKEND`` selects (a temporary SQLite file, or a PostgreSQL schema
of the test, dropped at the end), a started :class:`SyncHub`, and
:class:`Client` objects that drive a :class:`SyncSession` with the JSON frames
an official client sends and check every message the session sends back,
keeping a client-side model of the query results (as the Convex clients do)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from basalt.errors import Unauthenticated
from basalt.runtime import App, Runtime
from basalt.schema import SchemaDefinition
from basalt.storage.base import Persistence
from basalt.storage.sqlite import SqliteEngine
from basalt.sync import SessionLimits, SyncHub, SyncSession
from basalt.testing.engines import drop_test_databases, engine_for_tests, selected_backend
from basalt.values.wire import to_convex_json

from . import app as app_module

ADMIN_KEY = "test-admin-key"


class FakeVerifier:
    """Admin key ``ADMIN_KEY``; user tokens ``user:<name>`` (anything else is refused)."""

    def is_admin_key(self, key: str) -> bool:
        return key == ADMIN_KEY

    async def verify_user_token(self, token: str) -> dict[str, Any]:
        if not token.startswith("user:"):
            raise Unauthenticated("Could not verify the token", code="InvalidAuthHeader")
        name = token.removeprefix("user:")
        return {"issuer": "https://test", "subject": name, "tokenIdentifier": f"test|{name}"}


def decode_ts(text: str) -> int:
    raw = base64.b64decode(text, validate=True)
    assert len(raw) == 8, text
    return int.from_bytes(raw, "little")


def _check_version(version: Any) -> tuple[int, int, int]:
    assert set(version) == {"querySet", "identity", "ts"}, version
    qs, ident = version["querySet"], version["identity"]
    assert type(qs) is int and 0 <= qs < 2**32, version
    assert type(ident) is int and 0 <= ident < 2**32, version
    ts = decode_ts(version["ts"])
    assert ts < 2**63
    return qs, ident, ts


def _check_log_lines(msg: dict[str, Any]) -> None:
    lines = msg["logLines"]
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines), msg


class Client:
    """One connection, driven like an official client would drive it."""

    def __init__(
        self, hub: SyncHub, name: str = "client", limits: SessionLimits | None = None
    ) -> None:
        self.hub = hub
        self.name = name
        self.session_id = str(uuid.uuid4())
        self.session = SyncSession(hub, FakeVerifier(), self._receive, self._close, limits)
        #: everything the server sent, in order (the JSON text round-tripped)
        self.received: list[dict[str, Any]] = []
        self.close_requested = False
        # The client's state, as the Convex clients keep it.
        self.version = (0, 0, 0)
        self.query_set_version = 0
        self.identity_version = 0
        self.next_query_id = 0
        self.next_request_id = 0
        #: query id → ("value", value) | ("error", message, errorData or absent marker)
        self.results: dict[int, tuple[Any, ...]] = {}
        #: query ids the client has added and not removed
        self.subscribed: set[int] = set()

    # -- what the server sends ------------------------------------------------
    def _receive(self, message: dict[str, Any]) -> None:
        # What goes on the wire is JSON: check it survives the trip.
        msg = json.loads(json.dumps(message, allow_nan=False))
        self.received.append(msg)
        kind = msg["type"]
        if kind == "Transition":
            self._apply(msg)
        elif kind == "MutationResponse":
            assert type(msg["requestId"]) is int
            assert isinstance(msg["success"], bool)
            _check_log_lines(msg)
            if msg["success"]:
                assert isinstance(msg["ts"], str), msg
                decode_ts(msg["ts"])
            else:
                assert msg["ts"] is None, msg
                assert isinstance(msg["result"], str), msg
        elif kind == "ActionResponse":
            assert type(msg["requestId"]) is int
            assert isinstance(msg["success"], bool)
            _check_log_lines(msg)
            assert "ts" not in msg
            if not msg["success"]:
                assert isinstance(msg["result"], str), msg
        elif kind == "AuthError" or kind == "FatalError":
            assert isinstance(msg["error"], str)
        else:
            raise AssertionError(f"unexpected message {msg}")

    def _apply(self, msg: dict[str, Any]) -> None:
        start = _check_version(msg["startVersion"])
        end = _check_version(msg["endVersion"])
        assert start == self.version, f"{self.name}: startVersion {start} != {self.version}"
        assert end[2] >= start[2], "ts went backwards"
        assert isinstance(msg["serverTs"], int)
        self.version = end
        assert isinstance(msg["modifications"], list)
        for mod in msg["modifications"]:
            qid = mod["queryId"]
            if mod["type"] == "QueryUpdated":
                _check_log_lines(mod)
                assert "journal" in mod
                self.results[qid] = ("value", mod["value"])
            elif mod["type"] == "QueryFailed":
                _check_log_lines(mod)
                assert isinstance(mod["errorMessage"], str)
                self.results[qid] = ("error", mod["errorMessage"], mod.get("errorData", MISSING))
            elif mod["type"] == "QueryRemoved":
                self.results.pop(qid, None)
            else:
                raise AssertionError(f"unknown modification {mod}")

    def _close(self) -> None:
        self.close_requested = True

    # -- what the client sends -------------------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        await self.session.handle(json.dumps(message))

    async def connect(self, max_observed_ts: int | None = None) -> None:
        msg: dict[str, Any] = {
            "type": "Connect",
            "sessionId": self.session_id,
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
        if max_observed_ts is not None:
            msg["maxObservedTimestamp"] = base64.b64encode(
                max_observed_ts.to_bytes(8, "little")
            ).decode()
        await self.send(msg)

    async def modify(self, modifications: list[dict[str, Any]]) -> None:
        base = self.query_set_version
        self.query_set_version += 1
        await self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": base + 1,
                "modifications": modifications,
            }
        )

    async def subscribe(self, path: str, args: dict[str, Any] | None = None) -> int:
        qid = self.next_query_id
        self.next_query_id += 1
        await self.modify([{"type": "Add", "queryId": qid, "udfPath": path, "args": [args or {}]}])
        self.subscribed.add(qid)
        return qid

    async def unsubscribe(self, qid: int) -> None:
        await self.modify([{"type": "Remove", "queryId": qid}])
        self.subscribed.discard(qid)

    async def request(self, kind: str, path: str, args: dict[str, Any] | None = None) -> int:
        rid = self.next_request_id
        self.next_request_id += 1
        await self.send({"type": kind, "requestId": rid, "udfPath": path, "args": [args or {}]})
        return rid

    async def mutation(self, path: str, args: dict[str, Any] | None = None) -> int:
        return await self.request("Mutation", path, args)

    async def action(self, path: str, args: dict[str, Any] | None = None) -> int:
        return await self.request("Action", path, args)

    async def authenticate(self, token_type: str, value: str | None = None, **extra: Any) -> None:
        msg: dict[str, Any] = {
            "type": "Authenticate",
            "baseVersion": self.identity_version,
            "tokenType": token_type,
            **extra,
        }
        if value is not None:
            msg["value"] = value
        self.identity_version += 1
        await self.send(msg)

    # -- reading what came back -----------------------------------------------
    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind]

    def response(self, request_id: int) -> dict[str, Any]:
        found = [
            m
            for m in self.received
            if m["type"] in ("MutationResponse", "ActionResponse") and m["requestId"] == request_id
        ]
        assert len(found) == 1, found
        return found[0]

    def value(self, qid: int) -> Any:
        result = self.results[qid]
        assert result[0] == "value", result
        return result[1]

    def mark(self) -> int:
        """A position in ``received``; ``since(mark)`` lists what came after."""
        return len(self.received)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.received[mark:]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class Env:
    """A runtime, its hub, and helpers to make clients and let the hub catch up."""

    def __init__(self, runtime: Runtime, hub: SyncHub) -> None:
        self.runtime = runtime
        self.hub = hub
        self.clients: list[Client] = []

    def client(self, name: str | None = None, limits: SessionLimits | None = None) -> Client:
        c = Client(self.hub, name or f"client{len(self.clients)}", limits)
        self.clients.append(c)
        return c

    async def connected(
        self, name: str | None = None, limits: SessionLimits | None = None
    ) -> Client:
        c = self.client(name, limits)
        await c.connect()
        return c

    async def settle(self) -> None:
        """Wait for every in-flight mutation and action, then run refresh cycles
        until the hub has nothing left to do."""
        for _ in range(20):
            for c in self.clients:
                await c.session.join_requests()
            await self.hub.cycle()
            if not self.hub.has_pending and not any(c.session.has_requests for c in self.clients):
                return
        raise AssertionError("the hub did not settle")

    async def fresh(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """The query's value at the current state (a new, independent run)."""
        return json.loads(json.dumps(to_convex_json(await self.runtime.query(path, args or {}))))


MakeEnv = Callable[..., Any]


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[MakeEnv]:
    made: list[Env] = []

    async def make(
        modules: dict[str, Any] | None = None,
        schema: SchemaDefinition | None = None,
        db: str = "db.sqlite3",
        durability: str = "process",
        dev: bool = False,
    ) -> Env:
        if modules is None:
            modules, schema = app_module.MODULES, app_module.schema
        app = App.from_modules(modules, schema=schema)
        if durability == "process" and selected_backend() == "postgres":
            engine: Persistence = engine_for_tests(tmp_path, db.removesuffix(".sqlite3"))
        else:  # durability="power" is a setting of the SQLite engine
            engine = SqliteEngine(tmp_path / db, durability=durability)
        runtime = Runtime(app, engine)
        await runtime.start()
        hub = SyncHub(runtime, dev=dev)
        hub.start()
        env = Env(runtime, hub)
        made.append(env)
        return env

    try:
        yield make
    finally:
        try:
            for env in made:
                for c in env.clients:
                    c.session.close()
                    await c.session.join_requests()
                await env.hub.stop()
                await env.runtime.stop()
        finally:
            await drop_test_databases(tmp_path)


@pytest.fixture
async def env(make_env: MakeEnv) -> Env:
    """A production hub (``basalt serve``): clients that are not admins are told
    no more of failures than Convex's ``[Request ID: …] Server Error``."""
    app_module.CALLS.clear()
    result: Env = await make_env()
    return result


@pytest.fixture
async def dev_env(make_env: MakeEnv) -> Env:
    """A development hub (``basalt dev``): every client is told everything."""
    app_module.CALLS.clear()
    result: Env = await make_env(dev=True)
    return result


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until ``predicate()`` holds (no timed sleeps)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"timed out waiting for {what}")
