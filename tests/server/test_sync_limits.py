"""Every resource a sync WebSocket client controls has a limit, against a real
``basalt serve``: queries per connection and their bytes, requests in flight,
and the answers remembered for re-sent mutations. Each test has a client that
misbehaves on purpose while well-behaved clients keep being served."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from convex.http_client import ConvexHttpClient

from basalt.sync.limits import MAX_QUERIES, MAX_QUERY_SET_BYTES, MAX_REQUESTS_IN_FLIGHT
from basalt.sync.remembered import REMEMBERED_MUTATION_BYTES

from .harness import BasaltProcess
from .test_sync_protocol import (  # the raw clients of the protocol tests
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
