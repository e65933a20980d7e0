"""What a client's calls make ``basalt serve`` write to its log: a ConvexError
(the app's answer) no traceback, a failure repeated by a client at most 10
full records a minute, and a function's output without raw control characters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from .harness import BasaltProcess

APP = """
from basalt import ConvexError, mutation


@mutation
async def refuse(ctx):
    raise ConvexError({"code": "EMPTY", "message": "A message needs some text"})


@mutation
async def crash(ctx):
    raise ValueError("a bug")


@mutation
async def garble(ctx):
    print("done\\r\\x1b[2J\\x1b[1;31mSERVER COMPROMISED\\x00")
    return 1
"""


def test_what_a_client_makes_the_server_log(
    basalt_process: Callable[..., BasaltProcess], tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "calls.py").write_text(APP)
    server = basalt_process(app, tmp_path / "data").start()
    before = len(server.output())
    with httpx.Client(base_url=server.url, timeout=30) as http:

        def call(path: str) -> dict[str, object]:
            response = http.post("/api/mutation", json={"path": path, "args": {}})
            assert response.status_code == 200
            body: dict[str, object] = response.json()
            return body

        for _ in range(100):
            assert call("calls:refuse")["errorData"] == {
                "code": "EMPTY",
                "message": "A message needs some text",
            }
        rids = [str(call("calls:crash")["errorMessage"]) for _ in range(30)]
        assert call("calls:garble")["status"] == "success"
    server.wait_for_output("[calls:garble]", start=before)
    log = server.output()[before:]
    # The app's own answers are not faults: nothing at the default level.
    assert "ConvexError" not in log and "EMPTY" not in log
    # 30 failures of one function: the first 10 in full, the rest held back.
    assert log.count("calls:crash failed [Request ID: ") == 10
    assert log.count("Traceback (most recent call last)") == 10
    assert rids[9].split("]")[0][len("[Request ID: ") :] in log
    assert rids[10].split("]")[0][len("[Request ID: ") :] not in log
    # What the function printed, with its control characters as escapes.
    assert "[calls:garble] done\\r\\x1b[2J\\x1b[1;31mSERVER COMPROMISED\\x00\n" in log
    assert not any(c in log for c in "\r\x1b\x00")
