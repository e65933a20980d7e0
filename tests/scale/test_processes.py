"""Several ``basalt serve`` processes on one PostgreSQL schema.

- a subscription held on one process is updated by a mutation sent to another
  (commit notifications: LISTEN/NOTIFY plus the commit log);
- concurrent increments of one counter through three processes all count
  (serializable writes; conflicts are retried, and the test prints how many);
- ``kill -9`` of one of three processes under load loses no acknowledged
  mutation, and its clients go on through the others.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from .conftest import harness

Serve = Callable[[Path], Any]
#: Seconds a step the server owes us may take (a healthy one takes ms).
STEP = 15.0


def _stats(server: Any) -> dict[str, Any]:
    response = httpx.get(
        server.url + "/api/stats",
        headers={"Authorization": f"Convex {server.admin_key}"},
        timeout=STEP,
    )
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


def _mutation(http: httpx.Client, url: str, path: str, args: dict[str, Any]) -> Any:
    response = http.post(
        url + "/api/mutation", json={"path": path, "args": args, "format": "json"}, timeout=STEP
    )
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", body
    return body["value"]


def test_subscription_on_one_process_sees_a_mutation_made_through_another(
    serve: Serve, basic_app: Path
) -> None:
    a = serve(basic_app)
    b = serve(basic_app)
    tag = uuid.uuid4().hex
    with connect(
        a.url.replace("http://", "ws://") + "/api/sync",
        open_timeout=STEP,
        close_timeout=2,
        proxy=None,
    ) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "Connect",
                    "sessionId": str(uuid.uuid4()),
                    "connectionCount": 0,
                    "lastCloseReason": "InitialConnect",
                    "clientTs": 0,
                }
            )
        )
        ws.send(
            json.dumps(
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [
                        {
                            "type": "Add",
                            "queryId": 0,
                            "udfPath": "counters:get",
                            "args": [{"tag": tag}],
                        }
                    ],
                }
            )
        )

        def next_value() -> Any:
            deadline = time.monotonic() + STEP
            while True:
                message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                if message.get("type") != "Transition":
                    continue
                for mod in message["modifications"]:
                    if mod["type"] == "QueryUpdated" and mod["queryId"] == 0:
                        return mod["value"]
                    assert mod["type"] != "QueryFailed", mod

        assert next_value() is None
        client_b = b.client()
        for expected in (1.0, 2.0, 3.0):
            assert client_b.mutation("counters:increment", {"tag": tag}) == expected
            assert next_value() == expected


def test_concurrent_increments_through_three_processes_end_exact(
    serve: Serve, basic_app: Path
) -> None:
    servers = [serve(basic_app) for _ in range(3)]
    tag = uuid.uuid4().hex
    n = 100
    before = sum(_stats(s)["conflictRetries"] for s in servers)
    barrier = threading.Barrier(n)

    def increment(i: int) -> float:
        with httpx.Client() as http:
            barrier.wait(timeout=STEP)
            value: float = _mutation(http, servers[i % 3].url, "counters:increment", {"tag": tag})
            return value

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(increment, range(n)))
    # Every increment saw a distinct count: they ran in some serial order.
    assert sorted(results) == [float(i) for i in range(1, n + 1)]
    for server in servers:
        assert server.client().query("counters:get", {"tag": tag}) == float(n)
    retries = [s["conflictRetries"] for s in map(_stats, servers)]
    print(
        f"\n{n} concurrent increments through 3 processes: conflict retries {retries} "
        f"(total {sum(retries) - before})"
    )


def test_kill_9_of_one_of_three_processes_loses_no_acknowledged_mutation(
    serve: Serve, basic_app: Path
) -> None:
    servers = [serve(basic_app) for _ in range(3)]
    tag = uuid.uuid4().hex
    acknowledged: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    failed_on_victim = [0]
    victim = servers[0]

    def writer(worker: int) -> None:
        """Sends notes round-robin; a client of the killed process moves on to
        the next live one (as a reconnecting client would)."""
        with httpx.Client() as http:
            i = 0
            while not stop.is_set():
                pos = float(worker * 1_000_000 + i)
                server = servers[(worker + i) % 3]
                i += 1
                try:
                    _mutation(http, server.url, "notes:add", {"tag": tag, "body": "x", "pos": pos})
                except (httpx.HTTPError, ValueError):
                    assert server is victim, f"a live process failed a mutation:\n{server.output()}"
                    failed_on_victim[0] += 1
                    continue
                with lock:
                    acknowledged.append(pos)

    workers = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in workers:
        thread.start()
    try:
        harness.wait_until(lambda: len(acknowledged) >= 150, 30, "150 acknowledged mutations")
        victim.kill9()
        killed_at = len(acknowledged)
        harness.wait_until(
            lambda: len(acknowledged) >= killed_at + 150, 30, "150 more after the kill"
        )
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=STEP)
    for server in servers[1:]:
        stored = server.client().query("notes:list", {"tag": tag})
        positions = {note["pos"] for note in stored}
        missing = set(acknowledged) - positions
        assert not missing, f"{len(missing)} acknowledged mutations lost"
        assert len(stored) == len(positions), "a mutation was applied twice"
    print(
        f"\nkill -9 under load: {len(acknowledged)} acknowledged, "
        f"{failed_on_victim[0]} failed on the killed process"
    )
