"""HTTP actions over real HTTP: routing, methods, bodies, errors and ctx."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from basalt import ConvexError, internal_mutation, query, v
from basalt.runtime import App
from basalt.runtime.functions import http_action
from basalt.runtime.http_messages import Request, Response, StreamingResponse
from basalt.runtime.http_router import HttpRouter

from .conftest import MakeSite


@internal_mutation(args={"body": v.string()})
async def add(ctx: Any, body: str) -> str:
    return await ctx.db.insert("notes", {"body": body})


@query
async def bodies(ctx: Any) -> list[str]:
    return [d["body"] for d in await ctx.db.query("notes").collect()]


@http_action
async def echo(ctx: Any, request: Request) -> Response:
    return Response.json({"got": await request.json(), "method": request.method})


@http_action
async def describe(ctx: Any, request: Request) -> Response:
    return Response.json(
        {
            "method": request.method,
            "path": request.path,
            "url": request.url,
            "q": request.query_params.get("q"),
            "tags": request.query_params.get_all("tag"),
            "header": request.headers.get("X-Custom-Header"),
            "text": await request.text(),
        }
    )


async def download(ctx: Any, request: Request) -> Response:
    """A plain ``async def`` handler (no ``@http_action``)."""
    name = request.path.removeprefix("/files/")
    return Response(name.encode(), headers={"Content-Type": "application/octet-stream"})


@http_action
async def deep(ctx: Any, request: Request) -> Response:
    return Response("deep prefix")


@http_action
async def exact(ctx: Any, request: Request) -> Response:
    return Response("exact", status=201, headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])


@http_action
async def notes(ctx: Any, request: Request) -> Response:
    """Writes with ctx.run_mutation and reads back with ctx.run_query."""
    body = (await request.json())["body"]
    note_id = await ctx.run_mutation(add, {"body": body})
    await ctx.run_mutation("notes:add", {"body": body + "!"})
    return Response.json({"id": note_id, "all": await ctx.run_query("notes:bodies")})


@http_action
async def boom(ctx: Any, request: Request) -> Response:
    raise ValueError("the handler blew up")


@http_action
async def refuse(ctx: Any, request: Request) -> Response:
    raise ConvexError({"code": "NOPE", "retry": False})


@http_action
async def not_a_response(ctx: Any, request: Request) -> dict[str, str]:
    return {"oops": "a dict"}


@http_action
async def count_upload(ctx: Any, request: Request) -> Response:
    chunks = 0
    size = 0
    async for chunk in request.stream():
        chunks += 1
        size += len(chunk)
    return Response.json({"size": size, "chunks": chunks})


@http_action
async def whole_body(ctx: Any, request: Request) -> Response:
    return Response(str(len(await request.body())))


def router() -> HttpRouter:
    http = HttpRouter()
    http.route(path="/echo", method="POST", handler=echo)
    http.route(path="/describe", method="GET", handler=describe)
    http.route(path="/describe", method="PUT", handler=describe)
    http.route(path_prefix="/files/", method="GET", handler=download)
    http.route(path_prefix="/files/deep/", method="GET", handler=deep)
    http.route(path="/files/exact", method="GET", handler=exact)
    http.route(path="/notes", method="POST", handler=notes)
    http.route(path="/boom", method="GET", handler=boom)
    http.route(path="/refuse", method="GET", handler=refuse)
    http.route(path="/dict", method="GET", handler=not_a_response)
    http.route(path="/upload", method="POST", handler=count_upload)
    http.route(path="/whole", method="POST", handler=whole_body)
    return http


MODULES: dict[str, Any] = {"notes": {"add": add, "bodies": bodies}}


@pytest.fixture
async def client(site: MakeSite) -> AsyncIterator[httpx.AsyncClient]:
    served = await site({**MODULES, "http": {"http": router()}})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        yield c


@pytest.fixture
async def dev_client(site: MakeSite) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app served as ``basalt dev`` serves it (errors told in full)."""
    served = await site({**MODULES, "http": {"http": router()}}, dev=True)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        yield c


