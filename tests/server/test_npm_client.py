"""The official npm client (``convex`` 1.48.0 on Node, ``tests/js``) against a
real ``basalt serve``.

Each test runs one check of a Node script (``node tests/js/<script>.mjs
<check>``) in its own process against the session server of the ``basic``
app, and asserts on the JSON line it prints. The scripts only record what the
client saw (values described with their JS types, WebSocket frames); the
expectations live here. ``make install`` installs the Node packages
(``npm ci --prefix tests/js``); without Node or them the tests are skipped,
or fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import BasaltProcess

JS = Path(__file__).resolve().parents[1] / "js"
CONVEX_VERSION = "1.48.0"

Check = Callable[..., dict[str, Any]]


def _missing_node() -> str | None:
    """Why the npm client cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH (the npm client tests need Node 20 or newer)"
    for package in ("convex", "ws"):
        if not (JS / "node_modules" / package / "package.json").is_file():
            return f"{JS / 'node_modules' / package} is missing: run `make install`"
    return None


@pytest.fixture(scope="module")
def node() -> str:
    reason = _missing_node()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the npm client tests cannot run: {reason}")
        pytest.skip(reason)
    installed = json.loads((JS / "node_modules" / "convex" / "package.json").read_text())
    assert installed["version"] == CONVEX_VERSION, (
        f"tests/js has convex {installed['version']}, expected {CONVEX_VERSION}: run `make install`"
    )
    return str(shutil.which("node"))


