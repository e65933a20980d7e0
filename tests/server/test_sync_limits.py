"""Every resource a sync WebSocket client controls has a limit, against a real
``basalt serve``: the answers remembered for re-sent mutations."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from basalt.sync.remembered import REMEMBERED_MUTATION_BYTES

from .harness import BasaltProcess
from .test_sync_protocol import SyncSocket, _rss_mb, open_sync

__all__ = ["open_sync"]  # a fixture this module uses

MIB = 1 << 20


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its memory and connections are measured)."""
    return basalt_process(basic_app, tmp_path / "data").start()


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
