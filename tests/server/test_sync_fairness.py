"""One client's many slow queries share a real ``basalt serve`` with everyone
else: subscriptions added in one message run a turn at a time, and a
``query_batch`` one query at a time, with other clients served in between; a
batch stops at its time budget. Slow queries here compute for 0.4 s each
(within the 1 s limit)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from basalt.server.http_api import MAX_BATCH_SECONDS

from .harness import BasaltProcess
from .test_sync_protocol import STEP, SyncSocket, open_sync

__all__ = ["open_sync"]  # a fixture this module uses

SLOW = 0.4


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its event loop is kept busy)."""
    return basalt_process(basic_app, tmp_path / "data").start()


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    executor = concurrent.futures.ThreadPoolExecutor(2)
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def test_many_slow_subscriptions_of_one_client_do_not_hold_the_others(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    """20 slow queries in one ModifyQuerySet (8 s of computing): a well-behaved
    client subscribes, makes three mutations and sees each in its subscription,
    and three HTTP queries are answered, all before the greedy client's first
    Transition (its queries run a turn at a time; it gets them all at once)."""
    server = own_server
    greedy = open_sync(server.url)
    greedy.modify(
        *[
            {
                "type": "Add",
                "queryId": i,
                "udfPath": "limits:spin",
                "args": [{"seconds": SLOW, "salt": float(i)}],
            }
            for i in range(20)
        ]
    )
    polite = open_sync(server.url)
    polite.add(0, "notes:bodies", {"tag": tag})
    polite.wait_result(0, lambda v: v == [], timeout=60)
    http = server.client()
    for i in range(3):
        response, _ = polite.mutate("notes:add", {"tag": tag, "body": str(i), "pos": float(i)})
        assert response["success"] is True
        polite.wait_result(0, lambda v, n=i + 1: len(v) == n, timeout=60)
        assert len(http.query("notes:bodies", {"tag": tag})) == i + 1
    with pytest.raises(TimeoutError):
        greedy.ws.recv(timeout=0)  # nothing yet: its queries are still running
    [*_, transition] = greedy.until(lambda m: m["type"] == "Transition", timeout=120)
    assert [m["type"] for m in transition["modifications"]] == ["QueryUpdated"] * 20


def _batch(url: str, queries: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(url + "/api/query_batch", json={"queries": queries}, timeout=120)


def test_a_batch_of_slow_queries_stops_at_its_time_budget(
    own_server: BasaltProcess, pool: concurrent.futures.ThreadPoolExecutor, tag: str
) -> None:
    """24 slow queries in one batch (9.6 s): the batch answers those it ran
    within its budget and says which it did not run; a well-behaved client's
    queries are answered while it runs."""
    server = own_server
    query = {"path": "limits:spin", "args": {"seconds": SLOW}, "format": "json"}
    batch = pool.submit(_batch, server.url, [query] * 24)
    http = server.client()
    answered = 0
    while not batch.done():
        assert http.query("notes:bodies", {"tag": tag}) == []
        answered += 1
    response = batch.result()
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 24
    ran = [r for r in results if r["status"] == "success"]
    assert ran and all(r["value"] == SLOW for r in ran)
    assert results[: len(ran)] == ran  # in order: those it ran, then the others
    count = len(ran)
    assert count < 24
    for r in results[count:]:
        assert r["status"] == "error"
        message = r["errorMessage"].split("\n", 1)[1]
        assert message.startswith(f"BatchTimeLimit: query_batch ran {count} of its 24 queries in")
        assert message.endswith(
            f"the most one batch may take is {MAX_BATCH_SECONDS:g} s: queries[{count}] and the "
            f"{23 - count} after it were not run; send them in another batch"
        )
    assert answered >= 2, f"only {answered} queries answered while the batch ran"
    # A batch within its budget is answered whole.
    quick = _batch(server.url, [{"path": "notes:bodies", "args": {"tag": tag}}] * 50)
    assert [r["status"] for r in quick.json()["results"]] == ["success"] * 50
    assert httpx.get(server.url + "/version", timeout=STEP).status_code == 200