def run_node_check(
    node: str, server: BasaltProcess, script: str, check: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Run one check of a script against ``server``; return its details, or fail
    with what it saw."""
    assert server.admin_key is not None
    env = dict(os.environ, BASALT_URL=server.url, BASALT_ADMIN_KEY=server.admin_key)
    env.pop("BASALT_FRAMES", None)
    try:
        proc = subprocess.run(
            [node, str(JS / script), check],
            cwd=JS,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise AssertionError(
            f"node {script} {check} ran over {timeout} s (its own deadlines should have "
            f"ended it first); stderr:\n{stderr[-4000:]}"
        ) from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])["results"][check]
    except (IndexError, ValueError, KeyError, TypeError):
        raise AssertionError(
            f"node {script} {check} exited with {proc.returncode} and printed no result.\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        ) from None
    if not result["ok"]:
        frames = "\n".join(result.get("frames", []))
        raise AssertionError(
            f"node {script} {check} failed: {result['error']}\n"
            f"uncaught: {result.get('uncaught')}\nframes (newest last):\n{frames}\n"
            f"stderr:\n{proc.stderr[-4000:]}"
        )
    assert proc.returncode == 0, proc.stderr
    details: dict[str, Any] = result["details"]
    return details


@pytest.fixture
def npm(node: str, server: BasaltProcess) -> Check:
    """Run one check of a script against the shared server (see :func:`run_node_check`)."""

    def run(script: str, check: str, timeout: float = 30.0) -> dict[str, Any]:
        return run_node_check(node, server, script, check, timeout)

    return run


# -- what the JS values look like in the scripts' reports ----------------------------


def bigint(n: int) -> dict[str, str]:
    return {"$bigint": str(n)}


def number(special: str) -> dict[str, str]:
    return {"$number": special}


def convex_error(data: Any) -> dict[str, Any]:
    """Matches a described ConvexError carrying ``data`` (message aside)."""
    return {"$error": "ConvexError", "isConvexError": True, "data": data}


def without_message(described: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in described.items() if k != "message"}


NESTED = {
    "i": bigint(7),
    "b": {"$bytes": "09"},
    "f": [0.5, number("-0")],
    "s": "é",
    "n": None,
    "t": True,
}
# tests/js/lib.mjs ROUND_TRIP, as it must come back.
ROUND_TRIP = {
    "int64": bigint(-5),
    "int64_big": bigint(2**62),
    "int64_min": bigint(-(2**63)),
    "bytes": {"$bytes": "0001feff"},
    "empty_bytes": {"$bytes": ""},
    "nan": number("NaN"),
    "minus_zero": number("-0"),
    "infinity": number("Infinity"),
    "minus_infinity": number("-Infinity"),
    "float": 2.5,
    "nested": NESTED,
}
SYNC_PATH = f"/api/{CONVEX_VERSION}/sync"


def assert_one_quiet_socket(ws: dict[str, Any]) -> None:
    """One WebSocket for the whole check: no reconnects, no FatalError."""
    assert ws["sockets"] == 1, ws
    assert ws["urls"] == [SYNC_PATH], ws
    assert "FatalError" not in ws["in"], ws
    assert ws["errors"] == [], ws


def assert_transitions_reach_mutations(timestamps: list[dict[str, str | None]]) -> None:
    """Every successful MutationResponse has a ts, and a Transition reaching it follows."""
    assert timestamps, "no successful MutationResponse was seen"
    for pair in timestamps:
        assert pair["mutation_ts"] is not None, pair
        assert pair["transition_ts"] is not None, pair
        assert int(pair["transition_ts"]) >= int(pair["mutation_ts"]), pair


def server_part(message: str) -> str:
    """A server error message without its first line (it has the request id)."""
    first, _, rest = message.partition("\n")
    assert first.startswith("[Request ID:"), message
    return rest


# -- ConvexHttpClient ---------------------------------------------------------------


def test_http_query_mutation_action(npm: Check) -> None:
    d = npm("http_client.mjs", "calls")
    assert isinstance(d["id"], str) and len(d["id"]) == 32
    assert d["bodies"] == ["hello"]
    assert d["action"] == {"bodies": ["a", "b"], "count": 2}
    assert d["echo_action"] == {"n": bigint(3)}
    assert d["shout"] == d["admin_shout"] == "HEY"
    # The function's log lines reach an admin client's logger, prefixed with the
    # function; a production server sends none to anyone else.
    assert not any("shouting" in line for line in d["anonymous_logs"])
    assert any("values:shout" in line and "shouting hey" in line for line in d["logs"])


# What values:counts returns after one store_count of 41 (see tests/js/lib.mjs useIntegers).
INTEGERS = {
    # len(rows) and len(rows) + 1 are plain ints: JavaScript numbers
    "counts": {"count": 1, "next": 2, "explicit": bigint(1), "stored": [bigint(41)]},
    "validated": {"count": bigint(1), "of": 1},
    "plus_one": {"value": 2},
    "json": {"value": '{"count":1,"next":2}'},
}


def test_http_plain_ints_are_numbers_and_int64s_bigints(npm: Check) -> None:
    """A handler's len(rows) is a number (arithmetic and JSON.stringify work);
    Int64, a v.int64() validator and an int stored in a document give a BigInt."""
    assert npm("http_client.mjs", "integers") == INTEGERS


def test_http_values_round_trip(npm: Check) -> None:
    d = npm("http_client.mjs", "values")
    assert d["echo"] == {name: {"value": value} for name, value in ROUND_TRIP.items()}
    assert d["stored"] == {name: {"value": [value]} for name, value in ROUND_TRIP.items()}


def test_http_convex_error_data(npm: Check) -> None:
    d = npm("http_client.mjs", "convex_error")
    data = {"code": "NOPE", "n": bigint(7), "list": ["x", True, None]}
    assert without_message(d["mutation"]["error"]) == convex_error(data)
    assert without_message(d["mutation_string"]["error"]) == convex_error("plain message")
    assert without_message(d["query"]["error"]) == convex_error(data)
    assert without_message(d["action"]["error"]) == convex_error({"code": "DEEP"})
    assert "Uncaught ConvexError" in d["mutation"]["error"]["message"]
    assert ".py" not in d["mutation"]["error"]["message"]  # no traceback for anonymous callers


def test_http_plain_error(npm: Check) -> None:
    error = npm("http_client.mjs", "plain_error")["query"]["error"]
    assert error["$error"] == "Error"
    assert not error["isConvexError"]
    assert "data" not in error
    # A production server tells anonymous callers only Convex's production answer;
    # the admin what was raised.
    assert re.fullmatch(r"\[Request ID: [0-9a-f]+\] Server Error", error["message"]), error
    admin_error = npm("http_client.mjs", "plain_error")["admin_query"]["error"]
    assert "kaboom: something broke" in admin_error["message"]


def test_http_consistent_query(npm: Check) -> None:
    d = npm("http_client.mjs", "consistent_query")
    assert d["paths"] == ["/api/query_ts"] + ["/api/query_at_ts"] * 3 + ["/api/query"]
    assert d["first"] == {"value": ["before"]}
    assert d["after_unrelated_write"] == {"value": ["before"]}
    # Basalt keeps only current versions: after a write into what the query read,
    # the old timestamp is refused (never answered with later data).
    after = d["after_write"]
    assert after == {"value": ["before"]} or "SnapshotUnavailable" in after["error"]["message"]
    assert d["latest"] == {"value": ["before", "after"]}
    assert d["fresh_client"] == {"value": ["before", "after"]}


def test_http_consistent_query_after_a_patch(npm: Check) -> None:
    d = npm("http_client.mjs", "consistent_query_patch")
    assert d["first"] == {"value": 1}
    assert d["latest"] == {"value": 2}
    after = d["after_patch"]
    assert after == {"value": 1} or "SnapshotUnavailable" in after["error"]["message"], after


def test_http_admin_key(npm: Check) -> None:
    d = npm("http_client.mjs", "admin_auth")
    assert "Could not find public function" in d["denied"]["error"]["message"]
    assert d["allowed"] == {"value": 1}


# -- ConvexClient over the sync WebSocket ------------------------------------------


def test_ws_query(npm: Check) -> None:
    d = npm("ws_client.mjs", "query")
    assert d["empty"] == []
    assert d["echo"] == {name: {"value": value} for name, value in ROUND_TRIP.items()}
    assert d["shout"] == d["admin_shout"] == "WS"
    assert not any("shouting" in line for line in d["anonymous_logs"])
    assert any("values:shout" in line and "shouting ws" in line for line in d["logs"])
    assert_one_quiet_socket(d["ws"])


def test_ws_plain_ints_are_numbers_and_int64s_bigints(npm: Check) -> None:
    d = npm("ws_client.mjs", "integers")
    assert {k: d[k] for k in INTEGERS} == INTEGERS
    assert d["subscribed"] == INTEGERS["counts"]
    assert_one_quiet_socket(d["ws"])


def test_ws_mutation(npm: Check) -> None:
    d = npm("ws_client.mjs", "mutation")
    assert isinstance(d["id"], str) and len(d["id"]) == 32
    assert isinstance(d["stored_id"], str) and len(d["stored_id"]) == 32
    assert d["bodies"] == ["hello"]
    assert d["loaded"] == [NESTED]
    assert_transitions_reach_mutations(d["timestamps"])
    assert_one_quiet_socket(d["ws"])


def test_ws_action(npm: Check) -> None:
    d = npm("ws_client.mjs", "action")
    assert d["echo"] == NESTED
    assert d["relay"] == {"bodies": ["a", "b", "c"], "count": 3}
    assert d["bodies"] == ["a", "b", "c"]
    assert_one_quiet_socket(d["ws"])


def test_ws_on_update_receives_a_pushed_value(npm: Check) -> None:
    d = npm("ws_client.mjs", "on_update_push")
    # First value, then values pushed after another client's HTTP mutations; the
    # write under another tag in between does not produce a value.
    assert d["values"] == [[], ["pushed!"], ["pushed!", "third"]]
    assert d["errors"] == []
    assert_one_quiet_socket(d["ws"])


def test_ws_mutation_resolves_after_its_write_is_visible(npm: Check) -> None:
    d = npm("ws_client.mjs", "read_your_writes")
    expected = [["n0"], ["n0", "n1"], ["n0", "n1", "n2"]]
    assert [r["current"] for r in d["rounds"]] == expected
    assert [r["last_callback"] for r in d["rounds"]] == expected
    assert d["values"] == [[], *expected]
    assert_transitions_reach_mutations(d["timestamps"])
    assert_one_quiet_socket(d["ws"])


def test_ws_mutation_that_patches_resolves_after_its_write_is_visible(npm: Check) -> None:
    d = npm("ws_client.mjs", "read_your_writes_patch")
    assert_transitions_reach_mutations(d["timestamps"])
    assert_one_quiet_socket(d["ws"])
    assert [r["result"] for r in d["rounds"]] == [1, 2, 3]
    assert [r["current"] for r in d["rounds"]] == [1, 2, 3]


def test_ws_on_update_receives_a_pushed_patch(npm: Check) -> None:
    d = npm("ws_client.mjs", "on_update_push_patch")
    assert d["http_value"] == 2
    assert d["values"] == [1, 2], d["pushed"]


def test_ws_no_transition_for_an_unrelated_commit(npm: Check) -> None:
    d = npm("ws_client.mjs", "unrelated_commit")
    # Only the commit into what the client reads reaches it (no empty Transition).
    assert d["values"] == [[], ["mine"]]
    assert [t["modifications"] for t in d["transitions"]] == [["QueryUpdated"]]


def test_ws_convex_error_in_a_query(npm: Check) -> None:
    d = npm("ws_client.mjs", "convex_error_query")
    data = {"code": "Q_FAIL", "n": bigint(7), "list": ["x", True, None]}
    assert without_message(d["query"]["error"]) == convex_error(data)
    assert d["query"]["error"]["message"].startswith("[CONVEX Q(values:query_fail_with)]")
    assert [without_message(e) for e in d["subscription"]] == [convex_error("as a subscription")]
    assert d["subscription_values"] == []
    assert_one_quiet_socket(d["ws"])


def test_ws_convex_error_in_a_mutation(npm: Check) -> None:
    d = npm("ws_client.mjs", "convex_error_mutation")
    assert without_message(d["mutation"]["error"]) == convex_error(
        {"code": "M_FAIL", "n": bigint(7)}
    )
    assert without_message(d["string_data"]["error"]) == convex_error("plain message")
    assert without_message(d["rolled_back"]["error"]) == convex_error(
        {"code": "FAILED_AFTER_INSERT"}
    )
    assert d["bodies_after"] == []  # the failed mutation's insert did not survive
    assert_one_quiet_socket(d["ws"])


def test_ws_convex_error_in_an_action(npm: Check) -> None:
    d = npm("ws_client.mjs", "convex_error_action")
    assert without_message(d["action"]["error"]) == convex_error({"code": "A_FAIL", "n": bigint(7)})
    assert_one_quiet_socket(d["ws"])


def test_ws_plain_errors_are_errors_with_the_server_message(npm: Check) -> None:
    d = npm("ws_client.mjs", "plain_error")
    for kind, prefix in (("query", "Q"), ("mutation", "M"), ("action", "A")):
        for told, http_message in ((d, d["http_messages"]), (d["admin"], d["admin_http_messages"])):
            error = told[kind]["error"]
            assert error["$error"] == "Error", error
            assert not error["isConvexError"]
            assert "data" not in error
            assert error["message"].startswith(f"[CONVEX {prefix}("), error
            assert server_part(http_message[kind]) in error["message"]
    # What the query and the mutation raised is told to anonymous callers of a
    # production server as the request id and nothing more; the action was called
    # with bad arguments, which every caller is told (naming the field).
    for kind in ("query", "mutation"):
        message = d[kind]["error"]["message"]
        assert re.search(r"\[Request ID: [0-9a-f]+\] Server Error(\n|$)", message), message
        assert server_part(d["http_messages"][kind]) == ""
    assert ".data" in d["action"]["error"]["message"]
    assert "kaboom: something broke" in d["admin"]["query"]["error"]["message"]
    assert "kaboom" not in d["query"]["error"]["message"]
    assert_one_quiet_socket(d["ws"])


def test_ws_set_auth_without_auth_providers(npm: Check) -> None:
    d = npm("ws_client.mjs", "set_auth_rejected")
    assert d["authenticate"] == [
        {"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": "<the token>"}
    ]
    [auth_error] = d["auth_errors"]
    assert auth_error["baseVersion"] == 0
    assert auth_error["authUpdateAttempted"] is True
    assert "auth provider" in auth_error["error"]
    # npm asks again with forceRefreshToken, gets the same token, gives up on auth,
    # says so through onChange(false) and carries on unauthenticated.
    assert d["fetches"] == [{"forceRefreshToken": False}, {"forceRefreshToken": True}]
    assert d["changes"] == [False]
    assert d["auth_after"] is None
    assert d["query_after"] == []
    assert d["ws"]["sockets"] == 2  # the socket that carried the refused token was replaced
    assert "FatalError" not in d["ws"]["in"]


def test_ws_bundled_websocket(npm: Check) -> None:
    d = npm("ws_client.mjs", "bundled_websocket")
    assert d["values"] == [[], ["pushed!"]]
    assert (d["mutation"], d["query"], d["action"]) == (1, 1, bigint(5))
    assert (d["connection_count"], d["connection_retries"]) == (1, 0)


def test_ws_idle_connection_stays_up(npm: Check) -> None:
    """20 s without traffic: the server's JSON Ping (after 15 s) keeps npm connected.

    The script lowers npm's server-inactivity timeout from 60 s to 18 s, so a server
    that did not ping would make it reconnect inside the window.
    """
    d = npm("ws_client.mjs", "idle", timeout=60.0)
    pings = [f for f in d["during"] if f["dir"] == "in" and f["type"] == "Ping"]
    assert pings, d["during"]
    assert 13_000 <= pings[0]["t"] <= 17_500, d["during"]
    assert [f for f in d["during"] if f["dir"] in ("open", "close")] == []
    assert (d["connection_count"], d["connection_retries"], d["connected"]) == (1, 0, True)
    assert d["reconnect_logs"] == []
    assert d["values"] == [[], ["after idle"]]
    assert_one_quiet_socket(d["ws"])
