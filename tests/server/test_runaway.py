"""A real server against functions that hold what they run on: blocking
actions, HTTP actions that block, an action calling its own server, a query
that never returns, a mutation stuck in a C call, large arguments — while a
well-behaved client checks that the server keeps answering, and signals still
stop it."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex.http_client import ConvexExecutionError
from websockets.sync.client import connect as ws_connect

from .harness import APPS, BasaltProcess


@pytest.fixture
def runaway_app(tmp_path: Path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(APPS / "runaway", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    executor = concurrent.futures.ThreadPoolExecutor(16)
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _well_behaved(server: BasaltProcess, times: int = 5) -> None:
    """What a well-behaved client does meanwhile: every call must be answered."""
    client = server.client()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(times):
            assert http.get("/health").json()["status"] == "ok"
            assert client.query("hold:ping", {}) == "pong"
            assert i >= 0


def test_a_blocking_action_leaves_the_server_answering(
    basalt_process: Callable[..., BasaltProcess],
    runaway_app: Path,
    tmp_path: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    server = basalt_process(runaway_app, tmp_path / "data").start()
    release = tmp_path / "release"
    blocked = pool.submit(server.client().action, "hold:blocked_until", {"path": str(release)})
    server.wait_for_output("hold:blocked_until has blocked the action loop")
    _well_behaved(server)
    assert not blocked.done()
    release.touch()
    assert blocked.result(timeout=30) == "released"


def test_a_blocking_http_action_leaves_the_api_answering(
    basalt_process: Callable[..., BasaltProcess],
    runaway_app: Path,
    tmp_path: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    server = basalt_process(runaway_app, tmp_path / "data").start()
    site = json.loads((tmp_path / "data" / "server.json").read_text())["siteUrl"]
    release = tmp_path / "release"
    blocked = pool.submit(httpx.get, f"{site}/block", params={"path": str(release)}, timeout=60)
    server.wait_for_output("GET /block has blocked the action loop")
    _well_behaved(server)
    assert not blocked.done()
    release.touch()
    response = blocked.result(timeout=30)
    assert (response.status_code, response.text) == (200, "done")


def test_an_action_can_call_its_own_server(
    basalt_process: Callable[..., BasaltProcess], runaway_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(runaway_app, tmp_path / "data").start()
    client = server.client()
    call = "hold:call_own_server"
    assert client.action(call, {"url": server.url, "path": "hold:ping", "kind": "query"}) == "pong"
    # An action the blocked action waits for starts on a fresh action loop.
    args = {"url": server.url, "path": "hold:async_ping", "kind": "action"}
    assert client.action(call, args) == "pong"
    assert "new actions start on a fresh action loop" in server.output()
    _well_behaved(server, times=1)


def test_a_def_action_runs(
    basalt_process: Callable[..., BasaltProcess], runaway_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(runaway_app, tmp_path / "data").start()
    assert server.client().action("hold:in_a_thread", {}) == "pong"


def test_a_mutation_waiting_in_a_system_call_is_stopped(
    basalt_process: Callable[..., BasaltProcess], runaway_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(runaway_app, tmp_path / "data").start()
    with pytest.raises(ConvexExecutionError, match="hold:wait_in_select timed out"):
        server.client(admin=True).mutation("hold:wait_in_select", {})
    _well_behaved(server, times=1)


def test_a_query_that_never_returns_is_stopped(
    basalt_process: Callable[..., BasaltProcess],
    runaway_app: Path,
    tmp_path: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    server = basalt_process(runaway_app, tmp_path / "data").start()
    spinning = [pool.submit(server.client(admin=True).query, "hold:spin", {}) for _ in range(3)]
    _well_behaved(server)
    for future in spinning:
        with pytest.raises(ConvexExecutionError, match="hold:spin timed out"):
            future.result(timeout=60)
    assert "hold:spin has blocked the server's event loop" in server.output()


def _hold_the_loop(server: BasaltProcess) -> None:
    """Make a mutation hold the server's loop for good (it swallows the time limit)."""

    def call() -> Any:
        try:
            return server.client().mutation("hold:hold_stubbornly", {})
        except Exception as exc:  # the server dies under it
            return exc

    threading.Thread(target=call, daemon=True).start()
    server.wait_for_output("hold:hold_stubbornly has blocked the server's event loop")


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_sigterm_stops_a_server_whose_loop_is_held(
    basalt_process: Callable[..., BasaltProcess], runaway_app: Path, tmp_path: Path, command: str
) -> None:
    server = basalt_process(
        runaway_app, tmp_path / "data", command=command, env={"BASALT_STOP_TIMEOUT": "1"}
    ).start()
    _hold_the_loop(server)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "the server did not stop within 1 s of SIGTERM; exiting now" in server.output()


