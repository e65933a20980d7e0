"""Clients that read slower than the server sends (basalt.server.sync_queue):
the server's budget for unread messages drops the slowest ones, never the
clients that keep up, and a client that takes no frame for too long is dropped.

Each connection runs the server's real WebSocket handler (``serve_sync``) over
an ASGI channel that behaves as uvicorn's does: ``send`` waits while the
socket's buffer is full, and ``transport.abort()`` drops the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from basalt.server.sync_queue import SendBudget
from basalt.server.websocket import SyncLimits, serve_sync

from .conftest import Env, FakeVerifier, wait_for


class _Transport:
    def __init__(self, socket: FakeSocket) -> None:
        self.socket = socket

    def abort(self) -> None:
        self.socket.aborted = True
        self.socket.writable.set()  # as uvicorn does when the connection is lost


class FakeSocket:
    """One WebSocket as the ASGI app sees it. With ``stall_after`` the client
    stops reading after that many frames: ``send`` then waits for ever, as
    uvicorn's does while the socket's buffer is full."""

    def __init__(self, stall_after: int | None = None) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: list[dict[str, Any]] = []
        self.stall_after = stall_after
        self.writable = asyncio.Event()
        self.writable.set()
        self.aborted = False
        self.transport = _Transport(self)
        self.incoming.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        if self.aborted:
            raise OSError("the connection was aborted")
        if message["type"] == "websocket.send":
            self.received.append(json.loads(message["text"]))
            if self.stall_after is not None and len(self.received) >= self.stall_after:
                self.writable.clear()

    def frame(self, message: dict[str, Any]) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(message)})

    def subscribe(self, group: str) -> None:
        self.frame({"type": "Connect", "sessionId": "s", "connectionCount": 0})
        self.frame(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": [
                    {
                        "type": "Add",
                        "queryId": 0,
                        "udfPath": "items:by_group",
                        "args": [{"group": group}],
                    }
                ],
            }
        )

    def last_result(self) -> Any:
        for message in reversed(self.received):
            if message["type"] == "Transition":
                for mod in message["modifications"]:
                    if mod["queryId"] == 0 and mod["type"] == "QueryUpdated":
                        return mod["value"]
        return None


def _serve(env: Env, socket: FakeSocket, **kw: Any) -> asyncio.Task[None]:
    return asyncio.create_task(
        serve_sync(
            {"type": "websocket"}, socket.receive, socket.send, env.hub, FakeVerifier(), **kw
        )
    )


async def _spin() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_slowest_client_is_dropped_when_the_servers_budget_is_full(env: Env) -> None:
    budget = SendBudget(limit=1 << 20)
    fast = [FakeSocket() for _ in range(6)]
    slow = FakeSocket(stall_after=1)
    sockets = [*fast, slow]
    tasks = [_serve(env, s, budget=budget) for s in sockets]
    for s in sockets:
        s.subscribe("big")
    await wait_for(lambda: all(s.received for s in sockets), "every first Transition")
    label = "x" * 150_000
    for i in range(8):
        # Every client's result grows by 150 kB: each round of Transitions is
        # more than the whole budget, which the fast clients take at once.
        await env.runtime.mutation("items:add", {"group": "big", "n": float(i), "label": label})
        await env.settle()
        await _spin()
    assert slow.aborted, "the client that stopped reading holds the most: it is dropped"
    assert budget.disconnected == 1
    for s in fast:
        assert not s.aborted
        assert [row[1] for row in s.last_result()] == [float(i) for i in range(8)]
    assert budget.queued_bytes <= budget.limit
    for s in fast:
        s.incoming.put_nowait({"type": "websocket.disconnect"})
    await asyncio.gather(*tasks)
    assert budget.queues == set() and budget.queued_bytes == 0


async def test_a_client_that_takes_no_frame_for_too_long_is_dropped(env: Env) -> None:
    """A frame the socket holds for a client that stopped reading is not in the
    queue: the send timeout bounds how long the server holds it."""
    socket = FakeSocket(stall_after=1)
    task = _serve(env, socket, limits=SyncLimits(send_timeout=0.2))
    socket.subscribe("stalled")
    await wait_for(lambda: bool(socket.received), "the first Transition")
    await env.runtime.mutation("items:add", {"group": "stalled", "n": 1.0})
    await env.settle()
    await asyncio.wait_for(task, timeout=10)
    assert socket.aborted
