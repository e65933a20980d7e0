"""The Convex HTTP API over raw HTTP (httpx), and bad input of every kind.

Every bad-input test ends by checking that the server still serves and that a
note committed before the bad request is intact.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from convex.http_client import ConvexExecutionError, ConvexHttpClient

import basalt

from .harness import ADMIN_KEY, BasaltProcess

MINUS_5 = {"$integer": "+/////////8="}  # int64 -5 in convex_encoded_json
ENCODED = "convex_encoded_json"


@pytest.fixture
def committed(client: ConvexHttpClient, tag: str) -> Iterator[str]:
    """A note committed before the test; the test checks that it survives."""
    client.mutation("notes:add", {"tag": tag, "body": "committed before", "pos": 0.0})
    yield tag


def assert_still_serving(client: ConvexHttpClient, tag: str) -> None:
    assert client.query("notes:bodies", {"tag": tag}) == ["committed before"]
    assert client.query("values:echo", {"value": "ping"}) == "ping"


def call(http: httpx.Client, route: str, body: object, **kw: object) -> httpx.Response:
    return http.post(route, content=json.dumps(body).encode(), **kw)  # type: ignore[arg-type]


def as_int(ts: str) -> int:
    """A ``/api/query_ts`` timestamp (base64 little-endian u64) as a number."""
    return int.from_bytes(base64.b64decode(ts), "little")


def assert_http_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """A failure outside any function: non-2xx with JSON ``{code, message}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return str(body["message"])


