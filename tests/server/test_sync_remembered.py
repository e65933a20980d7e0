"""Remembered mutation answers against a real ``basalt serve``: a client cannot
make the server keep what it chooses (huge session ids), and a re-sent
mutation is answered from memory only for the caller that sent it, with the
same function and arguments."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from convex.http_client import ConvexHttpClient

from basalt.sync.limits import MAX_SESSION_ID_CHARS

from .harness import BasaltProcess
from .test_sync_protocol import SyncSocket, _rss_mb, open_sync

__all__ = ["open_sync"]  # a fixture this module uses

MIB = 1 << 20


@pytest.fixture
def own_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server of its own (its memory is measured)."""
    return basalt_process(basic_app, tmp_path / "data").start()


def test_huge_session_ids_are_refused_and_not_kept(
    own_server: BasaltProcess, open_sync: Callable[..., SyncSocket], tag: str
) -> None:
    """Connect with a 15 MB session id, then a mutation (the attack kept 15 MB
    per connection for good): a FatalError, and the memory is not kept."""
    server = own_server
    other = open_sync(server.url)
    other.add(0, "notes:bodies", {"tag": tag})
    other.wait_result(0, lambda v: v == [])
    baseline = _rss_mb(server.pid)
    for i in range(10):
        bad = open_sync(server.url, session_id=f"{i:06d}" + "s" * (15 * MIB))
        bad.send({"type": "Mutation", "requestId": 0, "udfPath": "nothing:here", "args": [{}]})
        fatal = bad.closed(timeout=60)[-1]
        assert fatal["type"] == "FatalError", fatal
        assert fatal["error"] == (
            f"Connect.sessionId is {15 * MIB + 6} characters long, over the limit of "
            f"{MAX_SESSION_ID_CHARS} (the official clients send a UUID)"
        )
        # A well-behaved client is answered meanwhile.
        response, _ = other.mutate("notes:add", {"tag": tag, "body": str(i), "pos": float(i)})
        assert response["success"] is True
    other.wait_result(0, lambda v: len(v) == 10)
    grown = _rss_mb(server.pid) - baseline
    assert grown < 100, f"RSS grew by {grown:.0f} MiB after 10 connections of 15 MB session ids"


def _as(sync: SyncSocket, subject: str | None, admin_key: str) -> None:
    """Sign the connection in as ``subject`` (the admin key impersonating a
    user), or leave it anonymous."""
    if subject is not None:
        sync.send(
            {
                "type": "Authenticate",
                "baseVersion": 0,
                "tokenType": "Admin",
                "value": admin_key,
                "impersonating": {"subject": subject, "issuer": "https://test"},
            }
        )


def _mutation(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    session_id: str,
    subject: str | None,
    request_id: int,
    args: dict[str, Any],
) -> dict[str, Any]:
    """One connection of session ``session_id`` (as a reconnect), as
    ``subject``, sending one ``notes:add`` with ``request_id``: its answer."""
    assert server.admin_key is not None
    sync = open_sync(server.url, session_id=session_id, connectionCount=1)
    _as(sync, subject, server.admin_key)
    sync.send(
        {"type": "Mutation", "requestId": request_id, "udfPath": "notes:add", "args": [args]}
    )
    [*_, answer] = sync.until(lambda m: m["type"] == "MutationResponse")
    sync.ws.close()
    return answer


def test_a_remembered_answer_is_the_callers_own(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
) -> None:
    session = str(uuid.uuid4())
    alice = _mutation(
        server, open_sync, session, "alice", 7, {"tag": tag, "body": "alice's", "pos": 1.0}
    )
    assert alice["success"] is True
    # Another caller (anonymous) with alice's session id and request id: it
    # gets its own answer (not alice's note id), and its note is written.
    anonymous = _mutation(
        server, open_sync, session, None, 7, {"tag": tag, "body": "anonymous", "pos": 2.0}
    )
    assert anonymous["success"] is True and anonymous["result"] != alice["result"]
    assert sorted(n["body"] for n in client.query("notes:list", {"tag": tag})) == [
        "alice's",
        "anonymous",
    ]
    # Alice re-sending gets her answer, and nothing is written twice.
    again = _mutation(
        server, open_sync, session, "alice", 7, {"tag": tag, "body": "alice's", "pos": 1.0}
    )
    assert again == alice
    assert len(client.query("notes:list", {"tag": tag})) == 2


def test_request_ids_claimed_first_do_not_swallow_mutations(
    server: BasaltProcess,
    open_sync: Callable[..., SyncSocket],
    client: ConvexHttpClient,
    tag: str,
) -> None:
    """An attacker pre-sends request ids 0-2 on a session id it learnt: the
    victim's mutations under them are written, not answered from memory."""
    session = str(uuid.uuid4())
    for rid in range(3):
        spam = _mutation(
            server, open_sync, session, None, rid, {"tag": f"{tag}-x", "body": "x", "pos": 0.0}
        )
        assert spam["success"] is True
    for rid in range(3):
        answer = _mutation(
            server, open_sync, session, "bob", rid, {"tag": tag, "body": f"bob {rid}", "pos": 0.0}
        )
        assert answer["success"] is True
    assert sorted(n["body"] for n in client.query("notes:list", {"tag": tag})) == [
        "bob 0",
        "bob 1",
        "bob 2",
    ]
