"""The official Python WebSocket client (PyPI ``convex`` 0.8.1, ``ConvexClient``,
built on the Rust client) against a real ``basalt serve``.

The client runs in a child process driven one step at a time (see
:class:`ClientProcess`): its blocking calls hold the GIL (protocol.md §6.3), and
it retries for ever when the server breaks the protocol, so in-process a server
bug would hang the test run instead of failing one test. Every step has a
deadline; a step that misses it kills the child and fails the test with the
child's log. Mutations that must be *pushed* to a subscription come from this
(the parent) process, over HTTP, while the child waits in ``next()``.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import pickle
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex import ConvexError, ConvexInt64
from convex.http_client import ConvexHttpClient

from .harness import ADMIN_KEY, BasaltProcess, port_outside_ephemeral_range
from .test_client import assert_integers_as_clients_need_them

ROOT = Path(__file__).resolve().parents[2]
#: Seconds one client step may take before the test fails (a healthy step takes ms).
STEP_TIMEOUT = 15.0


# -- the child process ---------------------------------------------------------------


def _driver() -> None:
    """The child's main loop: one ``ConvexClient``, one command at a time.

    Commands and replies are length-prefixed pickles on stdin and on a private
    copy of stdout; anything else the process prints goes to stderr.
    """
    from convex import ConvexClient

    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    commands = sys.stdin.buffer
    client = ConvexClient(sys.argv[1])
    subscriptions: dict[int, Any] = {}
    while True:
        header = commands.read(8)
        if len(header) < 8:
            return
        op, *params = pickle.loads(commands.read(int.from_bytes(header, "little")))
        reply: tuple[Any, ...]
        try:
            result: Any = None
            if op == "call":
                kind, name, args = params
                result = getattr(client, kind)(name, args)
            elif op == "subscribe":
                result = len(subscriptions)
                subscriptions[result] = client.subscribe(*params)
            elif op == "next":
                result = next(subscriptions[params[0]])
            elif op == "unsubscribe":
                subscriptions.pop(params[0]).unsubscribe()
            elif op == "set_admin_auth":
                client.set_admin_auth(params[0])
            elif op == "clear_auth":
                client.clear_auth()
            else:
                raise ValueError(f"unknown driver command {op!r}")
            reply = ("ok", result)
        except Exception as exc:
            reply = ("raised", type(exc).__name__, str(exc), getattr(exc, "data", None))
        body = pickle.dumps(reply)
        replies.write(len(body).to_bytes(8, "little") + body)


class RemoteError(Exception):
    """An exception other than ConvexError that the client raised in the child."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class ClientProcess:
    """A ``ConvexClient`` in a child process, called with deadlines."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.url, self.log_path = url, log_path
        code = "from tests.server.test_sync_client import _driver; _driver()"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )

    # -- plumbing ------------------------------------------------------------
    def send(self, *command: Any) -> None:
        assert self.proc.stdin is not None
        body = pickle.dumps(command)
        self.proc.stdin.write(len(body).to_bytes(8, "little") + body)
        self.proc.stdin.flush()

    def _read(self, n: int, deadline: float, what: str) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks, missing = [], n
        while missing:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0.0))
            if not ready:
                self.kill()
                raise AssertionError(
                    f"the ConvexClient did not finish {what} in time; its log:\n{self.log()}"
                )
            chunk = os.read(fd, missing)
            if not chunk:
                raise AssertionError(f"the client process died during {what}:\n{self.log()}")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def receive(self, what: str, timeout: float = STEP_TIMEOUT) -> Any:
        """The reply to the oldest command sent; raises what the client raised."""
        deadline = time.monotonic() + timeout
        size = int.from_bytes(self._read(8, deadline, what), "little")
        reply = pickle.loads(self._read(size, deadline, what))
        if reply[0] == "ok":
            return reply[1]
        _, kind, message, data = reply
        if kind == "ConvexError":
            raise ConvexError(message, data)
        raise RemoteError(kind, message)

    def request(self, *command: Any, timeout: float = STEP_TIMEOUT) -> Any:
        self.send(*command)
        return self.receive(f"{command[:2]}", timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    # -- the client's API ----------------------------------------------------
    def query(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self.request("call", "query", name, args)

    def mutation(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self.request("call", "mutation", name, args)

    def action(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self.request("call", "action", name, args)

    def set_admin_auth(self, key: str) -> None:
        self.request("set_admin_auth", key)

    def clear_auth(self) -> None:
        self.request("clear_auth")

    def subscribe(self, name: str, args: dict[str, Any]) -> Subscription:
        return Subscription(self, self.request("subscribe", name, args))


class Subscription:
    """A subscription living in a :class:`ClientProcess`."""

    def __init__(self, client: ClientProcess, number: int) -> None:
        self.client, self.number = client, number

    def next(self, timeout: float = STEP_TIMEOUT) -> Any:
        """The next value the subscription yields (``next()`` in the child)."""
        return self.client.request("next", self.number, timeout=timeout)

    def start_next(self) -> None:
        """Let the child block in ``next()``; collect with :meth:`finish_next`."""
        self.client.send("next", self.number)

    def finish_next(self, timeout: float = STEP_TIMEOUT) -> Any:
        return self.client.receive("a pushed value", timeout)

    def next_until(
        self, wanted: Callable[[Any], bool], timeout: float = STEP_TIMEOUT, *, pending: bool = False
    ) -> Any:
        """Read values until one is ``wanted`` (the Python client also yields
        the unchanged value on a Transition that did not change it)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            if not pending:
                self.start_next()
            pending = False
            remaining = deadline - time.monotonic()
            try:
                value = self.finish_next(max(remaining, 0.1))
            except AssertionError as exc:
                raise AssertionError(f"no wanted value among {seen!r}: {exc}") from None
            if wanted(value):
                return value
            seen.append(value)

    def unsubscribe(self) -> None:
        self.client.request("unsubscribe", self.number)