def test_a_second_sigint_exits_at_once(
    basalt_process: Callable[..., BasaltProcess], runaway_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(
        runaway_app, tmp_path / "data", env={"BASALT_STOP_TIMEOUT": "600"}
    ).start()
    _hold_the_loop(server)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    server.wait_for_output("SIGINT received, stopping")
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=60) == 128 + signal.SIGINT
    assert "SIGINT received again; exiting now" in server.output()


#: ~9.6 MB of arguments whose decoding and checking is mostly Python code (about
#: 0.4 s of it a call): on the event loop, a well-behaved client got 17-20 answers
#: while eight such calls ran; decoded off the loop, 170-270.
ROWS = [["abcd"] * 150 for _ in range(8000)]
MEANWHILE = 60


def _health_meanwhile(server: BasaltProcess, calls: list[concurrent.futures.Future[Any]]) -> int:
    """How many answers a well-behaved client got while ``calls`` ran (from
    ``/version``, which needs nothing but the event loop: a loop held for the
    whole of each call answers about once per call)."""
    answered = 0
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while not all(call.done() for call in calls):
            assert http.get("/version").status_code == 200
            if not all(call.done() for call in calls):
                answered += 1
    return answered


def test_large_arguments_are_decoded_while_the_server_answers(
    basalt_process: Callable[..., BasaltProcess],
    runaway_app: Path,
    tmp_path: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """Eight concurrent calls with ~9 MB of arguments each: a well-behaved
    client's requests are answered while they are decoded and checked."""
    server = basalt_process(runaway_app, tmp_path / "data").start()
    body = json.dumps({"path": "hold:size", "args": {"rows": ROWS}, "format": "json"})
    assert len(body) > 8 << 20

    def big() -> Any:
        with httpx.Client(timeout=120) as http:
            response = http.post(
                server.url + "/api/query",
                content=body,
                headers={"content-type": "application/json"},
            )
        return response.json()

    calls = [pool.submit(big) for _ in range(8)]
    answered_meanwhile = _health_meanwhile(server, calls)
    assert [call.result() for call in calls] == [{"status": "success", "value": 8000.0}] * 8
    assert answered_meanwhile >= MEANWHILE, answered_meanwhile


def test_large_websocket_frames_are_decoded_while_the_server_answers(
    basalt_process: Callable[..., BasaltProcess],
    runaway_app: Path,
    tmp_path: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """The same over the sync WebSocket: eight mutations of ~9 MB each."""
    server = basalt_process(runaway_app, tmp_path / "data").start()
    frame = json.dumps(
        {"type": "Mutation", "requestId": 0, "udfPath": "hold:store_size", "args": [{"rows": ROWS}]}
    )
    assert len(frame) > 8 << 20
    url = server.url.replace("http://", "ws://") + "/api/sync"

    def big() -> Any:
        with ws_connect(url, max_size=None, compression=None, proxy=None) as ws:
            hello = {"type": "Connect", "sessionId": str(uuid.uuid4()), "connectionCount": 0}
            ws.send(json.dumps(hello))
            ws.send(frame)
            while True:
                message = json.loads(ws.recv(timeout=120))
                if message["type"] == "MutationResponse":
                    return message["success"], message["result"]

    calls = [pool.submit(big) for _ in range(8)]
    answered_meanwhile = _health_meanwhile(server, calls)
    assert [call.result() for call in calls] == [(True, 8000.0)] * 8
    assert answered_meanwhile >= MEANWHILE, answered_meanwhile


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_dev_while_it_waits_for_a_broken_app(
    basalt_process: Callable[..., BasaltProcess], runaway_app: Path, tmp_path: Path, sig: int
) -> None:
    (runaway_app / "broken.py").write_text("def x(:\n")
    server = basalt_process(runaway_app, tmp_path / "data", command="dev").launch()
    server.wait_for_output("fix the file; Basalt starts serving when it loads")
    assert server.proc is not None
    server.proc.send_signal(sig)
    assert server.proc.wait(timeout=30) == 0
    assert f"{signal.Signals(sig).name} received, stopping" in server.output()
