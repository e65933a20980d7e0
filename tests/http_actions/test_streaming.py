"""Streaming responses: Server-Sent Events flushed as they are produced, read
incrementally by httpx; disconnects close the generator; errors cut the stream."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from basalt import internal_mutation, query, v
from basalt.runtime.functions import http_action
from basalt.runtime.http_messages import Request, StreamingResponse
from basalt.runtime.http_router import HttpRouter
from tests.gates import Gate

from .conftest import MakeSite

SSE = "text/event-stream"


def gated_stream(gate: Callable[[], Any]) -> HttpRouter:
    """``GET /sse``: one event, then ``await gate()``, then a second event."""

    @http_action
    async def sse(ctx: Any, request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "data: first\n\n"
            await gate()
            yield "event: done\ndata: second\n\n"

        return StreamingResponse(events(), content_type=SSE, headers={"Cache-Control": "no-cache"})

    http = HttpRouter()
    http.route(path="/sse", method="GET", handler=sse)
    return http


@pytest.mark.parametrize("server_http", ["httptools", "h11"])
async def test_sse_chunks_arrive_before_the_stream_ends(site: MakeSite, server_http: str) -> None:
    gate = Gate()
    served = await site({"http": {"http": gated_stream(gate.wait)}}, http=server_http)
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
        client.stream("GET", "/sse") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == SSE
        assert response.headers["cache-control"] == "no-cache"
        assert "content-length" not in response.headers
        lines = response.aiter_lines()
        # The generator is parked on the gate: this line can only come from a flush.
        assert await asyncio.wait_for(anext(lines), 5) == "data: first"
        assert await anext(lines) == ""
        assert not gate.is_set()
        gate.set()
        assert [line async for line in lines] == ["event: done", "data: second", ""]


def test_sse_with_the_sync_client(threaded_site: Callable[[dict[str, Any]], str]) -> None:
    """``httpx.stream`` against a server in another thread, gated by a threading.Event."""
    gate = threading.Event()

    async def wait_for_gate() -> None:
        assert await asyncio.to_thread(gate.wait, 10)

    url = threaded_site({"http": {"http": gated_stream(wait_for_gate)}})
    with httpx.stream("GET", url + "/sse", timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines) == "data: first"
        assert next(lines) == ""
        gate.set()
        assert list(lines) == ["event: done", "data: second", ""]


async def test_client_disconnect_closes_the_generator(site: MakeSite) -> None:
    closed = Gate()
    started = Gate()

    async def forever(ctx: Any, request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"data: hello\n\n"
                started.set()
                await asyncio.Event().wait()  # never set: only a disconnect ends this
                yield b"unreachable"
            finally:
                closed.set()

        return StreamingResponse(events(), content_type=SSE)

    http = HttpRouter()
    http.route(path="/forever", method="GET", handler=forever)
    served = await site({"http": {"http": http}})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        async with client.stream("GET", "/forever") as response:
            assert await anext(response.aiter_bytes()) == b"data: hello\n\n"
            await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(closed.wait(), 5)
        assert (await client.get("/forever/missing")).status_code == 404  # still serving


async def test_an_error_mid_stream_cuts_the_response(
    site: MakeSite, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(ctx: Any, request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "data: one\n\n"
            raise RuntimeError("model went away")

        return StreamingResponse(events(), content_type=SSE)

    async def bad_chunk(ctx: Any, request: Request) -> StreamingResponse:
        return StreamingResponse([b"ok", 42])  # type: ignore[list-item]

    http = HttpRouter()
    http.route(path="/failing", method="GET", handler=failing)
    http.route(path="/bad-chunk", method="GET", handler=bad_chunk)
    served = await site({"http": {"http": http}})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        with caplog.at_level(logging.ERROR, logger="basalt.http"):
            for path in ("/failing", "/bad-chunk"):
                received = b""
                with pytest.raises(httpx.RemoteProtocolError):
                    async with client.stream("GET", path) as response:
                        assert response.status_code == 200
                        async for chunk in response.aiter_bytes():
                            received += chunk
                assert received in (b"data: one\n\n", b"ok")
        messages = [rec.getMessage() for rec in caplog.records if rec.name == "basalt.http"]
        assert any("GET /failing failed while streaming" in m and "model went away" in m
                   for m in messages)  # fmt: skip
        assert any("GET /bad-chunk" in m and "chunks must be str or bytes" in m for m in messages)
        assert (await client.get("/missing")).status_code == 404  # still serving


@internal_mutation(args={"text": v.string()})
async def save_delta(ctx: Any, text: str) -> None:
    await ctx.db.insert("deltas", {"text": text})


@query
async def deltas(ctx: Any) -> list[str]:
    return [d["text"] for d in await ctx.db.query("deltas").collect()]


async def test_a_stream_persists_deltas_as_it_goes(site: MakeSite) -> None:
    """The saga pattern: each delta is saved with ctx.run_mutation, then streamed."""

    async def chat(ctx: Any, request: Request) -> StreamingResponse:
        words = (await request.json())["words"]

        async def events() -> AsyncIterator[str]:
            for word in words:
                await ctx.run_mutation(save_delta, {"text": word})
                saved = await ctx.run_query("streams:deltas")
                yield f"data: {len(saved)} {word}\n\n"

        return StreamingResponse(events(), content_type=SSE)

    http = HttpRouter()
    http.route(path="/ai/saga", method="POST", handler=chat)
    served = await site(
        {"streams": {"save_delta": save_delta, "deltas": deltas}, "http": {"http": http}}
    )
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        r = await client.post("/ai/saga", json={"words": ["once", "upon", "a time"]})
    assert r.text == "data: 1 once\n\ndata: 2 upon\n\ndata: 3 a time\n\n"
    assert await served.runtime.query("streams:deltas") == ["once", "upon", "a time"]
