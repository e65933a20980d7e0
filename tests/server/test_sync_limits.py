"""Every resource a sync WebSocket client controls has a limit, against a real
``basalt serve``: unread messages (per connection and for the whole server),
queries per connection and their bytes, requests in flight, and the answers
remembered for re-sent mutations. Each test has a client that misbehaves on
purpose while well-behaved clients keep being served."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex.http_client import ConvexHttpClient

from basalt.server.sync_queue import MAX_TOTAL_QUEUED_BYTES
from basalt.sync.limits import MAX_QUERIES, MAX_QUERY_SET_BYTES, MAX_REQUESTS_IN_FLIGHT
from basalt.sync.remembered import REMEMBERED_MUTATION_BYTES

from .harness import BasaltProcess, wait_until
from .test_sync_protocol import (  # the raw clients of the protocol tests
    STEP,
    NonReader,
    SyncSocket,
    _check_fatal,
    _rss_mb,
    open_sync,
)

__all__ = ["open_sync"]  # a fixture this module uses

MIB = 1 << 20


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its memory and connections are measured)."""
    return basalt_process(basic_app, tmp_path / "data").start()


def _stats(server: BasaltProcess) -> dict[str, Any]:
    response = httpx.get(
        server.url + "/api/stats",
        headers={"Authorization": f"Convex {server.admin_key}"},
        timeout=STEP,
    )
    response.raise_for_status()
    sync: dict[str, Any] = response.json()["sync"]
    return sync


# -- unread messages: the server's budget ---------------------------------------------

#: Characters in the result every slow client is subscribed to, how many clients
#: never read it, and how many times it changes: 40 x 120 x 0.5 MB = 2.4 GB if
#: the server queued everything (64 MiB per client before this limit: 2.5 GB).
PAD = 500_000
NON_READERS = 40
CHANGES = 120


class _Reader(threading.Thread):
    """A client that reads everything as it comes (in a thread of its own)."""

    def __init__(self, sync: SyncSocket, until: float) -> None:
        super().__init__(daemon=True)
        self.sync, self.until = sync, until
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sync.wait_result(0, lambda v: v["value"] == self.until, timeout=120)
        except BaseException as exc:
            self.error = exc


