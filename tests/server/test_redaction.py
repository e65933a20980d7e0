"""What clients are told of failed calls and log lines, against real servers.

A ``basalt serve`` (production) and a ``basalt dev`` of the ``leaky`` app,
whose functions print, log and raise ``ValueError("SECRET_DB_PASSWORD=…")``:
on ``serve`` an anonymous caller is told ``[Request ID: …] Server Error`` and
no log lines — over HTTP (raw and the official Python and npm clients), the
sync WebSocket (raw frames, the official Python and npm clients) and HTTP
actions — while the server's log has the whole error under that request id;
an admin caller, and every caller of ``basalt dev``, is told everything.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets.sync.client
from convex import ConvexClient
from convex.http_client import ConvexExecutionError, ConvexHttpClient

from .harness import ADMIN_KEY, APPS, BasaltProcess, stop_all
from .test_npm_client import node, run_node_check  # noqa: F401 (node is a fixture)

SECRET = "SECRET_DB_PASSWORD=hunter2"
REDACTED = re.compile(r"\[Request ID: ([0-9a-f]+)\] Server Error")
ADMIN = {"Authorization": f"Convex {ADMIN_KEY}"}
CALLS = [("/api/query", "leak:read"), ("/api/mutation", "leak:write"), ("/api/action", "leak:act")]


def start(tmp_path_factory: pytest.TempPathFactory, command: str) -> BasaltProcess:
    root = tmp_path_factory.mktemp(command)
    app = root / "app"
    shutil.copytree(APPS / "leaky", app, ignore=shutil.ignore_patterns("__pycache__"))
    return BasaltProcess(app, root / "data", command=command).start()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BasaltProcess]:
    process = start(tmp_path_factory, "serve")
    try:
        yield process
    finally:
        stop_all([process])


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BasaltProcess]:
    process = start(tmp_path_factory, "dev")
    try:
        yield process
    finally:
        stop_all([process])


def site_url(process: BasaltProcess) -> str:
    return str(json.loads((process.data / "server.json").read_text())["siteUrl"])


def request_id_of(message: str) -> str:
    """The request id of a message that says exactly Convex's production answer."""
    match = REDACTED.fullmatch(message)
    assert match, f"not Convex's production answer: {message!r}"
    return match.group(1)


def assert_nothing_leaks(text: str, process: BasaltProcess) -> None:
    """Nothing of the failure, its log lines or the server's files is in ``text``."""
    for leaked in (SECRET, "hunter2", "ValueError", "leak.py", str(process.app), "[LOG]", "[INFO]"):
        assert leaked not in text, f"{leaked!r} reached the client: {text[:2000]}"


def logged(process: BasaltProcess, rid: str) -> str:
    """What the server's log says from the line naming request id ``rid`` on."""
    output = process.wait_for_output(rid, timeout=15.0)
    return output[output.index(rid) - 200 :][:4000]


def call(process: BasaltProcess, route: str, path: str, args: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    return httpx.post(
        process.url + route, json={"path": path, "args": args or {}}, headers=headers, timeout=30
    )


# -- basalt serve: anonymous callers ------------------------------------------------


def test_http_answers_anonymous_callers_with_a_request_id_only(serve: BasaltProcess) -> None:
    for route, path in CALLS:
        r = call(serve, route, path)
        assert r.status_code == 200
        body = r.json()
        rid = request_id_of(body["errorMessage"])
        assert body == {"status": "error", "errorMessage": body["errorMessage"]}  # no logLines
        assert_nothing_leaks(r.text, serve)
        # The server log has it all, under the request id the client was given.
        log = logged(serve, rid)
        assert f"{path} failed [Request ID: {rid}]: Uncaught ValueError: {SECRET}" in log
        assert "Traceback" in log and "leak.py" in log


def test_the_official_python_clients_are_told_the_request_id_only(serve: BasaltProcess) -> None:
    http = ConvexHttpClient(serve.url)
    with pytest.raises(ConvexExecutionError) as info:
        http.query("leak:read")
    rid = request_id_of(str(info.value))
    assert SECRET in logged(serve, rid)

    ws = ConvexClient(serve.url)  # the sync WebSocket
    for run, path in ((ws.query, "leak:read"), (ws.mutation, "leak:write"),
                      (ws.action, "leak:act")):  # fmt: skip
        with pytest.raises(Exception) as failure:
            run(path)
        rid = request_id_of(str(failure.value))
        assert SECRET in logged(serve, rid)
    assert ws.query("leak:chatty", {"text": "fine"}) == "fine"


def test_websocket_frames_carry_nothing_for_anonymous_clients(serve: BasaltProcess) -> None:
    url = serve.url.replace("http://", "ws://") + "/api/sync"
    received: list[dict[str, Any]] = []
    with websockets.sync.client.connect(url) as sock:
        sock.send(json.dumps({
            "type": "Connect", "sessionId": "redaction", "connectionCount": 0,
            "lastCloseReason": "InitialConnect", "clientTs": 0,
        }))  # fmt: skip
        sock.send(json.dumps({
            "type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
                {"type": "Add", "queryId": 0, "udfPath": "leak:read", "args": [{}]},
                {"type": "Add", "queryId": 1, "udfPath": "leak:chatty", "args": [{"text": "t"}]},
            ],
        }))  # fmt: skip
        for request_id, kind, path in ((0, "Mutation", "leak:write"), (1, "Action", "leak:act")):
            sock.send(json.dumps(
                {"type": kind, "requestId": request_id, "udfPath": path, "args": [{}]}
            ))  # fmt: skip
        responses, updates = set(), set()
        while len(responses) < 2 or len(updates) < 2:
            message = json.loads(sock.recv(timeout=30))
            received.append(message)
            if message["type"] in ("MutationResponse", "ActionResponse"):
                responses.add(message["requestId"])
                assert message["logLines"] == []  # present (the clients need it), and empty
                request_id_of(message["result"])
            elif message["type"] == "Transition":
                for mod in message["modifications"]:
                    updates.add(mod["queryId"])
                    assert mod["logLines"] == []
                    if mod["queryId"] == 0:
                        assert mod["type"] == "QueryFailed"
                        request_id_of(mod["errorMessage"])
                    else:
                        assert mod["value"] == "t"
    assert_nothing_leaks(json.dumps(received), serve)


