"""The official Python client (PyPI ``convex`` 0.8.1, ``ConvexHttpClient``)
against a real ``basalt serve``: calls, errors, values, pagination, internal
functions and failed mutations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from convex import ConvexError, ConvexInt64
from convex.http_client import ConvexExecutionError, ConvexHttpClient

import basalt
from basalt import Int64
from basalt.testing import BasaltTest

from .harness import ADMIN_KEY, BasaltProcess

# -- queries, mutations, actions ------------------------------------------------


def test_mutation_then_query(client: ConvexHttpClient, tag: str) -> None:
    note_id = client.mutation("notes:add", {"tag": tag, "body": "hello", "pos": 1.0})
    assert isinstance(note_id, str) and len(note_id) == 32
    docs = client.query("notes:list", {"tag": tag})
    assert len(docs) == 1
    doc = docs[0]
    assert doc["_id"] == note_id
    assert isinstance(doc["_creationTime"], float)
    assert (doc["tag"], doc["body"], doc["pos"]) == (tag, "hello", 1.0)


def test_action_runs_queries_and_mutations(client: ConvexHttpClient, tag: str) -> None:
    result = client.action("relay:add_all", {"tag": tag, "bodies": ["a", "b", "c"]})
    # ctx.run_mutation wrote, ctx.run_query read back (also an internal query).
    assert result == {"bodies": ["a", "b", "c"], "count": 3.0}
    assert type(result["count"]) is float  # len() in a query: a number
    assert client.query("notes:bodies", {"tag": tag}) == ["a", "b", "c"]


def assert_integers_as_clients_need_them(counts: Any, validated: Any) -> None:
    """What values:counts / values:count_int64 give after one store_count of 41."""
    # len(rows) is a plain int: a number, on which arithmetic works.
    assert type(counts["count"]) is float and counts["count"] + 1 == 2.0
    assert type(counts["next"]) is float and counts["next"] == 2.0
    # Int64(...), a v.int64() validator and an int stored in a document: int64.
    assert type(counts["explicit"]) is ConvexInt64 and counts["explicit"].value == 1
    assert [type(x) for x in counts["stored"]] == [ConvexInt64]
    assert counts["stored"][0].value == 41
    assert type(validated["count"]) is ConvexInt64 and validated["count"].value == 1
    assert type(validated["of"]) is float


def test_plain_ints_arrive_as_numbers_and_int64s_as_int64(
    client: ConvexHttpClient, tag: str
) -> None:
    client.mutation("values:store_count", {"tag": tag, "n": 41})
    assert_integers_as_clients_need_them(
        client.query("values:counts", {"tag": tag}),
        client.query("values:count_int64", {"tag": tag}),
    )


def shape(value: Any) -> Any:
    """The types of a value as received, with either client's int64 as "int64"."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if type(value) in (ConvexInt64, Int64):
        return ("int64", int(value.value if type(value) is ConvexInt64 else value))
    return (type(value).__name__, value)


async def test_the_harness_returns_what_the_python_client_receives(
    client: ConvexHttpClient, basic_app: Path, tag: str
) -> None:
    """The pytest fixture's results have the types a client gets: a test that
    passes on the harness does not break a real client."""
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("mutation", "values:store_count", {"tag": tag, "n": 41.0}),
        ("query", "values:counts", {"tag": tag}),
        ("query", "values:count_int64", {"tag": tag}),
        ("action", "relay:add_all", {"tag": tag, "bodies": ["a"]}),
        ("query", "values:describe", {"value": 3}),
        ("query", "values:describe", {"value": [1.5, b"x", None]}),
    ]
    async with BasaltTest(basic_app) as t:
        for kind, path, args in calls:
            over_http = getattr(client, kind)(path, args)
            in_harness = await getattr(t, kind)(path, args)
            if path == "values:store_count":
                continue  # document ids differ
            assert shape(in_harness) == shape(over_http), path
        # An int64 argument: ConvexInt64 for the client, Int64 in the harness.
        sent = client.query("values:describe", {"value": ConvexInt64(5)})
        assert shape(await t.query("values:describe", {"value": Int64(5)})) == shape(sent)
        # ConvexError data comes back decoded as the WebSocket client decodes it
        # (this HTTP client leaves it as raw JSON).
        with pytest.raises(basalt.ConvexError) as harness_error:
            await t.mutation("values:fail_with", {"data": {"n": 2, "i": Int64(7)}})
        assert shape(harness_error.value.data) == {"n": ("float", 2.0), "i": ("int64", 7)}