def test_slow_readers_are_dropped_within_the_servers_budget(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    server = own_server
    http = server.client()
    counter = http.mutation("live:create", {"tag": tag})
    writer = open_sync(server.url)
    writer.add(0, "live:padded", {"id": counter, "size": 1.0})
    writer.wait_result(0, lambda v: v["value"] == 0.0)
    baseline = _rss_mb(server.pid)
    # A client that reads the large result as fast as it comes: it must be served.
    fast = open_sync(server.url)
    fast.add(0, "live:padded", {"id": counter, "size": float(PAD)})
    fast.wait_result(0, lambda v: v["value"] == 0.0)
    reader = _Reader(fast, float(CHANGES))
    reader.start()
    slow = [
        NonReader(
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
        for _ in range(NON_READERS)
    ]
    try:
        wait_until(
            lambda: _stats(server)["connections"] == NON_READERS + 2, STEP, "every connection"
        )
        peak = baseline
        for n in range(1, CHANGES + 1):
            # The well-behaved client's mutations are answered, and its
            # subscription follows them.
            response, _ = writer.mutate("live:bump", {"id": counter})
            assert response["success"] is True and response["result"] == float(n), response
            peak = max(peak, _rss_mb(server.pid))
        writer.wait_result(0, lambda v: v["value"] == float(CHANGES))
        reader.join(timeout=120)
        assert reader.error is None, reader.error
        stats = _stats(server)
        # Every slow client was dropped; the fast one was not.
        assert stats["slowClientsDisconnected"] == NON_READERS, stats
        wait_until(lambda: _stats(server)["connections"] == 2, STEP, "the slow clients to go")
        budget_mb = MAX_TOTAL_QUEUED_BYTES / MIB
        assert stats["queuedBytesLimit"] == MAX_TOTAL_QUEUED_BYTES
        assert peak - baseline < budget_mb + 200, (
            f"RSS grew from {baseline:.0f} MiB to {peak:.0f} MiB "
            f"(the budget for unread messages is {budget_mb:.0f} MiB)"
        )
    finally:
        for client in slow:
            client.close()
    # Still serving: a new subscriber gets the current value.
    late = open_sync(server.url)
    late.add(0, "live:padded", {"id": counter, "size": 2.0})
    late.wait_result(0, lambda v: v["value"] == float(CHANGES))


def test_the_queue_budget_is_configurable(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(
        basic_app, tmp_path / "data", env={"BASALT_SYNC_QUEUE_MB": "48"}
    ).start()
    assert _stats(server)["queuedBytesLimit"] == 48 * MIB
    bad = basalt_process(
        basic_app, tmp_path / "other", env={"BASALT_SYNC_QUEUE_MB": "lots"}
    ).launch()
    assert bad.proc is not None
    assert bad.proc.wait(timeout=60) != 0
    assert "BASALT_SYNC_QUEUE_MB must be a positive integer, got 'lots'" in bad.output()


# -- the query set --------------------------------------------------------------------


def _adds(first: int, count: int, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "Add", "queryId": first + i, "udfPath": "notes:bodies", "args": [args]}
        for i in range(count)
    ]


def test_queries_over_the_limit_are_a_fatal_error(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
) -> None:
    # Up to the limit is fine.
    full = open_sync(server.url)
    full.modify(*_adds(0, MAX_QUERIES // 2, {"tag": tag}))
    full.modify(*_adds(MAX_QUERIES // 2, MAX_QUERIES - MAX_QUERIES // 2, {"tag": tag}))
    full.until(lambda m: m["type"] == "Transition" and m["endVersion"]["querySet"] == 2)
    assert len(full.results) == MAX_QUERIES
    # One message that goes over it ends the connection, and applies nothing.
    message = {
        "type": "ModifyQuerySet",
        "baseVersion": 0,
        "newVersion": 1,
        "modifications": _adds(0, MAX_QUERIES + 1, {"tag": tag}),
    }
    _check_fatal(
        server,
        open_sync,
        client,
        tag,
        [json.dumps(message)],
        rf"would make the query set hold {MAX_QUERIES + 1} queries, over the limit of "
        rf"{MAX_QUERIES} queries per connection",
    )


def test_queries_added_one_by_one_stop_at_the_configured_limit(
    basalt_process: Callable[..., BasaltProcess],
    basic_app: Path,
    tmp_path: Path,
    open_sync: Callable[..., SyncSocket],
    tag: str,
) -> None:
    server = basalt_process(
        basic_app, tmp_path / "data", env={"BASALT_SYNC_MAX_QUERIES": "3"}
    ).start()
    other = open_sync(server.url)
    other.add(0, "notes:bodies", {"tag": tag})
    other.wait_result(0, lambda v: v == [])
    bad = open_sync(server.url)
    for query_id in range(3):
        bad.add(query_id, "notes:bodies", {"tag": f"{tag}-{query_id}"})
    bad.until(lambda m: m["type"] == "Transition" and m["endVersion"]["querySet"] == 3)
    bad.add(3, "notes:bodies", {"tag": tag})
    fatal = bad.closed()[-1]
    assert fatal["type"] == "FatalError", fatal
    assert "hold 4 queries, over the limit of 3 queries per connection" in fatal["error"]
    response, _ = other.mutate("notes:add", {"tag": tag, "body": "still here", "pos": 1.0})
    assert response["success"] is True
    other.wait_result(0, lambda v: v == ["still here"])


def test_query_set_bytes_over_the_limit_are_a_fatal_error(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
) -> None:
    big = "x" * (6 * MIB)  # each Add fits in a frame; three do not fit in a query set
    frames = [
        json.dumps(
            {
                "type": "ModifyQuerySet",
                "baseVersion": i,
                "newVersion": i + 1,
                "modifications": _adds(i, 1, {"tag": big + str(i)}),
            }
        )
        for i in range(3)
    ]
    _check_fatal(
        server,
        open_sync,
        client,
        tag,
        frames,
        rf"adding query 2 \(\d+ bytes of arguments, journal and path\) would make the query "
        rf"set \d+ bytes, over the limit of {MAX_QUERY_SET_BYTES} bytes per connection",
    )


# -- requests in flight ---------------------------------------------------------------


def test_requests_in_flight_are_bounded_per_connection(
    server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    """A client that sends many actions at once: they all run, but no more than
    the limit at a time, and the server answers others meanwhile."""
    key = uuid.uuid4().hex
    count = 3 * MAX_REQUESTS_IN_FLIGHT
    busy = open_sync(server.url)
    ids = [
        busy.request("Action", "limits:hold", {"key": key, "seconds": 0.5}) for _ in range(count)
    ]
    other = open_sync(server.url)
    other.add(0, "notes:bodies", {"tag": tag})
    other.wait_result(0, lambda v: v == [])
    response, _ = other.mutate("notes:add", {"tag": tag, "body": "meanwhile", "pos": 1.0})
    assert response["success"] is True
    other.wait_result(0, lambda v: v == ["meanwhile"])
    answers = {}
    while len(answers) < count:
        message = busy.recv(timeout=30)
        if message["type"] == "ActionResponse":
            answers[message["requestId"]] = message
    assert sorted(answers) == sorted(ids)
    assert all(a["success"] for a in answers.values())
    most_at_once = max(a["result"] for a in answers.values())
    assert most_at_once <= MAX_REQUESTS_IN_FLIGHT, most_at_once


# -- remembered answers ---------------------------------------------------------------


def test_remembered_mutation_answers_are_bounded_in_bytes(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    """Each answer is kept so that a re-sent mutation is not applied twice; a
    client whose mutations return large values must not make the server keep
    them all."""
    server = own_server
    session_id = str(uuid.uuid4())
    sync = open_sync(server.url, session_id=session_id)
    sync.mutate("limits:add_large", {"tag": tag, "size": 10.0})
    baseline = _rss_mb(server.pid)
    size = MIB
    count = 300  # 300 MiB of answers if all were kept
    last: dict[str, Any] = {}
    for _ in range(count):
        last, _ = sync.mutate("limits:add_large", {"tag": tag, "size": float(size)})
        assert last["success"] is True
    grown = _rss_mb(server.pid) - baseline
    limit_mb = REMEMBERED_MUTATION_BYTES / MIB
    assert grown < limit_mb + 100, f"RSS grew by {grown:.0f} MiB"
    # The latest answers are still remembered: re-sent, it is not applied again.
    again = open_sync(server.url, session_id=session_id, connectionCount=1)
    again.send(
        {
            "type": "Mutation",
            "requestId": last["requestId"],
            "udfPath": "limits:add_large",
            "args": [{"tag": tag, "size": float(size)}],
        }
    )
    [*_, answer] = again.until(lambda m: m["type"] == "MutationResponse")
    assert answer == last
    assert len(server.client().query("notes:list", {"tag": tag})) == count + 1