@pytest.fixture
def convex_client(tmp_path: Path) -> Iterator[Callable[[str], ClientProcess]]:
    """A factory of ConvexClients in child processes, all closed at the end."""
    started: list[ClientProcess] = []

    def make(url: str) -> ClientProcess:
        client = ClientProcess(url, tmp_path / f"client-{len(started)}.log")
        started.append(client)
        return client

    yield make
    for client in started:
        client.close()


@pytest.fixture
def ws(server: BasaltProcess, convex_client: Callable[[str], ClientProcess]) -> ClientProcess:
    """A ConvexClient connected to the shared server."""
    return convex_client(server.url)


@pytest.fixture
def admin_ws(server: BasaltProcess, convex_client: Callable[[str], ClientProcess]) -> ClientProcess:
    """A ConvexClient with the admin key (told everything of failed calls)."""
    client = convex_client(server.url)
    client.set_admin_auth(ADMIN_KEY)
    return client


# -- queries, mutations, actions ---------------------------------------------------


def test_query_mutation_action(ws: ClientProcess, client: ConvexHttpClient, tag: str) -> None:
    assert ws.query("notes:bodies", {"tag": tag}) == []
    note_id = ws.mutation("notes:add", {"tag": tag, "body": "over ws", "pos": 5.0})
    assert isinstance(note_id, str) and len(note_id) == 32
    # The write is committed: the HTTP API sees it too, and so does a query on the socket.
    assert [d["_id"] for d in client.query("notes:list", {"tag": tag})] == [note_id]
    assert ws.query("notes:bodies", {"tag": tag}) == ["over ws"]
    result = ws.action("relay:add_all", {"tag": tag, "bodies": ["a", "b"]})
    assert result == {"bodies": ["a", "b", "over ws"], "count": 3.0}
    assert type(result["count"]) is float
    # A path with the ``.js`` suffix (the Rust client adds it on resubscribe) is the same function.
    assert ws.query("notes.js:bodies", {"tag": tag}) == ["a", "b", "over ws"]


def test_plain_ints_arrive_as_numbers_and_int64s_as_int64(
    ws: ClientProcess, client: ConvexHttpClient, tag: str
) -> None:
    """As over HTTP (see test_client.py): queries and a subscription's values."""
    ws.mutation("values:store_count", {"tag": tag, "n": 41})
    counts = ws.query("values:counts", {"tag": tag})
    assert_integers_as_clients_need_them(counts, ws.query("values:count_int64", {"tag": tag}))
    sub = ws.subscribe("values:counts", {"tag": tag})
    assert_integers_as_clients_need_them(sub.next(), ws.query("values:count_int64", {"tag": tag}))
    client.mutation("values:store_count", {"tag": tag, "n": 42})
    pushed = sub.next_until(lambda value: value["count"] == 2.0)
    assert type(pushed["count"]) is float and type(pushed["explicit"]) is ConvexInt64


