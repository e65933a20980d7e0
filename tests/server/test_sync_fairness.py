"""One client's many slow queries share a real ``basalt serve`` with everyone
else: subscriptions added in one message run a turn at a time, with other
clients served in between. Slow queries here compute for 0.4 s each (within
the 1 s limit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import BasaltProcess
from .test_sync_protocol import SyncSocket, open_sync

__all__ = ["open_sync"]  # a fixture this module uses

SLOW = 0.4


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its event loop is kept busy)."""
    return basalt_process(basic_app, tmp_path / "data").start()


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