def test_http_action_answers_a_request_id_only(serve: BasaltProcess) -> None:
    r = httpx.get(site_url(serve) + "/leak", timeout=30)
    assert r.status_code == 500
    body = r.json()
    rid = request_id_of(body["message"])
    assert body == {"code": "InternalServerError", "message": body["message"]}
    assert_nothing_leaks(r.text, serve)
    log = logged(serve, rid)
    assert SECRET in log and "HTTP action GET /leak failed" in log


def test_npm_clients_are_told_the_request_id_only(node: str, serve: BasaltProcess) -> None:  # noqa: F811
    d = run_node_check(node, serve, "redaction.mjs", "anonymous")
    for transport in ("ws", "http"):
        for kind in ("query", "mutation", "action"):
            error = d[transport][kind]["error"]
            assert error["$error"] == "Error" and not error["isConvexError"], error
            # npm prefixes "[CONVEX Q(leak:read)] " (and adds "Called by client" on the socket).
            rid = re.search(r"\[Request ID: ([0-9a-f]+)\] Server Error(\n  Called by client)?$",
                            error["message"])  # fmt: skip
            assert rid, error
            assert SECRET in logged(serve, rid.group(1))
        assert d[transport]["chatty"] == {"value": f"over {transport}"}
    assert_nothing_leaks(json.dumps(d), serve)
    assert not any("printed" in line or "over" in line for line in d["logs"])


def test_internal_and_missing_functions_get_the_same_answer(serve: BasaltProcess) -> None:
    def told(path: str, route: str = "/api/query") -> str:
        message = str(call(serve, route, path).json()["errorMessage"])
        return REDACTED.sub("[Request ID]", message).replace(path, "<path>")

    assert told("leak:hidden") == told("leak:missing")
    assert told("leak:hidden", "/api/mutation") == told("leak:missing", "/api/mutation")
    assert "Could not find public function for '<path>'" in told("leak:hidden")
    # Nor does a miss list the module's functions.
    for name in ("read", "chatty", "hidden"):
        assert f"leak:{name}" not in told("leak:missing")


def test_a_wrong_path_gets_a_did_you_mean_only_where_everything_is_told(
    serve: BasaltProcess, dev: BasaltProcess
) -> None:
    """``leak.read``, ``leak/read``, ``lea:read``: admin callers and every caller
    of ``basalt dev`` are told the path meant; an anonymous caller of ``basalt
    serve`` learns no function name."""
    for wrong in ("leak.read", "leak/read", "lea:read"):
        anonymous = call(serve, "/api/query", wrong).json()["errorMessage"]
        assert "Could not find public function" in anonymous
        assert "leak:read" not in anonymous and "did you mean" not in anonymous, anonymous
        admin = call(serve, "/api/query", wrong, headers=ADMIN)
        for told in (admin, call(dev, "/api/query", wrong)):
            assert "(did you mean 'leak:read'?)" in told.json()["errorMessage"]


def test_bad_arguments_are_told_to_everyone(serve: BasaltProcess) -> None:
    """The call's own mistake: its message names the field, and nothing of the server."""
    body = call(serve, "/api/query", "leak:typed", {"n": "ten"}).json()
    message = body["errorMessage"]
    assert message.startswith("[Request ID: ") and "ArgumentValidationError" in message
    assert ".n" in message
    assert_nothing_leaks(message.replace("ArgumentValidationError", ""), serve)