def test_an_int_beyond_2_to_the_53_fails_naming_its_path(admin_client: ConvexHttpClient) -> None:
    with pytest.raises(ConvexExecutionError) as info:
        admin_client.query("values:too_big")
    message = str(info.value)
    assert "Invalid value at .total: int 9007199254740993 is beyond ±2**53" in message
    assert "Int64(9007199254740993)" in message


def test_convex_error_data_reaches_the_client(client: ConvexHttpClient) -> None:
    data = {"code": "NOPE", "detail": "not allowed", "n": 1.5, "list": ["x", True, None]}
    with pytest.raises(ConvexError) as info:
        client.mutation("values:fail_with", {"data": data})
    assert info.value.data == data


def test_convex_error_with_string_data(client: ConvexHttpClient) -> None:
    with pytest.raises(ConvexError) as info:
        client.mutation("values:fail_with", {"data": "plain message"})
    assert info.value.data == "plain message"


def test_convex_error_through_an_action(client: ConvexHttpClient) -> None:
    with pytest.raises(ConvexError) as info:
        client.action("relay:fail_inside", {"data": {"code": "DEEP"}})
    assert info.value.data == {"code": "DEEP"}


def test_ordinary_exception_is_an_execution_error(
    client: ConvexHttpClient, admin_client: ConvexHttpClient
) -> None:
    # The admin is told what was raised; anyone else only Convex's production answer.
    with pytest.raises(ConvexExecutionError) as info:
        admin_client.query("values:boom")
    message = str(info.value)
    assert "ValueError" in message
    assert "kaboom: something broke" in message
    assert "Server Error" in message
    with pytest.raises(ConvexExecutionError, match=r"^\[Request ID: [0-9a-f]+\] Server Error$"):
        client.query("values:boom")


# -- values ---------------------------------------------------------------------

