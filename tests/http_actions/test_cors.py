"""CORS: preflight requests and the headers of actual responses, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from basalt.runtime.http_messages import Request, Response, StreamingResponse
from basalt.runtime.http_router import HttpRouter, cors_router

from .conftest import MakeSite

APP = "https://app.example.test"
OTHER = "https://evil.example.test"


async def saga(ctx: Any, request: Request) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        yield "data: hi\n\n"

    return StreamingResponse(events(), content_type="text/event-stream", headers={"X-Stream": "1"})


async def health(ctx: Any, request: Request) -> Response:
    return Response.json({"ok": True}, headers={"Vary": "Accept-Encoding"})


async def boom(ctx: Any, request: Request) -> Response:
    raise ValueError("nope")


async def upload(ctx: Any, request: Request) -> Response:
    return Response(request.path)


def router() -> HttpRouter:
    http = HttpRouter()
    cors = cors_router(
        http,
        allowed_origins=[APP],
        allowed_headers=["Content-Type", "Authorization"],
        exposed_headers=["X-Stream"],
        max_age=600,
    )
    cors.route(path="/ai/saga", method="POST", handler=saga)
    cors.route(path="/ai/saga", method="GET", handler=health)
    cors.route(path="/boom", method="GET", handler=boom)
    cors.route(path_prefix="/fs/", method="PUT", handler=upload)
    http.route(path="/plain", method="GET", handler=health)

    anyone = cors_router(http, allowed_origins="*", allowed_headers="*")
    anyone.route(path="/open", method="GET", handler=health)
    with_credentials = cors_router(http, allow_credentials=True)
    with_credentials.route(path="/cookies", method="GET", handler=health)
    return http


@pytest.fixture
async def client(site: MakeSite) -> AsyncIterator[httpx.AsyncClient]:
    served = await site({"http": {"http": router()}})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        yield c


def preflight(origin: str, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        out["Access-Control-Request-Headers"] = headers
    return out


async def test_preflight_from_an_allowed_origin(client: httpx.AsyncClient) -> None:
    r = await client.options("/ai/saga", headers=preflight(APP, headers="content-type"))
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-methods"] == "GET, OPTIONS, POST"
    assert r.headers["access-control-allow-headers"] == "Content-Type, Authorization"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in r.headers


async def test_preflight_from_another_origin_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.options("/ai/saga", headers=preflight(OTHER))
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    assert r.text == f"Origin {OTHER} is not allowed"


async def test_options_without_origin_lists_the_methods(client: httpx.AsyncClient) -> None:
    r = await client.options("/ai/saga")
    assert (r.status_code, r.headers["allow"]) == (204, "GET, OPTIONS, POST")


async def test_actual_responses_carry_cors_headers(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/ai/saga", headers={"Origin": APP}) as r:
        assert r.headers["access-control-allow-origin"] == APP
        assert r.headers["access-control-expose-headers"] == "X-Stream"
        assert r.headers["vary"] == "Origin"
        assert await r.aread() == b"data: hi\n\n"
    r = await client.get("/ai/saga", headers={"Origin": APP})
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers.get_list("vary") == ["Accept-Encoding", "Origin"]
    r = await client.get("/ai/saga", headers={"Origin": OTHER})
    assert r.status_code == 200  # the browser, not the server, hides it from the page
    assert "access-control-allow-origin" not in r.headers
    assert r.headers.get_list("vary") == ["Accept-Encoding", "Origin"]


async def test_errors_carry_cors_headers_too(client: httpx.AsyncClient) -> None:
    r = await client.get("/boom", headers={"Origin": APP})
    assert r.status_code == 500
    assert r.headers["access-control-allow-origin"] == APP
    assert r.json()["message"].endswith("] Server Error")


async def test_prefix_routes_get_preflight(client: httpx.AsyncClient) -> None:
    r = await client.options("/fs/a/b", headers=preflight(APP, "PUT"))
    assert (r.status_code, r.headers["access-control-allow-methods"]) == (204, "OPTIONS, PUT")
    r = await client.put("/fs/a/b", headers={"Origin": APP})
    assert (r.text, r.headers["access-control-allow-origin"]) == ("/fs/a/b", APP)


async def test_routes_outside_the_cors_router_have_no_cors(client: httpx.AsyncClient) -> None:
    r = await client.get("/plain", headers={"Origin": APP})
    assert "access-control-allow-origin" not in r.headers
    r = await client.options("/plain", headers=preflight(APP, "GET"))
    assert r.status_code == 405


async def test_any_origin_and_any_requested_headers(client: httpx.AsyncClient) -> None:
    r = await client.options("/open", headers=preflight(OTHER, "GET", "x-api-key, authorization"))
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "x-api-key, authorization"
    assert r.headers["vary"] == "Access-Control-Request-Headers"
    r = await client.get("/open", headers={"Origin": OTHER})
    assert r.headers["access-control-allow-origin"] == "*"


async def test_credentials_echo_the_origin(client: httpx.AsyncClient) -> None:
    r = await client.get("/cookies", headers={"Origin": OTHER})
    assert r.headers["access-control-allow-origin"] == OTHER
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers.get_list("vary") == ["Accept-Encoding", "Origin"]
    r = await client.options("/cookies", headers=preflight(OTHER, "GET"))
    assert r.headers["access-control-allow-origin"] == OTHER
    assert r.headers["access-control-allow-credentials"] == "true"