def test_convex_error_keeps_its_data(serve: BasaltProcess) -> None:
    body = call(serve, "/api/query", "leak:refuse").json()
    assert body["errorData"] == {"code": "NOPE"}
    assert re.fullmatch(
        r'\[Request ID: [0-9a-f]+\] Server Error\nUncaught ConvexError: \{"code": "NOPE"\}',
        body["errorMessage"],
    )


# -- basalt serve: admin callers ----------------------------------------------------


def test_admin_callers_see_everything(serve: BasaltProcess) -> None:
    for route, path in CALLS:
        body = call(serve, route, path, headers=ADMIN).json()
        message = body["errorMessage"]
        assert message.startswith("[Request ID: ") and f"Uncaught ValueError: {SECRET}" in message
        assert "leak.py" in message  # where it was raised
        verb = path.split(":")[1]
        assert body["logLines"][0] == f"[LOG] about to {verb} with {SECRET}"
        assert body["logLines"][1] == f"[INFO] connecting with {SECRET}"
    ws = ConvexClient(serve.url)
    ws.set_admin_auth(ADMIN_KEY)
    with pytest.raises(Exception, match=f"Uncaught ValueError: {SECRET}"):
        ws.query("leak:read")


def test_log_lines_have_their_levels(serve: BasaltProcess) -> None:
    """print and logging inside a function: the admin's log lines, with Convex's
    level names; the server's output, prefixed with the function."""
    body = call(serve, "/api/query", "leak:chatty", {"text": "lvl"}, headers=ADMIN).json()
    assert body == {
        "status": "success",
        "value": "lvl",
        "logLines": [
            "[LOG] printed lvl",
            "[INFO] info lvl",
            "[WARN] warn lvl",
            "[ERROR] error lvl",
        ],
    }
    output = serve.wait_for_output("[leak:chatty] [ERROR] error lvl")
    for line in ("[leak:chatty] printed lvl", "[leak:chatty] [INFO] info lvl",
                 "[leak:chatty] [WARN] warn lvl"):  # fmt: skip
        assert line in output
    # Printed once, with the function's name (not again by the logging handlers).
    assert output.count("warn lvl") == 1
    assert "debug lvl" not in output


def test_npm_admin_clients_see_everything(node: str, serve: BasaltProcess) -> None:  # noqa: F811
    d = run_node_check(node, serve, "redaction.mjs", "admin")
    for transport in ("ws", "http"):
        for kind in ("query", "mutation", "action"):
            assert f"Uncaught ValueError: {SECRET}" in d[transport][kind]["error"]["message"]
    # The client logs the function's lines with their level.
    assert any("[INFO]" in line and "info over ws" in line for line in d["logs"]), d["logs"]
    assert any("[ERROR]" in line and "error over http" in line for line in d["logs"]), d["logs"]


# -- basalt dev ---------------------------------------------------------------------


def test_dev_tells_every_caller_everything(dev: BasaltProcess) -> None:
    body = call(dev, "/api/query", "leak:read").json()
    assert f"Uncaught ValueError: {SECRET}" in body["errorMessage"]
    assert "leak.py" in body["errorMessage"]
    assert body["logLines"] == [
        f"[LOG] about to read with {SECRET}",
        f"[INFO] connecting with {SECRET}",
    ]
    r = httpx.get(site_url(dev) + "/leak", timeout=30)
    assert r.status_code == 500 and f"Uncaught ValueError: {SECRET}" in r.json()["message"]
    hidden = call(dev, "/api/query", "leak:hidden").json()["errorMessage"]
    assert "internal function" in hidden  # a hint for the developer


def test_dev_prints_one_line_per_failed_call(dev: BasaltProcess) -> None:
    failed = call(dev, "/api/mutation", "leak:write").json()["errorMessage"]
    invalid = call(dev, "/api/query", "leak:typed", {"n": "ten"}).json()["errorMessage"]
    missing = call(dev, "/api/query", "leak:nope").json()["errorMessage"]
    for message, path, what in (
        (failed, "leak:write", f"Uncaught ValueError: {SECRET}"),
        (invalid, "leak:typed", "ArgumentValidationError"),
        (missing, "leak:nope", "FunctionNotFound"),
    ):
        rid = re.match(r"\[Request ID: ([0-9a-f]+)\]", message)
        assert rid, message
        output = dev.wait_for_output(rid.group(1))
        [line] = [ln for ln in output.splitlines() if rid.group(1) in ln]
        assert f"✖ {path} [Request ID: {rid.group(1)}] {what}" in line, line
        following = output.splitlines()[output.splitlines().index(line) + 1 :][:1]
        assert not any(ln.startswith("Traceback") for ln in following)
