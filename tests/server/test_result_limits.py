"""What query results may hold on a real ``basalt serve``: subscriptions whose
arguments differ by float noise (each a separate execution of a 1 MiB query)
stop at the connection's limit, the server's results stay within its own
limit, and a ``query_batch`` response is capped in bytes — while well-behaved
clients keep being served."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from basalt.server.http_api import MAX_BATCH_RESPONSE_BYTES
from basalt.sync.limits import MAX_RESULT_BYTES

from .harness import BasaltProcess
from .test_sync_protocol import STEP, SyncSocket, _rss_mb, open_sync

__all__ = ["open_sync"]  # a fixture this module uses

MIB = 1 << 20
#: The JSON of ``limits:big`` with ``kib`` = 1024: a string of 1 MiB, quoted.
BIG = MIB + 2


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its memory is measured)."""
    return basalt_process(basic_app, tmp_path / "data").start()


def _big(query_id: int, kib: float = 1024.0) -> dict[str, Any]:
    return {
        "type": "Add",
        "queryId": query_id,
        "udfPath": "limits:big",
        "args": [{"kib": kib, "salt": query_id * 1e-9}],
    }


def _stats(server: BasaltProcess) -> dict[str, Any]:
    response = httpx.get(
        server.url + "/api/stats",
        headers={"Authorization": f"Convex {server.admin_key}"},
        timeout=STEP,
    )
    response.raise_for_status()
    sync: dict[str, Any] = response.json()["sync"]
    return sync


def test_subscriptions_hold_a_bounded_amount_of_results(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    """100 subscriptions to a 1 MiB result (100 MiB in one Transition before
    this limit): those over the connection's 32 MiB fail, naming the limit."""
    server = own_server
    polite = open_sync(server.url)
    polite.add(0, "notes:bodies", {"tag": tag})
    polite.wait_result(0, lambda v: v == [])
    baseline = _rss_mb(server.pid)
    greedy = open_sync(server.url)
    greedy.modify(*[_big(i) for i in range(100)])
    # The well-behaved client is served meanwhile.
    for i in range(3):
        response, _ = polite.mutate("notes:add", {"tag": tag, "body": str(i), "pos": float(i)})
        assert response["success"] is True
    polite.wait_result(0, lambda v: len(v) == 3, timeout=60)
    frame = greedy.ws.recv(timeout=120)  # measured as it came
    transition = json.loads(frame)
    assert transition["type"] == "Transition"
    greedy._apply(transition)
    grown = _rss_mb(server.pid) - baseline
    mods = transition["modifications"]
    served = [m for m in mods if m["type"] == "QueryUpdated"]
    failed = [m for m in mods if m["type"] == "QueryFailed"]
    assert len(served) == MAX_RESULT_BYTES // BIG and len(failed) == 100 - len(served)
    for m in failed:
        message = m["errorMessage"].split("\n", 1)[1]
        assert message.startswith(f"ResultsTooLarge: this query's result ({BIG} bytes as JSON)")
        assert f"over the limit of {MAX_RESULT_BYTES} bytes per connection" in message
    assert len(frame) < MAX_RESULT_BYTES + MIB
    assert grown < 400, f"RSS grew by {grown:.0f} MiB"
    stats = _stats(server)
    assert stats["resultsRefused"] == len(failed)
    assert stats["resultBytes"] < MAX_RESULT_BYTES + MIB
    # Removing queries makes room for a refused one added again.
    greedy.modify(
        {"type": "Remove", "queryId": served[0]["queryId"]},
        {"type": "Remove", "queryId": failed[0]["queryId"]},
        _big(1000),
    )
    assert greedy.wait_result(1000, lambda v: True, timeout=60) == "x" * MIB


def test_the_result_limits_are_configurable(
    basalt_process: Callable[..., BasaltProcess],
    basic_app: Path,
    tmp_path: Path,
    open_sync: Callable[..., SyncSocket],
) -> None:
    """2 MiB per connection, 4 MiB for the server, results of 1.5 MiB: a second
    one on a connection fails; a third on the server fails while it holds two,
    and is served once one of them is gone."""
    server = basalt_process(
        basic_app,
        tmp_path / "data",
        env={"BASALT_SYNC_CONNECTION_RESULTS_MB": "2", "BASALT_SYNC_RESULTS_MB": "4"},
    ).start()
    assert _stats(server)["resultBytesLimit"] == 4 * MIB
    size = 1.5 * 1024
    value = "x" * int(size * 1024)
    a = open_sync(server.url)
    a.modify(_big(0, size))
    a.wait_result(0, lambda v: v == value)
    a.modify(_big(1, size))
    refused = a.wait_result(1, lambda v: isinstance(v, dict))
    assert f"over the limit of {2 * MIB} bytes per connection" in refused["errorMessage"]
    b = open_sync(server.url)
    b.modify(_big(2, size))
    b.wait_result(2, lambda v: v == value)
    c = open_sync(server.url)
    c.modify(_big(3, size))
    full = c.wait_result(3, lambda v: isinstance(v, dict))
    assert f"over its limit of {4 * MIB} bytes" in full["errorMessage"]
    c.modify(_big(4, 1.0))
    assert c.wait_result(4, lambda v: v == "x" * 1024)  # a small result still fits
    a.ws.close()  # room: the refused result runs again
    c.wait_result(3, lambda v: v == value, timeout=60)
    assert _stats(server)["resultBytes"] <= 4 * MIB
    bad = basalt_process(
        basic_app, tmp_path / "other", env={"BASALT_SYNC_RESULTS_MB": "0"}
    ).launch()
    assert bad.proc is not None
    assert bad.proc.wait(timeout=60) != 0
    assert "BASALT_SYNC_RESULTS_MB must be a positive integer, got '0'" in bad.output()


def test_a_batch_response_is_capped_in_bytes(server: BasaltProcess, tag: str) -> None:
    """40 queries of 1 MiB in one batch (a 40 MiB response before this limit):
    those that fit are answered, the others say they were not."""
    query = {"path": "limits:big", "args": {"kib": 1024.0}, "format": "json"}
    response = httpx.post(
        server.url + "/api/query_batch", json={"queries": [query] * 40}, timeout=120
    )
    assert response.status_code == 200
    assert len(response.content) < MAX_BATCH_RESPONSE_BYTES + 64 * 1024
    results = response.json()["results"]
    count = MAX_BATCH_RESPONSE_BYTES // (BIG + len('{"status":"success","value":},'))
    assert [r["status"] for r in results] == ["success"] * count + ["error"] * (40 - count)
    message = results[count]["errorMessage"].split("\n", 1)[1]
    assert message.startswith(
        "BatchResponseTooLarge: query_batch's response would be "
    ) and message.endswith(
        f"bytes with queries[{count}], over the limit of {MAX_BATCH_RESPONSE_BYTES} bytes per "
        f"response: queries[{count}] and the {39 - count} after it were not answered; send them "
        "in another batch"
    )
    assert httpx.post(
        server.url + "/api/query", json={"path": "notes:bodies", "args": {"tag": tag}}
    ).json() == {"status": "success", "value": []}