def test_query_log_lines_do_not_disturb_the_value(ws: ClientProcess) -> None:
    assert ws.query("values:shout", {"text": "hey"}) == "HEY"


def test_convex_error_from_a_mutation(ws: ClientProcess) -> None:
    data = {"code": "NOPE", "n": ConvexInt64(7), "list": [1.5, None, True, b"\x01"]}
    with pytest.raises(ConvexError) as info:
        ws.mutation("values:fail_with", {"data": data})
    assert info.value.data == data
    assert isinstance(info.value.data["n"], ConvexInt64)


def test_convex_error_with_string_data(ws: ClientProcess) -> None:
    with pytest.raises(ConvexError) as info:
        ws.mutation("values:fail_with", {"data": "plain message"})
    assert info.value.data == "plain message"


def test_convex_error_from_an_action_and_a_query(ws: ClientProcess) -> None:
    with pytest.raises(ConvexError) as info:
        ws.action("relay:fail_inside", {"data": {"code": "DEEP"}})
    assert info.value.data == {"code": "DEEP"}
    with pytest.raises(ConvexError) as info:
        ws.query("live:fail_with", {"data": {"code": "Q", "n": ConvexInt64(-1)}})
    assert info.value.data == {"code": "Q", "n": ConvexInt64(-1)}


def test_ordinary_error_is_an_exception_with_the_message(
    ws: ClientProcess, admin_ws: ClientProcess, tag: str
) -> None:
    with pytest.raises(RemoteError) as info:
        admin_ws.query("values:boom")
    assert info.value.kind == "Exception"
    assert "kaboom: something broke" in info.value.message
    # Anyone else is told Convex's production answer.
    with pytest.raises(RemoteError) as info:
        ws.query("values:boom")
    assert info.value.kind == "Exception"
    assert re.fullmatch(r"\[Request ID: [0-9a-f]+\] Server Error", info.value.message)
    with pytest.raises(RemoteError, match="Could not find public function"):
        ws.mutation("notes:no_such_function", {"tag": tag})
    # The client is still usable after errors.
    assert ws.query("notes:bodies", {"tag": tag}) == []


def test_failed_mutation_writes_nothing(ws: ClientProcess, tag: str) -> None:
    with pytest.raises(ConvexError) as info:
        ws.mutation("notes:add_then_fail", {"tag": tag})
    assert info.value.data == {"code": "FAILED_AFTER_INSERT"}
    assert ws.query("notes:bodies", {"tag": tag}) == []


# -- values ------------------------------------------------------------------------