ROUND_TRIP = [
    pytest.param(ConvexInt64(-5), id="int64-minus-5"),
    pytest.param(ConvexInt64(2**62), id="int64-2^62"),
    pytest.param(ConvexInt64(-(2**63)), id="int64-min"),
    pytest.param(b"\x00\x01\xfe\xff" * 3, id="bytes"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(2.0, id="float-whole"),
    pytest.param(1e20, id="float-large"),
    pytest.param(-0.0, id="float-minus-zero"),
    pytest.param(math.inf, id="float-inf"),
    pytest.param(-math.inf, id="float-minus-inf"),
    pytest.param(
        {"i": ConvexInt64(7), "b": b"\x00", "f": [0.5, -0.0], "s": "é", "n": None, "t": True},
        id="nested",
    ),
]


def same(a: object, b: object) -> bool:
    """Equality that tells -0.0 from 0.0, float from int64, and treats NaN as NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_value_round_trips_through_args_and_results(
    client: ConvexHttpClient, value: object
) -> None:
    assert same(client.query("values:echo", {"value": value}), value)
    assert same(client.action("values:echo_action", {"value": value}), value)


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_value_round_trips_through_storage(
    client: ConvexHttpClient, tag: str, value: object
) -> None:
    client.mutation("values:store", {"tag": tag, "value": value})
    assert same(client.query("values:load", {"tag": tag}), [value])


def test_nan_round_trips(client: ConvexHttpClient, tag: str) -> None:
    echoed = client.query("values:echo", {"value": math.nan})
    assert isinstance(echoed, float) and math.isnan(echoed)
    client.mutation("values:store", {"tag": tag, "value": [math.nan]})
    [[stored]] = client.query("values:load", {"tag": tag})
    assert isinstance(stored, float) and math.isnan(stored)


def test_server_sees_the_right_python_types(client: ConvexHttpClient) -> None:
    """Floats stay floats and int64 arrives as int on the server side too."""
    seen = client.query("values:describe", {"value": 3.0})
    assert seen == {"type": "float", "value": 3.0}
    assert type(seen["value"]) is float
    seen = client.query("values:describe", {"value": ConvexInt64(3)})
    assert seen == {"type": "Int64", "value": ConvexInt64(3)}
    assert type(seen["value"]) is ConvexInt64
    # The client sends a Python int as a float64.
    assert client.query("values:describe", {"value": 3}) == {"type": "float", "value": 3.0}
    assert client.query("values:describe", {"value": b"\x01"})["type"] == "bytes"


# -- pagination -----------------------------------------------------------------


def test_pagination_over_three_pages(client: ConvexHttpClient, tag: str) -> None:
    bodies = [f"note-{i}" for i in range(8)]
    ids = [
        client.mutation("notes:add", {"tag": tag, "body": b, "pos": float(i)})
        for i, b in enumerate(bodies)
    ]
    seen: list[str] = []
    pages = []
    cursor = None
    for _ in range(10):
        result = client.query(
            "notes:page", {"tag": tag, "paginationOpts": {"numItems": 3, "cursor": cursor}}
        )
        assert set(result) >= {"page", "isDone", "continueCursor"}
        assert isinstance(result["continueCursor"], str)
        pages.append([doc["body"] for doc in result["page"]])
        seen += [doc["_id"] for doc in result["page"]]
        if result["isDone"]:
            break
        cursor = result["continueCursor"]
    assert pages == [bodies[0:3], bodies[3:6], bodies[6:8]]
    assert seen == ids


def test_pagination_of_nothing_is_done_at_once(client: ConvexHttpClient, tag: str) -> None:
    result = client.query(
        "notes:page", {"tag": tag, "paginationOpts": {"numItems": 5, "cursor": None}}
    )
    assert result["page"] == []
    assert result["isDone"] is True


def test_bad_cursor_is_an_error(admin_client: ConvexHttpClient, tag: str) -> None:
    # Raised while the query ran: told in full to the admin (anyone else: Server Error).
    with pytest.raises(ConvexExecutionError, match="cursor"):
        admin_client.query(
            "notes:page", {"tag": tag, "paginationOpts": {"numItems": 5, "cursor": "@@"}}
        )


# -- internal functions and the admin key ---------------------------------------


def test_internal_functions_need_the_admin_key(
    client: ConvexHttpClient, admin_client: ConvexHttpClient, tag: str
) -> None:
    with pytest.raises(ConvexExecutionError, match="Could not find public function"):
        client.query("notes:secret_count", {"tag": tag})
    with pytest.raises(ConvexExecutionError, match="Could not find public function"):
        client.mutation("notes:secret_add", {"tag": tag})
    # Nothing was written by the rejected call.
    assert client.query("notes:list", {"tag": tag}) == []

    admin_client.mutation("notes:secret_add", {"tag": tag})
    assert admin_client.query("notes:secret_count", {"tag": tag}) == 1.0
    # The admin key also calls public functions.
    assert admin_client.query("notes:bodies", {"tag": tag}) == ["secret"]


def test_wrong_admin_key_is_rejected(server: BasaltProcess, tag: str) -> None:
    client = ConvexHttpClient(server.url)
    client.set_admin_auth(ADMIN_KEY + "x")
    with pytest.raises(Exception, match="401") as info:
        client.query("notes:bodies", {"tag": tag})
    assert "BadAdminKey" in str(info.value)


# -- failed mutations leave no trace --------------------------------------------


def test_failed_mutation_leaves_no_trace(client: ConvexHttpClient, tag: str) -> None:
    with pytest.raises(ConvexError) as info:
        client.mutation("notes:add_then_fail", {"tag": tag})
    assert info.value.data == {"code": "FAILED_AFTER_INSERT"}
    assert client.query("notes:list", {"tag": tag}) == []


def test_mutation_failing_on_last_insert_leaves_none(
    client: ConvexHttpClient, admin_client: ConvexHttpClient, tag: str
) -> None:
    with pytest.raises(ConvexExecutionError, match="body") as info:
        admin_client.mutation("notes:add_many_then_fail", {"tag": tag, "count": 6.0})
    assert "notes" in str(info.value)  # the schema error names the table
    assert client.query("notes:list", {"tag": tag}) == []
    # The table and its index still work for later writes.
    client.mutation("notes:add", {"tag": tag, "body": "after", "pos": 0.0})
    assert client.query("notes:bodies", {"tag": tag}) == ["after"]
