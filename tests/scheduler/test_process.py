"""End to end: ``basalt serve`` killed with ``kill -9`` while it runs scheduled
mutations and an action, then restarted on the same data folder."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HARNESS = Path(__file__).resolve().parents[1] / "server" / "harness.py"
_spec = importlib.util.spec_from_file_location("_basalt_scheduler_test_harness", _HARNESS)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

APP = Path(__file__).parent / "apps" / "jobs"


@pytest.fixture
def servers(server_env: dict[str, str]) -> Iterator[list[Any]]:
    """The servers a test starts, stopped at the end (before its database is dropped)."""
    started: list[Any] = []
    yield started
    for server in started:
        server.stop()


def test_scheduled_mutations_run_exactly_once_across_kill_9(
    servers: list[Any], tmp_path: Path, server_env: dict[str, str]
) -> None:
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    data = tmp_path / "data"
    first = harness.BasaltProcess(app, data, env=server_env)
    servers.append(first)
    first.start()
    client = first.client()
    n = 400
    client.mutation("jobs:start_slow")
    client.mutation("jobs:enqueue", {"n": float(n), "spread": 3.0})

    def summary() -> dict[str, Any]:
        result: dict[str, Any] = client.query("jobs:summary")
        return result

    # Kill it while the work items are being run and the slow action is running.
    harness.wait_until(
        lambda: (s := summary())["slow"] == {"kind": "inProgress"}
        and "slow started" in s["marks"]
        and 0 < len(s["done"]) < n,
        15,
        "some work done and the slow action running",
    )
    first.kill9()

    second = harness.BasaltProcess(app, data, env=server_env)
    servers.append(second)
    second.start()
    client = second.client()
    started = time.monotonic()
    final = harness.wait_until(
        lambda: (s := summary())["states"].get("pending", 0) <= 1 and len(s["done"]) >= n and s,
        30,
        "every work item to run after the restart",
    )
    # Overdue jobs ran promptly (they were all due within 3 s of the first start).
    assert time.monotonic() - started < 15
    counts = Counter(final["done"])
    assert sorted(counts) == [float(i) for i in range(n)]
    assert set(counts.values()) == {1}, "a scheduled mutation ran twice"
    # The slow action is failed at once on a SQLite file (one process); on
    # PostgreSQL, which other live processes may share, once the lease of the
    # killed runner ran out (15 s, looked for every 7.5 s).
    final = harness.wait_until(
        lambda: (s := summary())["slow"] != {"kind": "inProgress"} and s,
        60,
        "the interrupted action to be failed",
    )
    assert final["slow"] == {
        "kind": "failed",
        "error": "the server stopped while this action was running",
    }
    assert final["marks"].count("slow started") == 1
    assert "slow finished" not in final["marks"]
    # The cron kept firing on the restarted server, each run recorded.
    ticks = final["marks"].count("tick")
    harness.wait_until(lambda: summary()["marks"].count("tick") > ticks, 10, "another cron run")