async def test_json_in_json_out(client: httpx.AsyncClient) -> None:
    r = await client.post("/echo", json={"a": [1, 2], "b": "é"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"got": {"a": [1, 2], "b": "é"}, "method": "POST"}


async def test_request_parts(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/describe?q=x%20y&tag=a&tag=b",
        content="some text",
        headers={"x-custom-header": "Value"},
    )
    assert r.json() == {
        "method": "PUT",
        "path": "/describe",
        "url": str(client.base_url).rstrip("/") + "/describe?q=x%20y&tag=a&tag=b",
        "q": "x y",
        "tags": ["a", "b"],
        "header": "Value",
        "text": "some text",
    }


async def test_prefix_routes_and_exact_paths(client: httpx.AsyncClient) -> None:
    r = await client.get("/files/a/b.txt")
    assert (r.status_code, r.content) == (200, b"a/b.txt")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == "7"
    assert (await client.get("/files/deep/x")).text == "deep prefix"  # longest prefix
    r = await client.get("/files/exact")  # exact path beats prefixes
    assert (r.status_code, r.text) == (201, "exact")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_unknown_path_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere")
    assert r.status_code == 404
    assert r.text == "No HTTP route for GET /nowhere"
    r = await client.delete("/describe")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, PUT"
    assert "DELETE is not allowed for /describe" in r.text
    r = await client.post("/files/x")  # under a prefix routed for GET only
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")


async def test_head_uses_the_get_route(client: httpx.AsyncClient) -> None:
    r = await client.head("/files/abc")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "3"


async def test_handler_calls_mutations_and_queries(client: httpx.AsyncClient) -> None:
    r = await client.post("/notes", json={"body": "hi"})
    assert r.status_code == 200
    assert isinstance(r.json()["id"], str)
    assert r.json()["all"] == ["hi", "hi!"]


async def test_a_raising_handler_gets_500_and_the_server_keeps_serving(
    dev_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = dev_client
    with caplog.at_level(logging.ERROR, logger="basalt.http"):
        r = await client.get("/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["code"] == "InternalServerError"
    assert "Uncaught ValueError: the handler blew up" in body["message"]
    assert body["message"].startswith("[Request ID: ")
    assert "data" not in body
    assert any("HTTP action GET /boom" in rec.getMessage() for rec in caplog.records)
    assert (await client.post("/echo", json=1)).json()["got"] == 1


async def test_a_raising_handler_tells_a_production_client_only_a_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="basalt.http"):
        r = await client.get("/boom")
    assert r.status_code == 500
    body = r.json()
    rid = re.fullmatch(r"\[Request ID: ([0-9a-f]+)\] Server Error", body["message"])
    assert rid, body
    assert body == {"code": "InternalServerError", "message": body["message"]}
    # The server log has the whole error under that request id.
    [record] = [rec for rec in caplog.records if "HTTP action GET /boom failed" in rec.getMessage()]
    assert rid.group(1) in record.getMessage()
    assert "the handler blew up" in record.getMessage()


async def test_convex_error_data_reaches_the_client(client: httpx.AsyncClient) -> None:
    r = await client.get("/refuse")
    assert r.status_code == 500
    assert r.json()["code"] == "ConvexError"
    assert r.json()["data"] == {"code": "NOPE", "retry": False}


async def test_returning_something_else_than_a_response(
    dev_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="basalt.http"):
        r = await dev_client.get("/dict")
    assert r.status_code == 500
    assert "HTTP action GET /dict returned dict, not a Response" in r.json()["message"]
    assert any("GET /dict" in rec.getMessage() for rec in caplog.records)


async def test_bad_json_body_is_the_handlers_error(
    dev_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="basalt"):
        r = await dev_client.post("/echo", content=b"{not json")
    assert r.status_code == 500
    message = r.json()["message"]
    assert "JSONDecodeError" in message
    # Where: the handler's line (this file), never json's decoder or Basalt's request.
    echo_line = echo.handler.__code__.co_firstlineno + 2  # @http_action, def, return
    assert re.findall(r"^    at (.+)$", message, re.M) == [f"echo ({__file__}:{echo_line})"]
    [logged] = [r.getMessage() for r in caplog.records if "HTTP action" in r.getMessage()]
    assert logged.endswith(f"(at echo, {__file__}:{echo_line})"), logged


async def test_request_body_streams_in(client: httpx.AsyncClient) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000

    r = await client.post("/upload", content=parts())
    assert r.json()["size"] == 5000
    assert r.json()["chunks"] >= 1


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/whole", content=b"y" * (20 << 20))
    assert r.text == str(20 << 20)
    r = await client.post("/whole", content=b"y" * ((20 << 20) + 1))
    assert r.status_code == 413
    assert r.json()["code"] == "PayloadTooLarge"


async def test_routes_follow_app_reloads(site: MakeSite) -> None:
    served = await site({"http": {"http": router()}})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        assert (await c.get("/fresh")).status_code == 404
        http = HttpRouter()
        http.route(path="/fresh", method="GET", handler=download)
        await served.runtime.reload(App.from_modules({"http": {"http": http}}))
        assert (await c.get("/fresh")).status_code == 200
        await served.runtime.reload(App.from_modules({}))
        r = await c.get("/fresh")
        assert (r.status_code, r.text) == (
            404,
            "No HTTP route for GET /fresh: the app has no http.py router",
        )


async def test_an_http_py_without_a_router(site: MakeSite) -> None:
    served = await site({})
    served.runtime.app.http = {"not": "a router"}
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        r = await c.get("/x")
    assert r.status_code == 500
    assert r.text == "http.py must define `http = HttpRouter()`, got dict"


async def test_streaming_response_from_a_list(site: MakeSite) -> None:
    async def handler(ctx: Any, request: Request) -> StreamingResponse:
        return StreamingResponse(["a", b"b", "é"], content_type="text/plain; charset=utf-8")

    http = HttpRouter()
    http.route(path="/list", method="GET", handler=handler)
    served = await site({"http": {"http": http}})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        r = await c.get("/list")
    assert r.text == "abé"
    assert r.headers["transfer-encoding"] == "chunked"
