"""Clients that misbehave on purpose — an oversized batch, endless or huge
headers, thousands of idle connections — against a real ``basalt serve``,
while a well-behaved client checks that the server keeps answering.

Nothing here measures durations: the well-behaved client counts answers it
got while the misbehaving one was at work (generous timeouts everywhere)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from convex.http_client import ConvexHttpClient

from basalt.server.http_api import MAX_BATCH_QUERIES

from .harness import BasaltProcess

#: Seconds any single answer may take before the test gives up on it.
PATIENCE = 60.0


class Watcher:
    """A well-behaved client asking ``/health`` and a query in a loop (in a
    thread) and counting the answers, until stopped."""

    def __init__(self, url: str, tag: str) -> None:
        self.url, self.tag = url, tag
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = ConvexHttpClient(self.url)
        with httpx.Client(base_url=self.url, timeout=PATIENCE) as http:
            while not self._stop.is_set():
                try:
                    assert http.get("/health").json()["status"] == "ok"
                    assert client.query("notes:bodies", {"tag": self.tag}) == ["watched"]
                except Exception as exc:  # counted, and reported by the test
                    self.failures.append(repr(exc))
                else:
                    self.answers += 1

    def __enter__(self) -> Watcher:
        ConvexHttpClient(self.url).mutation(
            "notes:add", {"tag": self.tag, "body": "watched", "pos": 0.0}
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PATIENCE)

    def answers_after(self, count: int) -> int:
        """Wait until ``count`` more answers came (or fail); return the total."""
        target = self.answers + count
        done = threading.Event()

        def check() -> None:
            while self.answers < target and not self._stop.is_set():
                if self.failures:
                    break
                threading.Event().wait(0.01)
            done.set()

        threading.Thread(target=check, daemon=True).start()
        assert done.wait(PATIENCE), f"the well-behaved client got no {count} answers"
        assert not self.failures, self.failures[:3]
        return self.answers


@pytest.fixture
def watcher(server: BasaltProcess, tag: str) -> Iterator[Watcher]:
    with Watcher(server.url, tag + "-watch") as w:
        w.answers_after(1)
        yield w


def _batch(entries: int, tag: str) -> bytes:
    query = {"path": "notes:bodies", "args": {"tag": tag}, "format": "convex_encoded_json"}
    return json.dumps({"queries": [query] * entries}).encode()


# -- /api/query_batch ---------------------------------------------------------------


def test_oversized_query_batch_is_refused(
    server: BasaltProcess, watcher: Watcher, tag: str
) -> None:
    """100,000 entries (3.7 MB) froze the whole server for 39 s; now the batch is
    refused with its count and the limit, and the others keep being answered."""
    body = _batch(100_000, tag)
    response = httpx.post(server.url + "/api/query_batch", content=body, timeout=PATIENCE)
    assert response.status_code == 400, response.text[:200]
    error = response.json()
    assert error["code"] == "TooManyQueries"
    assert "100000" in error["message"] and str(MAX_BATCH_QUERIES) in error["message"]
    watcher.answers_after(3)


def test_long_query_batches_let_others_in(
    server: BasaltProcess, watcher: Watcher, client: ConvexHttpClient, tag: str
) -> None:
    """Batches at the limit still answer every entry as of one commit, and the
    server answers the well-behaved client while they run."""
    for i in range(40):
        client.mutation("notes:add", {"tag": tag, "body": f"n{i}", "pos": float(i)})
    expected = [f"n{i}" for i in range(40)]
    body = _batch(MAX_BATCH_QUERIES, tag)
    results: list[httpx.Response] = []
    during: list[int] = []
    writes = 0

    def send_batches() -> None:
        with httpx.Client(timeout=PATIENCE) as http:
            for _ in range(3):
                results.append(http.post(server.url + "/api/query_batch", content=body))

    batches = threading.Thread(target=send_batches)
    seen = watcher.answers
    batches.start()
    while batches.is_alive():
        # Writes land between the entries of a batch: they must not show in it.
        client.mutation("notes:add", {"tag": tag, "body": f"w{writes}", "pos": 100.0 + writes})
        writes += 1
        if batches.is_alive():
            during.append(watcher.answers - seen)
    batches.join()
    assert len(results) == 3
    for response in results:
        assert response.status_code == 200, response.text[:200]
        answers = response.json()["results"]
        assert len(answers) == MAX_BATCH_QUERIES
        first = answers[0]
        assert first["status"] == "success" and first["value"][:40] == expected
        distinct = {json.dumps(a) for a in answers}
        assert len(distinct) == 1, sorted(distinct)[:3]
    # The watcher (and the writer above) were answered while the batches ran.
    assert writes >= 3 and during and during[-1] >= 3, (writes, during)