ROUND_TRIP = [
    pytest.param(ConvexInt64(-5), id="int64-minus-5"),
    pytest.param(ConvexInt64(2**62), id="int64-2^62"),
    pytest.param(ConvexInt64(-(2**63)), id="int64-min"),
    pytest.param(b"\x00\x01\xfe\xff" * 3, id="bytes"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(2.0, id="float-whole"),
    pytest.param(-math.inf, id="float-minus-inf"),
    pytest.param("é\u2603\U0001f600", id="unicode"),
    pytest.param(
        {"i": ConvexInt64(7), "b": b"\x00", "f": [0.5, 1e300], "n": None, "t": True, "_x": "y"},
        id="nested",
    ),
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_values_round_trip_over_the_websocket(ws: ClientProcess, tag: str, value: Any) -> None:
    assert ws.query("values:echo", {"value": value}) == value
    assert ws.action("values:echo_action", {"value": value}) == value
    ws.mutation("values:store", {"tag": tag, "value": value})
    assert ws.query("values:load", {"tag": tag}) == [value]


def test_nan_and_negative_zero_round_trip(ws: ClientProcess, tag: str) -> None:
    nan, zero = ws.query("values:echo", {"value": [math.nan, -0.0]})
    assert math.isnan(nan)
    assert zero == 0.0 and math.copysign(1.0, zero) == -1.0
    ws.mutation("values:store", {"tag": tag, "value": {"nan": math.nan, "zero": -0.0}})
    [stored] = ws.query("values:load", {"tag": tag})
    assert math.isnan(stored["nan"]) and math.copysign(1.0, stored["zero"]) == -1.0
    # The server received real floats (not strings or ints).
    described = ws.query("values:describe", {"value": -0.0})
    assert described["type"] == "float" and math.copysign(1.0, described["value"]) == -1.0
    assert ws.query("values:describe", {"value": ConvexInt64(3)})["type"] == "Int64"


# -- subscriptions -----------------------------------------------------------------


def test_subscription_gets_a_value_pushed_by_another_process(
    ws: ClientProcess, client: ConvexHttpClient, tag: str
) -> None:
    sub = ws.subscribe("notes:bodies", {"tag": tag})
    assert sub.next() == []
    # The child blocks in next() (holding its GIL); this process writes over HTTP.
    sub.start_next()
    time.sleep(0.2)
    client.mutation("notes:add", {"tag": tag, "body": "pushed!", "pos": 1.0})
    assert sub.next_until(lambda v: v != [], pending=True) == ["pushed!"]
    client.mutation("notes:add", {"tag": tag, "body": "again", "pos": 2.0})
    assert sub.next_until(lambda v: len(v) == 2) == ["pushed!", "again"]


def test_own_mutation_updates_the_subscription(ws: ClientProcess, tag: str) -> None:
    sub = ws.subscribe("notes:bodies", {"tag": tag})
    assert sub.next() == []
    ws.mutation("notes:add", {"tag": tag, "body": "mine", "pos": 1.0})
    # A successful mutation resolves only with a Transition at or after its commit,
    # so the subscription has the new value by now.
    assert sub.next_until(lambda v: v != []) == ["mine"]
    sub.unsubscribe()
    ws.mutation("notes:add", {"tag": tag, "body": "later", "pos": 2.0})
    assert ws.query("notes:bodies", {"tag": tag}) == ["mine", "later"]


def test_subscription_to_a_failing_query_yields_convex_error_data(ws: ClientProcess) -> None:
    sub = ws.subscribe("live:fail_with", {"data": {"code": "SUB", "n": ConvexInt64(9)}})
    with pytest.raises(ConvexError) as info:
        sub.next()
    assert info.value.data == {"code": "SUB", "n": ConvexInt64(9)}


def test_subscription_to_a_query_failing_with_a_plain_error(
    ws: ClientProcess, admin_ws: ClientProcess, tag: str
) -> None:
    sub = admin_ws.subscribe("values:boom", {})
    with pytest.raises(RemoteError, match="kaboom: something broke") as info:
        sub.next()
    assert info.value.kind == "Exception"
    with pytest.raises(RemoteError, match=r"^Exception: \[Request ID: [0-9a-f]+\] Server Error$"):
        ws.subscribe("values:boom", {}).next()
    # Another subscription of the same client is not affected.
    assert ws.subscribe("notes:bodies", {"tag": tag}).next() == []


def test_two_clients_get_the_same_update(
    server: BasaltProcess,
    convex_client: Callable[[str], ClientProcess],
    client: ConvexHttpClient,
    tag: str,
) -> None:
    first, second = convex_client(server.url), convex_client(server.url)
    subs = [c.subscribe("notes:bodies", {"tag": tag}) for c in (first, second)]
    assert [s.next() for s in subs] == [[], []]
    for s in subs:
        s.start_next()
    client.mutation("notes:add", {"tag": tag, "body": "both", "pos": 1.0})
    for s in subs:
        assert s.next_until(lambda v: v != [], pending=True) == ["both"]


def test_subscription_sees_an_update_in_place(
    ws: ClientProcess, client: ConvexHttpClient, tag: str
) -> None:
    # counters:get reads the blobs row through the by_tag index; increment patches it.
    client.mutation("counters:increment", {"tag": tag})
    sub = ws.subscribe("counters:get", {"tag": tag})
    assert sub.next() == 1.0
    client.mutation("counters:increment", {"tag": tag})
    assert sub.next_until(lambda v: v == 2.0, timeout=3.0) == 2.0


# -- auth --------------------------------------------------------------------------


def test_admin_auth_over_the_websocket_and_clear_auth(ws: ClientProcess, tag: str) -> None:
    ws.mutation("notes:add", {"tag": tag, "body": "x", "pos": 1.0})
    with pytest.raises(RemoteError, match="Could not find public function"):
        ws.query("notes:secret_count", {"tag": tag})
    ws.set_admin_auth(ADMIN_KEY)
    assert ws.query("notes:secret_count", {"tag": tag}) == 1.0
    assert isinstance(ws.mutation("notes:secret_add", {"tag": tag}), str)
    sub = ws.subscribe("notes:secret_count", {"tag": tag})
    assert sub.next() == 2.0
    sub.unsubscribe()
    ws.clear_auth()
    with pytest.raises(RemoteError, match="Could not find public function"):
        ws.query("notes:secret_count", {"tag": tag})
    # Public functions still work after clearing auth.
    assert ws.query("notes:bodies", {"tag": tag}) == ["secret", "x"]


# -- restarts ----------------------------------------------------------------------


def _latest_ts(url: str) -> int:
    response = httpx.post(url + "/api/query_ts", timeout=10.0)
    response.raise_for_status()
    return int.from_bytes(base64.b64decode(response.json()["ts"]), "little")


def test_subscription_survives_kill_9_and_restart(
    basalt_process: Callable[..., BasaltProcess],
    convex_client: Callable[[str], ClientProcess],
    basic_app: Path,
    tmp_path: Path,
    tag: str,
) -> None:
    data = tmp_path / "data"
    # Both servers listen on one port the clients' own source ports never take.
    port = port_outside_ephemeral_range()
    first = basalt_process(basic_app, data, port=port).start()
    ws = convex_client(first.url)
    sub = ws.subscribe("notes:bodies", {"tag": tag})
    assert sub.next() == []
    first.client().mutation("notes:add", {"tag": tag, "body": "before", "pos": 1.0})
    assert sub.next_until(lambda v: v != []) == ["before"]
    ts_before = _latest_ts(first.url)

    first.kill9()
    second = basalt_process(basic_app, data, port=port)
    second.start()
    assert second.url == first.url
    assert _latest_ts(second.url) >= ts_before, "the server's clock went backwards"
    # The client reconnects by itself (with backoff), sends the newest ts it saw,
    # resubscribes, and then gets values pushed by the new server.
    second.client().mutation("notes:add", {"tag": tag, "body": "after", "pos": 2.0})
    assert sub.next_until(lambda v: len(v) == 2, timeout=40.0) == ["before", "after"]
    # Its own mutations work on the new connection too.
    ws.mutation("notes:add", {"tag": tag, "body": "mine", "pos": 3.0})
    assert sub.next_until(lambda v: len(v) == 3) == ["before", "after", "mine"]


# -- basalt dev reloads ------------------------------------------------------------

RELOADED_V1 = """
from basalt import query, v


@query(args={"tag": v.string()})
async def count(ctx, tag):
    docs = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return len(docs)


@query(args={"tag": v.string()})
async def doomed(ctx, tag):
    return "here"
"""

# The edit: count changes, doomed goes away.
RELOADED_V2 = """
from basalt import query, v


@query(args={"tag": v.string()})
async def count(ctx, tag):
    docs = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return 1000 + len(docs)
"""


def test_a_dev_reload_reruns_live_subscriptions_with_the_new_code(
    basalt_process: Callable[..., BasaltProcess],
    convex_client: Callable[[str], ClientProcess],
    basic_app: Path,
    tmp_path: Path,
    tag: str,
) -> None:
    module = basic_app / "reloaded.py"
    module.write_text(RELOADED_V1)
    dev = basalt_process(basic_app, tmp_path / "data", command="dev").start()
    writer = dev.client()
    ws = convex_client(dev.url)
    count = ws.subscribe("reloaded:count", {"tag": tag})
    assert count.next() == 0.0
    doomed = ws.subscribe("reloaded:doomed", {"tag": tag})
    assert doomed.next() == "here"
    for i in range(3):
        writer.mutation("values:store", {"tag": tag, "value": float(i)})
    assert count.next_until(lambda n: n == 3.0) == 3.0
    ts = _latest_ts(dev.url)

    # The edit (no commit follows).
    mark = len(dev.output())
    module.write_text(RELOADED_V2)
    dev.wait_for_output("reloaded after changes to reloaded.py", start=mark)
    assert count.next_until(lambda n: n != 3.0) == 1003.0
    assert _latest_ts(dev.url) == ts
    # A query that no longer exists fails, as a fresh subscription to it would.
    with pytest.raises(RemoteError, match="reloaded:doomed"):
        doomed.next_until(lambda value: value != "here")

    # A later commit re-runs the new code.
    writer.mutation("values:store", {"tag": tag, "value": 3.0})
    assert count.next_until(lambda n: n != 1003.0) == 1004.0
