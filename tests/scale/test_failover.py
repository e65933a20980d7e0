"""``kill -9`` of one of three ``basalt serve`` processes on one PostgreSQL
schema, behind a forwarder that stands in for a load balancer:

- the official ``ConvexClient`` connected through it reconnects — to a live
  process — resubscribes, and catches up with what was committed meanwhile;
- scheduled mutations in flight on all three processes run exactly once;
  the killed process's share is run by the others;
- a scheduled action that was running on the killed process is marked
  ``failed`` by a live one once its lease expires, and never runs again
  (at most once).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.server.test_sync_client import ClientProcess

from .conftest import harness
from .proxy import Forwarder

#: Seconds a step the servers owe us may take (a healthy one takes ms).
STEP = 15.0
#: How many scheduled mutations are in flight when the process dies.
JOBS = 300


@pytest.fixture
def forwarder() -> Iterator[Callable[[str], Forwarder]]:
    made: list[Forwarder] = []

    def make(url: str) -> Forwarder:
        made.append(Forwarder(harness.port_outside_ephemeral_range(), _address(url)))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _start_a_slow_action_on(victim: Any, servers: list[Any], batch: str) -> str:
    """Schedules slow actions until one runs on ``victim``; returns its ``k``.

    Every process's scheduler competes for each due job, so which one runs an
    action is chance: a few tries are enough.
    """
    http = servers[1].client()
    for k in range(30):
        servers[k % 3].client().mutation(
            "jobs:schedule_slow", {"batch": batch, "k": float(k), "seconds": 120.0}
        )
        starts = harness.wait_until(
            lambda k=k: [pid for n, pid in http.query("jobs:starts", {"batch": batch}) if n == k],
            STEP,
            f"slow action {k} to start",
        )
        if starts == [float(victim.pid)]:
            return str(k)
    raise AssertionError("30 slow actions in a row ran on other processes")


def test_kill_9_clients_fail_over_and_scheduled_jobs_run_once(
    serve: Callable[[Path], Any],
    failover_app: Path,
    forwarder: Callable[[str], Forwarder],
    tmp_path: Path,
) -> None:
    servers = [serve(failover_app) for _ in range(3)]
    victim, survivor, other = servers
    proxy = forwarder(victim.url)
    client = ClientProcess(proxy.url, tmp_path / "client.log")
    try:
        tag = uuid.uuid4().hex
        sub = client.subscribe("notes:bodies", {"tag": tag})
        assert sub.next() == []
        client.mutation("notes:add", {"tag": tag, "body": "before", "pos": 0.0})
        assert sub.next_until(lambda v: v == ["before"]) == ["before"]

        batch = uuid.uuid4().hex
        doomed = _start_a_slow_action_on(victim, servers, batch)

        other.client().mutation("jobs:schedule", {"batch": batch, "count": JOBS, "spread": 3.0})
        http = survivor.client()
        harness.wait_until(
            lambda: len(http.query("jobs:runs", {"batch": batch})) >= JOBS // 10,
            STEP,
            "the scheduled jobs to start running",
        )
        victim.kill9()
        killed_at = time.monotonic()
        ran_before_kill = len(http.query("jobs:runs", {"batch": batch}))
        # The balancer's health check drops the dead process: new connections
        # go to a live one. Meanwhile someone else writes through the third.
        proxy.retarget(_address(survivor.url))
        other.client().mutation("notes:add", {"tag": tag, "body": "during", "pos": 1.0})

        # The client reconnects by itself, resubscribes and catches up ...
        assert sub.next_until(lambda v: v == ["before", "during"], timeout=40.0) == [
            "before",
            "during",
        ]
        caught_up = time.monotonic() - killed_at
        # ... and its own calls go on over the new connection.
        client.mutation("notes:add", {"tag": tag, "body": "after", "pos": 2.0})
        assert sub.next_until(lambda v: len(v) == 3) == ["before", "during", "after"]
        assert client.query("notes:bodies", {"tag": tag}) == ["before", "during", "after"]

        # Every scheduled mutation ran, and exactly once.
        def finished() -> dict[str, int] | None:
            states: dict[str, int] = http.query("jobs:states", {})
            return None if "pending" in states or "inProgress" in states else states

        states = harness.wait_until(finished, 60.0, "every scheduled job to finish")
        assert states == {"success": JOBS}, states
        runs = http.query("jobs:runs", {"batch": batch})
        assert sorted(runs) == [float(n) for n in range(JOBS)], "a job ran twice or never"

        # The action the killed process was running: failed once its lease ran
        # out (15 s by default), started once only.
        def settled() -> dict[str, Any] | None:
            state: dict[str, Any] = http.query("jobs:slow_states", {"batch": batch})[doomed]
            return None if state["kind"] == "inProgress" else state

        state = harness.wait_until(settled, 60.0, "the killed process's action to be failed")
        assert state == {
            "kind": "failed",
            "error": "the server stopped while this action was running",
        }
        starts = [k for k, _ in http.query("jobs:starts", {"batch": batch})]
        assert starts.count(float(doomed)) == 1, starts
        print(
            f"\nkill -9 of 1 of 3: {ran_before_kill}/{JOBS} jobs had run at the kill, "
            f"all {JOBS} ran once; the client caught up {caught_up:.1f} s after the kill "
            f"({proxy.accepted} connections through the forwarder)"
        )
    finally:
        client.close()