def function_error(response: httpx.Response) -> str:
    """A function that failed: HTTP 200, ``status: error``, no ``errorData``."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "error", body
    assert "errorData" not in body
    return str(body["errorMessage"])


# -- the routes -----------------------------------------------------------------


def test_query_with_encoded_json(http: httpx.Client) -> None:
    r = call(
        http, "/api/query", {"path": "values:echo", "args": {"value": MINUS_5}, "format": ENCODED}
    )
    assert r.status_code == 200
    assert r.json() == {"status": "success", "value": MINUS_5}


def test_legacy_one_element_args_array(http: httpx.Client) -> None:
    r = call(
        http, "/api/query", {"path": "values:echo", "args": [{"value": "x"}], "format": ENCODED}
    )
    assert r.json() == {"status": "success", "value": "x"}


def test_floats_are_written_as_floats(http: httpx.Client) -> None:
    """The Python client rejects a bare JSON integer: 2.0 must be written as 2.0."""
    r = call(http, "/api/query", {"path": "values:echo", "args": {"value": 2}, "format": ENCODED})
    assert r.status_code == 200
    assert '"value":2.0' in r.text.replace(" ", "")
    r = call(
        http,
        "/api/query",
        {"path": "values:echo", "args": {"value": {"$float": "AAAAAAAAAIA="}}, "format": ENCODED},
    )
    assert r.json()["value"] == {"$float": "AAAAAAAAAIA="}  # -0.0 keeps its sign


def test_function_route_runs_any_kind(http: httpx.Client, tag: str) -> None:
    r = call(
        http,
        "/api/function",
        {"path": "notes:add", "args": {"tag": tag, "body": "f", "pos": 1.0}, "format": ENCODED},
    )
    assert r.json()["status"] == "success"
    r = call(
        http, "/api/function", {"path": "notes:bodies", "args": {"tag": tag}, "format": ENCODED}
    )
    assert r.json() == {"status": "success", "value": ["f"]}


def test_path_canonicalisation(http: httpx.Client) -> None:
    for path in ("values.js:echo", "values.py:echo"):
        r = call(http, "/api/query", {"path": path, "args": {"value": "x"}, "format": ENCODED})
        assert r.json() == {"status": "success", "value": "x"}, path


def test_get_query_with_path_and_args_in_the_query_string(http: httpx.Client) -> None:
    params = {"path": "values:echo", "args": json.dumps({"value": MINUS_5}), "format": ENCODED}
    r = http.get("/api/query", params=params)
    assert r.json() == {"status": "success", "value": MINUS_5}
    # Non-ASCII text in the query string.
    args = json.dumps({"value": "é ü ∑ +&="}, ensure_ascii=False)
    r = http.get("/api/query", params={"path": "values:echo", "args": args, "format": ENCODED})
    assert r.json() == {"status": "success", "value": "é ü ∑ +&="}
    # Without a format, clean JSON.
    r = http.get(
        "/api/query", params={"path": "values:echo", "args": json.dumps({"value": MINUS_5})}
    )
    assert r.json() == {"status": "success", "value": "-5"}


def test_run_route_defaults_to_clean_json(http: httpx.Client, tag: str) -> None:
    r = call(
        http, "/api/run/values/echo", {"args": {"value": {"list": [MINUS_5, {"$bytes": "AAE="}]}}}
    )
    assert r.status_code == 200
    assert r.json() == {"status": "success", "value": {"list": ["-5", "AAE="]}}
    # A mutation and a query through /api/run/<module>/<function>.
    r = call(http, "/api/run/notes/add", {"args": {"tag": tag, "body": "run", "pos": 3.0}})
    assert r.json()["status"] == "success"
    r = call(http, "/api/run/notes/list", {"args": {"tag": tag}})
    [doc] = r.json()["value"]
    assert (doc["body"], doc["pos"]) == ("run", 3.0)
    # An explicit format wins.
    r = call(http, "/api/run/values/echo", {"args": {"value": MINUS_5}, "format": ENCODED})
    assert r.json()["value"] == MINUS_5


def test_query_batch(http: httpx.Client, tag: str) -> None:
    r = call(
        http,
        "/api/query_batch",
        {
            "queries": [
                {"path": "values:echo", "args": {"value": MINUS_5}, "format": ENCODED},
                {"path": "notes:bodies", "args": {"tag": tag}, "format": ENCODED},
                {"path": "notes:nope", "args": {}, "format": ENCODED},
            ]
        },
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[0] == {"status": "success", "value": MINUS_5}
    assert results[1] == {"status": "success", "value": []}
    assert results[2]["status"] == "error"
    assert "notes:nope" in results[2]["errorMessage"]


def test_query_ts_and_query_at_ts(http: httpx.Client, client: ConvexHttpClient, tag: str) -> None:
    client.mutation("notes:add", {"tag": tag, "body": "before ts", "pos": 0.0})
    r = http.post("/api/query_ts")
    assert r.status_code == 200
    ts = r.json()["ts"]
    assert isinstance(ts, str)
    r = call(
        http,
        "/api/query_at_ts",
        {"path": "notes:bodies", "args": {"tag": tag}, "ts": ts, "format": ENCODED},
    )
    assert r.json() == {"status": "success", "value": ["before ts"]}
    # A later ts is never smaller.
    later = http.post("/api/query_ts").json()["ts"]
    assert as_int(later) >= as_int(ts)
    future = base64.b64encode((as_int(later) + 10**15).to_bytes(8, "little")).decode()
    r = call(http, "/api/query_at_ts", {"path": "notes:bodies", "args": {"tag": tag}, "ts": future})
    assert_http_error(r, 400)
    r = call(http, "/api/query_at_ts", {"path": "notes:bodies", "args": {"tag": tag}, "ts": "bad"})
    assert "ts" in assert_http_error(r, 400)


def test_query_at_ts_never_shows_later_commits(
    http: httpx.Client, client: ConvexHttpClient, tag: str
) -> None:
    client.mutation("notes:add", {"tag": tag, "body": "before", "pos": 0.0})
    ts = http.post("/api/query_ts").json()["ts"]
    body = {"path": "notes:bodies", "args": {"tag": tag}, "ts": ts, "format": ENCODED}
    # A commit elsewhere does not change what the query read: the answer is the one at ts.
    client.mutation("notes:add", {"tag": tag + "-other", "body": "unrelated", "pos": 0.0})
    assert call(http, "/api/query_at_ts", body).json() == {
        "status": "success",
        "value": ["before"],
    }
    # A commit into what the query read: Basalt keeps only current versions, so it says
    # the snapshot is gone rather than answer with later data.
    client.mutation("notes:add", {"tag": tag, "body": "after", "pos": 1.0})
    answer = call(http, "/api/query_at_ts", body).json()
    assert answer["status"] == "error"
    assert "SnapshotUnavailable" in answer["errorMessage"]
    assert "query_ts" in answer["errorMessage"]


def test_log_lines(http: httpx.Client) -> None:
    body = {"path": "values:shout", "args": {"text": "hi"}, "format": ENCODED}
    r = call(http, "/api/query", body, headers={"Authorization": f"Convex {ADMIN_KEY}"})
    assert r.json() == {
        "status": "success",
        "value": "HI",
        "logLines": ["[LOG] shouting hi", "[LOG] twice"],
    }
    # A production server sends log lines to admin callers only.
    assert call(http, "/api/query", body).json() == {"status": "success", "value": "HI"}
    # No log lines: the field is left out.
    r = call(http, "/api/query", {"path": "values:echo", "args": {"value": 1}, "format": ENCODED})
    assert "logLines" not in r.json()


def test_printed_lines_reach_the_server_output(server: BasaltProcess, http: httpx.Client) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    call(http, "/api/query", {"path": "values:shout", "args": {"text": marker}})
    server.wait_for_output(f"shouting {marker}", timeout=10.0)
    [line] = [ln for ln in server.output().splitlines() if marker in ln]
    assert "values:shout" in line  # prefixed with the function path


def test_concurrent_mutations_are_serializable(server: BasaltProcess, tag: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def bump(_: int) -> float:
        result: float = server.client().mutation("counters:increment", {"tag": tag})
        return result

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(bump, range(40)))
    # Every increment saw a distinct count: no lost update.
    assert sorted(results) == [float(i) for i in range(1, 41)]
    assert server.client().query("counters:get", {"tag": tag}) == 40.0


def test_health_and_version_tell_anonymous_callers_nothing_more_than_ok(
    server: BasaltProcess, http: httpx.Client
) -> None:
    """Load balancers get "ok"; which version runs and how far its commits are
    (write activity) are for admins. No response names the web server."""
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/api/health").json() == {"status": "ok"}
    assert http.get("/version").text == "basalt"
    admin = {"Authorization": f"Convex {ADMIN_KEY}"}
    health = http.get("/health", headers=admin).json()
    assert health["status"] == "ok" and health["version"] == basalt.__version__
    assert int(health["ts"]) > 0
    assert http.get("/version", headers=admin).text == f"basalt {basalt.__version__}"
    site = json.loads((server.data / "server.json").read_text())["siteUrl"]
    for response in (
        http.get("/health"),
        http.get("/no/such/route"),
        http.post("/api/query", json={"path": "notes:bodies", "args": {"tag": "x"}}),
        httpx.get(site + "/no/such/action", timeout=30),
    ):
        assert "server" not in response.headers, response.headers


def test_admin_key_over_raw_http(http: httpx.Client, tag: str) -> None:
    body = {"path": "notes:secret_count", "args": {"tag": tag}, "format": ENCODED}
    assert "Could not find public function" in function_error(call(http, "/api/query", body))
    r = call(http, "/api/query", body, headers={"Authorization": f"Convex {ADMIN_KEY}"})
    # len(rows), a plain int: a float64 number written as a float (the Python
    # client's HTTP decoder refuses a bare JSON integer)
    assert r.json() == {"status": "success", "value": 0.0}
    assert '"value":0.0' in r.text
    # The scheme is matched case-insensitively.
    r = call(http, "/api/query", body, headers={"Authorization": f"convex {ADMIN_KEY}"})
    assert r.json()["status"] == "success"


@pytest.mark.parametrize(
    ("headers", "params", "code"),
    [
        ({"Authorization": "Convex wrong-key"}, {}, "BadAdminKey"),
        ({"Authorization": "Convex"}, {}, "BadAdminKey"),
        ({"Authorization": "Basic abc"}, {}, "InvalidAuthHeader"),
    ],
)
def test_bad_credentials_get_401(
    http: httpx.Client,
    client: ConvexHttpClient,
    committed: str,
    headers: dict[str, str],
    params: dict[str, str],
    code: str,
) -> None:
    body = {"path": "notes:bodies", "args": {"tag": committed}, "format": ENCODED}
    assert_http_error(call(http, "/api/query", body, headers=headers, params=params), 401, code)
    assert_still_serving(client, committed)


def test_check_admin_key(http: httpx.Client) -> None:
    r = http.get("/api/check_admin_key", headers={"Authorization": f"Convex {ADMIN_KEY}"})
    assert r.status_code == 200
    assert_http_error(http.get("/api/check_admin_key"), 401)


# -- CORS -----------------------------------------------------------------------


def test_cors_mirrors_the_origin(http: httpx.Client) -> None:
    origin = "https://app.example.com"
    r = call(
        http,
        "/api/query",
        {"path": "values:echo", "args": {"value": "x"}},
        headers={"Origin": origin},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    # Errors carry the CORS headers too, so browsers can read them.
    r = http.post("/api/query", content=b"{", headers={"Origin": origin})
    assert r.status_code == 400
    assert r.headers["access-control-allow-origin"] == origin
    # No Origin, no CORS headers.
    r = call(http, "/api/query", {"path": "values:echo", "args": {"value": "x"}})
    assert "access-control-allow-origin" not in r.headers


def test_cors_preflight(http: httpx.Client) -> None:
    origin = "http://localhost:5173"
    r = http.options(
        "/api/mutation",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, convex-client",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == origin
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "content-type, authorization, convex-client"


# -- bad input: the function is wrong -------------------------------------------


def test_wrong_argument_type_names_the_field_path(client: ConvexHttpClient, committed: str) -> None:
    with pytest.raises(ConvexExecutionError) as info:
        client.query("notes:typed", {"user": {"name": "x", "tags": ["a", 3.0]}, "limit": 1.0})
    message = str(info.value)
    assert ".user.tags[1]" in message
    assert "string" in message
    with pytest.raises(ConvexExecutionError, match=r"\.limit"):
        client.query("notes:typed", {"user": {"name": "x", "tags": []}, "limit": "ten"})
    with pytest.raises(ConvexExecutionError, match=r"user"):
        client.query("notes:typed", {"limit": 1.0})
    with pytest.raises(ConvexExecutionError, match=r"extra"):
        client.query("notes:typed", {"user": {"name": "x", "tags": []}, "limit": 1.0, "extra": 1})
    assert_still_serving(client, committed)


def test_unknown_function(client: ConvexHttpClient, committed: str) -> None:
    with pytest.raises(ConvexExecutionError) as info:
        client.query("notes:nope")
    assert "notes:nope" in str(info.value)
    assert "Could not find" in str(info.value)
    assert_still_serving(client, committed)


def test_unknown_module(client: ConvexHttpClient, committed: str) -> None:
    with pytest.raises(ConvexExecutionError) as info:
        client.mutation("nomodule:fn", {})
    assert "nomodule:fn" in str(info.value)
    assert_still_serving(client, committed)


def test_query_called_as_mutation(client: ConvexHttpClient, committed: str) -> None:
    with pytest.raises(ConvexExecutionError) as info:
        client.mutation("notes:bodies", {"tag": committed})
    message = str(info.value)
    assert "notes:bodies" in message and "Mutation" in message and "Query" in message
    with pytest.raises(ConvexExecutionError, match="Action"):
        client.action("notes:add", {"tag": committed, "body": "no", "pos": 1.0})
    assert_still_serving(client, committed)


def test_unknown_table(
    client: ConvexHttpClient, admin_client: ConvexHttpClient, committed: str
) -> None:
    assert client.query("notes:read_ghosts") == []  # a table nobody wrote reads as empty
    with pytest.raises(ConvexExecutionError) as info:  # told in full to the admin
        admin_client.mutation("notes:write_ghost", {"tag": committed, "body": "boo"})
    assert "ghosts" in str(info.value)
    assert client.query("notes:read_ghosts") == []
    assert_still_serving(client, committed)


def test_string_over_one_mib_in_a_document(
    client: ConvexHttpClient, admin_client: ConvexHttpClient, committed: str
) -> None:
    with pytest.raises(ConvexExecutionError) as info:  # told in full to the admin
        admin_client.mutation("values:store", {"tag": committed, "value": "x" * ((1 << 20) + 1)})
    message = str(info.value)
    assert "1 MiB" in message or "1048576" in message
    assert client.query("values:load", {"tag": committed}) == []
    assert_still_serving(client, committed)


def test_array_over_8192_elements(client: ConvexHttpClient, committed: str) -> None:
    with pytest.raises(ConvexExecutionError, match="8192"):
        client.mutation("values:store", {"tag": committed, "value": [0.5] * 8193})
    with pytest.raises(ConvexExecutionError, match="8192"):
        client.query("values:echo", {"value": [0.5] * 8193})
    # 8192 is still fine.
    assert len(client.query("values:echo", {"value": [0.5] * 8192})) == 8192
    assert_still_serving(client, committed)


# -- bad input: the request is wrong --------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        pytest.param(b"{not json", "BadJsonBody", "JSON", id="malformed-json"),
        pytest.param(b"\xff\xfe\x00", "BadJsonBody", "JSON", id="not-utf8"),
        pytest.param(b"", "BadJsonBody", "JSON", id="empty"),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": NaN}}',
            "BadJsonBody",
            "NaN",
            id="nan-literal",
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "BadJsonBody", "nested", id="deep-nesting"),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": ' + b"[" * 65 + b"]" * 65 + b"}}",
            "BadJsonBody",
            "64",
            id="value-nested-over-64",
        ),
        pytest.param(b"[1, 2]", "BadJsonBody", "object", id="list-body"),
        pytest.param(b'"text"', "BadJsonBody", "object", id="string-body"),
        pytest.param(
            b'{"path": "values:echo", "args": [{"value": 1}, {"value": 2}]}',
            "BadJsonBody",
            "2 elements",
            id="args-list-of-two",
        ),
        pytest.param(
            b'{"path": "values:echo", "args": "x"}', "BadJsonBody", "object", id="args-string"
        ),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": {"$set": [1]}}}',
            "BadJsonBody",
            "$set",
            id="dollar-set",
        ),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": {"$integer": "AAA"}}}',
            "BadJsonBody",
            "$integer",
            id="integer-bad-base64",
        ),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": {"$integer": "AAAA"}}}',
            "BadJsonBody",
            "8 bytes",
            id="integer-wrong-length",
        ),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": {"$float": "AAAAAAAA8D8="}}}',
            "BadJsonBody",
            "$float",
            id="float-for-ordinary-number",
        ),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": {"a": 1, "$b": 2}}}',
            "BadJsonBody",
            "$b",
            id="dollar-field",
        ),
        pytest.param(b'{"args": {}}', "BadRequest", "path", id="missing-path"),
        pytest.param(b'{"path": "", "args": {}}', "BadRequest", "path", id="empty-path"),
        pytest.param(b'{"path": ["a"], "args": {}}', "BadRequest", "path", id="path-not-string"),
        pytest.param(
            b'{"path": "values:echo", "args": {"value": 1}, "format": "xml"}',
            "BadFormat",
            "xml",
            id="unsupported-format",
        ),
    ],
)
def test_bad_request_body(
    http: httpx.Client,
    client: ConvexHttpClient,
    committed: str,
    body: bytes,
    code: str,
    mentions: str,
) -> None:
    message = assert_http_error(http.post("/api/query", content=body), 400, code)
    assert mentions in message
    assert_still_serving(client, committed)


BAD_REQUEST_MESSAGES = {
    "no-path": ({"args": {}}, '"path" is missing: name the function to call, like "messages:list"'),
    "path-number": (
        {"path": 5, "args": {}},
        '"path" must be a function path like "messages:list", got a number',
    ),
    "args-array": (
        {"path": "values:echo", "args": [1]},
        "args must be an object, got an array holding a number",
    ),
    "args-string": ({"path": "values:echo", "args": "x"}, "args must be an object, got a string"),
    "args-int64": (
        {"path": "values:echo", "args": MINUS_5},
        "args must be an object, got a $integer value",
    ),
}


@pytest.mark.parametrize("body_message", BAD_REQUEST_MESSAGES.values(), ids=BAD_REQUEST_MESSAGES)
def test_a_bad_request_says_what_is_wrong(
    http: httpx.Client, body_message: tuple[dict[str, object], str]
) -> None:
    body, expected = body_message
    assert assert_http_error(call(http, "/api/query", body), 400) == expected


def test_a_get_query_without_a_path_says_it_is_missing(http: httpx.Client) -> None:
    message = assert_http_error(http.get("/api/query"), 400, "BadRequest")
    assert message == '"path" is missing: name the function to call, like "messages:list"'


def test_bad_mutation_request_writes_nothing(
    http: httpx.Client, client: ConvexHttpClient, committed: str
) -> None:
    body = b'{"path": "notes:add", "args": {"tag": "%s", "body": {"$set": []}, "pos": 1}}' % (
        committed.encode()
    )
    assert_http_error(http.post("/api/mutation", content=body), 400, "BadJsonBody")
    assert_still_serving(client, committed)


def test_unknown_route_is_a_json_404(
    http: httpx.Client, client: ConvexHttpClient, committed: str
) -> None:
    for method, route in (("GET", "/nope"), ("POST", "/api/nope"), ("GET", "/api/query_batch")):
        assert_http_error(http.request(method, route), 404, "NotFound")
    assert_still_serving(client, committed)


def test_wrong_method_on_a_function_route(http: httpx.Client) -> None:
    assert_http_error(http.get("/api/mutation"), 405)
    assert_http_error(http.put("/api/query", content=b"{}"), 405)


def test_run_route_needs_module_and_function(http: httpx.Client) -> None:
    assert "/api/run/<module>/<function>" in assert_http_error(http.post("/api/run/values"), 400)


def test_body_over_the_request_limit(
    http: httpx.Client, client: ConvexHttpClient, committed: str
) -> None:
    huge = b'{"path": "values:echo", "args": {"value": "' + b"x" * (17 << 20) + b'"}}'
    try:
        r = http.post("/api/query", content=huge)
    except httpx.TransportError:
        pass  # the server may close the connection before the whole body is sent
    else:
        assert_http_error(r, 413, "PayloadTooLarge")
    assert_still_serving(client, committed)


def test_server_keeps_serving_other_clients_after_bad_requests(
    server: BasaltProcess, committed: str
) -> None:
    with httpx.Client(base_url=server.url) as h:
        for _ in range(20):
            h.post("/api/query", content=b"{oops")
    assert_still_serving(server.client(), committed)
