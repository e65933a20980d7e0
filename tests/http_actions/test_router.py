"""Route definitions (Convex's rules), lookup, and the request/response types."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from basalt import query
from basalt.errors import AppLoadError, SchemaDefinitionError
from basalt.runtime import load_app
from basalt.runtime.functions import Function, http_action
from basalt.runtime.http_messages import Headers, Request, Response, StreamingResponse
from basalt.runtime.http_router import HttpRouter, cors_router


@http_action
async def one(ctx: Any, request: Request) -> Response:
    return Response("one")


@http_action
async def two(ctx: Any, request: Request) -> Response:
    return Response("two")


@query
async def a_query(ctx: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "GET"}, "exactly one of path= (an exact path) or path_prefix="),
        ({"method": "GET", "path": "/a", "path_prefix": "/a/"}, "got both"),
        ({"method": "GET", "path": "a"}, "path must start with '/', got 'a'"),
        ({"method": "GET", "path_prefix": "a/"}, "path_prefix must start with '/'"),
        ({"method": "GET", "path_prefix": "/files"}, "did you mean '/files/'?"),
        ({"method": "FETCH", "path": "/a"}, "method must be one of GET, POST, PUT, DELETE"),
        ({"method": "HEAD", "path": "/a"}, "HEAD requests are answered by the GET route"),
    ],
)
def test_bad_routes_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaDefinitionError, match=re.escape(message)):
        HttpRouter().route(handler=one, **kwargs)


def test_duplicates_are_refused() -> None:
    http = HttpRouter()
    http.route(path="/a", method="GET", handler=one)
    http.route(path="/a", method="post", handler=one)  # another method is fine
    with pytest.raises(
        SchemaDefinitionError, match=r"GET /a is routed twice: it already goes to one"
    ):
        http.route(path="/a", method="GET", handler=two)
    http.route(path_prefix="/a/", method="GET", handler=one)
    with pytest.raises(SchemaDefinitionError, match=r"GET /a/\* is routed twice"):
        http.route(path_prefix="/a/", method="GET", handler=two)


def test_handlers() -> None:
    http = HttpRouter()
    with pytest.raises(SchemaDefinitionError, match=r"must be an @http_action, got <public query"):
        http.route(path="/q", method="GET", handler=a_query)

    def sync_handler(ctx: Any, request: Request) -> Response:
        return Response()

    with pytest.raises(SchemaDefinitionError, match=r"must be an @http_action \(async def"):
        http.route(path="/s", method="GET", handler=sync_handler)

    async def plain(ctx: Any, request: Request) -> Response:
        return Response()

    route = http.route(path="/p", method="GET", handler=plain)
    assert isinstance(route.handler, Function) and route.handler.kind == "http_action"
    assert route.handler.handler is plain


def test_lookup_rules() -> None:
    http = HttpRouter()
    http.route(path_prefix="/", method="GET", handler=one)
    http.route(path_prefix="/files/", method="GET", handler=two)
    http.route(path="/files/x", method="POST", handler=two)
    exact = http.route(path="/files/exact", method="GET", handler=one)
    assert http.lookup("/files/exact", "GET") is exact
    assert http.lookup("/files/a/b", "GET").pattern == "/files/*"  # type: ignore[union-attr]
    assert http.lookup("/files/a/b", "head").label == "GET /files/*"  # type: ignore[union-attr]
    assert http.lookup("/other", "GET").pattern == "/*"  # type: ignore[union-attr]
    assert http.lookup("/files/x", "GET").pattern == "/files/*"  # type: ignore[union-attr]
    assert http.lookup("/files/x", "POST").label == "POST /files/x"  # type: ignore[union-attr]
    assert http.lookup("/files/y", "POST") is None
    assert http.allowed_methods("/files/x") == ["GET", "HEAD", "POST"]
    assert http.allowed_methods("/anything") == ["GET", "HEAD"]
    assert [r.label for r in http.routes()] == [
        "GET /files/exact",
        "POST /files/x",
        "GET /*",
        "GET /files/*",
    ]


def test_cors_definitions() -> None:
    http = HttpRouter()
    with pytest.raises(SchemaDefinitionError, match=r"'https://app.test/' must be scheme://host"):
        cors_router(http, allowed_origins=["https://app.test/"])
    with pytest.raises(SchemaDefinitionError, match=r"'bad header' is not an HTTP header name"):
        cors_router(http, allowed_headers=["bad header"])
    cors = cors_router(http, allowed_origins="https://app.test")
    assert cors.allow_origin("https://app.test") == "https://app.test"
    assert cors.allow_origin("https://other.test") is None
    with pytest.raises(SchemaDefinitionError, match=r"answers OPTIONS \(preflight\) requests"):
        cors.route(path="/a", method="OPTIONS", handler=one)
    http.route(path="/mine", method="OPTIONS", handler=one)
    with pytest.raises(SchemaDefinitionError, match=r"do not route OPTIONS for them yourself"):
        cors.route(path="/mine", method="GET", handler=one)


def test_headers_and_query_params() -> None:
    headers = Headers({"Content-Type": "text/plain"})
    headers.append("Set-Cookie", "a=1")
    headers.append("set-cookie", "b=2")
    assert headers["content-type"] == "text/plain"
    assert headers["SET-COOKIE"] == "a=1, b=2"
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert list(headers) == ["content-type", "set-cookie"]
    headers["Set-Cookie"] = "c=3"
    assert headers.get_all("set-cookie") == ["c=3"]
    del headers["content-type"]
    assert "Content-Type" not in headers and len(headers) == 1
    with pytest.raises(ValueError, match="invalid value"):
        headers["x"] = "a\r\nInjected: 1"
    with pytest.raises(ValueError, match="invalid HTTP header name"):
        headers["bad name"] = "x"
    with pytest.raises(ValueError, match="Latin-1"):
        headers["x"] = "日本"
    request = Request("get", "http://h.test/a%20b?x=1&x=2&y=", body="hi")
    assert (request.method, request.path) == ("GET", "/a b")
    assert request.query_params["x"] == "1"
    assert request.query_params.get_all("x") == ["1", "2"]
    assert dict(request.query_params) == {"x": "1", "y": ""}


async def test_request_bodies() -> None:
    async def parts() -> Any:
        yield b'{"a": '
        yield b"1}"

    request = Request("POST", "http://h.test/", body=parts())
    assert await request.json() == {"a": 1}
    assert await request.text() == '{"a": 1}'
    assert [c async for c in request.stream()] == [b'{"a": 1}']
    streamed = Request("POST", "http://h.test/", body=parts())
    assert [c async for c in streamed.stream()] == [b'{"a": ', b"1}"]
    with pytest.raises(RuntimeError, match="already read"):
        await streamed.body()


def test_response_checks() -> None:
    assert Response().body == b"" and Response().status == 200
    assert Response.json([1, "é"]).body == '[1,"é"]'.encode()
    with pytest.raises(ValueError, match="status must be an int from 200 to 599"):
        Response(status=99)
    with pytest.raises(ValueError, match="a 204 response cannot have a body"):
        Response("x", status=204)
    with pytest.raises(TypeError, match=r"use Response.json\(data\) for JSON"):
        Response({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="use Response for a complete body"):
        StreamingResponse("text")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        Response.json(float("nan"))


def test_http_py_in_an_app_folder(tmp_path: Path) -> None:
    (tmp_path / "http.py").write_text(
        "from basalt.runtime.functions import http_action\n"
        "from basalt.runtime.http_messages import Response\n"
        "from basalt.runtime.http_router import HttpRouter\n"
        "http = HttpRouter()\n"
        "@http_action\n"
        "async def hello(ctx, request):\n"
        "    return Response('hi')\n"
        "http.route(path='/hello', method='GET', handler=hello)\n"
    )
    app = load_app(tmp_path)
    assert isinstance(app.http, HttpRouter)
    assert [r.label for r in app.http.routes()] == ["GET /hello"]
    assert not any(f.kind == "http_action" for f in app.functions.values())
    (tmp_path / "http.py").write_text(
        "from basalt.runtime.http_router import HttpRouter\n"
        "http = HttpRouter()\n"
        "async def hello(ctx, request): ...\n"
        "http.route(path='hello', method='GET', handler=hello)\n"
    )
    with pytest.raises(AppLoadError, match=r"http.py:4: .*path must start with '/', got 'hello'"):
        load_app(tmp_path)
