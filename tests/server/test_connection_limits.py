"""Clients that hold connections busy on purpose — pipelined floods, bodies
that dribble or never end, silent WebSockets, one address filling every slot,
many large bodies at once — against a real ``basalt serve``, while a
well-behaved client checks that the server keeps answering.

Nothing here measures durations: limits are counted in requests and bytes,
with generous timeouts everywhere."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from basalt.server.connections import BODY_LINGER_BYTES, MAX_PIPELINED

from .harness import BasaltProcess, wait_until
from .test_limits import PATIENCE, Watcher, _read_answer, watcher
from .test_sync_protocol import connect_message

__all__ = ["watcher"]  # a fixture this module uses

MIB = 1 << 20


def _address(server: BasaltProcess) -> tuple[str, int]:
    url = httpx.URL(server.url)
    assert url.host is not None and url.port is not None
    return url.host, url.port


@pytest.fixture
def quick_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server that gives heads, Connect messages and body checks one second,
    and holds at most 17 MiB of request bodies at once."""
    env = {
        "BASALT_HEADER_TIMEOUT": "1",
        "BASALT_BODY_TIMEOUT": "1",
        "BASALT_REQUEST_BODIES_MB": "17",
    }
    return basalt_process(basic_app, tmp_path / "data", env=env).start()


@pytest.fixture
def quick_watcher(quick_server: BasaltProcess, tag: str) -> Iterator[Watcher]:
    with Watcher(quick_server.url, tag + "-watch") as w:
        w.answers_after(1)
        yield w


# -- pipelining ---------------------------------------------------------------------


def test_pipelined_flood_is_cut_off(server: BasaltProcess, tag: str) -> None:
    """5,000 requests sent ahead of their answers used to be queued whole (a
    few hundred KiB of requests became megabytes of pending work per
    connection); the server now disconnects the client, having answered a few at most."""
    flood = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 5000
    with Watcher(server.url, tag) as watcher:
        with socket.create_connection(_address(server), timeout=PATIENCE) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(flood)
            answer = _read_answer(sock)
        answered = answer.count(b"HTTP/1.1 200 ")
        assert answered <= MAX_PIPELINED + 2, answered
        watcher.answers_after(3)


def test_a_few_pipelined_requests_are_all_answered(server: BasaltProcess) -> None:
    requests = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 8
    with socket.create_connection(_address(server), timeout=PATIENCE) as sock:
        sock.sendall(requests + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_answer(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 9


# -- request bodies -----------------------------------------------------------------


def _post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_dribbled_body_is_cut_off(quick_server: BasaltProcess, quick_watcher: Watcher) -> None:
    """A body that brings a byte every 0.2 s (never idle for a whole second)
    used to hold its connection for ever; under 1 KiB per body check, it is
    now cut off."""
    with socket.create_connection(_address(quick_server), timeout=PATIENCE) as sock:
        sock.sendall(_post_head("/api/mutation", 100_000))
        sent = 0
        closed = False
        while sent < 150:  # 30 s of dribbling, many body checks' worth
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            sock.settimeout(0.2)
            try:
                if not sock.recv(65536, socket.MSG_PEEK):
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
        assert closed, "the server kept a dribbled body open"
    quick_watcher.answers_after(3)


def test_body_still_arriving_after_the_answer_is_cut_off(
    server: BasaltProcess, watcher: Watcher
) -> None:
    """A route that reads no body (``/health``) answers at once; the rest of a
    never-ending body used to be read and dropped for as long as the client
    sent it, keeping the connection busy. It is now read for a moment only."""
    chunk = b"x" * MIB
    sent = 0
    with socket.create_connection(_address(server), timeout=PATIENCE) as sock:
        sock.sendall(_post_head("/health", 10 << 30))
        try:
            while sent < 20 * BODY_LINGER_BYTES:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 20 * BODY_LINGER_BYTES, "the server read a never-ending body"
    watcher.answers_after(3)


def test_declared_oversized_body_is_refused_before_it_is_sent(server: BasaltProcess) -> None:
    """A Content-Length over the route's limit gets 413 at once: the client
    need not send (nor the server read) 16 MiB to learn it."""
    with socket.create_connection(_address(server), timeout=PATIENCE) as sock:
        sock.sendall(_post_head("/api/mutation", 100 * MIB))
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"PayloadTooLarge" in answer


def _bodies(server: BasaltProcess) -> dict[str, Any]:
    """The server's count of request bodies held (from ``/api/stats``)."""
    response = httpx.get(
        server.url + "/api/stats",
        headers={"Authorization": f"Convex {server.admin_key}"},
        timeout=PATIENCE,
    )
    response.raise_for_status()
    bodies: dict[str, Any] = response.json()["requestBodies"]
    return bodies


def test_request_bodies_held_at_once_are_bounded(
    quick_server: BasaltProcess, quick_watcher: Watcher, tag: str
) -> None:
    """With 17 MiB of request bodies allowed at once, a 16 MiB body being
    read (its last bytes still arriving) leaves no room for a second large
    one: it is refused with 503 ``ServerBusy`` after waiting, while small
    requests are still served."""
    declared = 16 * MIB
    with socket.create_connection(_address(quick_server), timeout=PATIENCE) as holder:
        holder.sendall(_post_head("/api/mutation", declared) + b" " * (declared - 256 * 1024))
        stop = threading.Event()

        def feed() -> None:  # enough to pass every body check, never finishing
            with contextlib.suppress(OSError):
                while not stop.wait(0.25):
                    holder.sendall(b" " * 1024)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            wait_until(
                lambda: _bodies(quick_server)["heldBytes"] > 15 * MIB,
                PATIENCE,
                "the server to read the first body",
            )
            second = httpx.post(
                quick_server.url + "/api/mutation",
                content=json.dumps(
                    {"path": "notes:add", "args": {"tag": tag, "body": "b" * (2 * MIB)}}
                ),
                headers={"content-type": "application/json"},
                timeout=PATIENCE,
            )
            assert second.status_code == 503, second.text[:200]
            assert second.json()["code"] == "ServerBusy"
            assert _bodies(quick_server)["refused"] == 1
            quick_watcher.answers_after(3)
        finally:
            stop.set()
            feeder.join(PATIENCE)


# -- WebSockets ---------------------------------------------------------------------


def test_websocket_that_never_sends_connect_is_closed(quick_server: BasaltProcess) -> None:
    """A WebSocket that says nothing used to hold its slot for ever (answered
    with Pings); without Connect in time it gets a FatalError and is closed."""
    url = quick_server.url.replace("http://", "ws://") + "/api/sync"
    with connect(url, open_timeout=PATIENCE, close_timeout=2, proxy=None) as ws:
        fatal = json.loads(ws.recv(timeout=PATIENCE))
        assert fatal["type"] == "FatalError", fatal
        assert "Connect" in fatal["error"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=PATIENCE)


def test_websocket_that_connects_stays_open(quick_server: BasaltProcess) -> None:
    url = quick_server.url.replace("http://", "ws://") + "/api/sync"
    with connect(url, open_timeout=PATIENCE, close_timeout=2, proxy=None) as ws:
        ws.send(json.dumps(connect_message()))
        for _ in range(3):  # several Connect deadlines pass: no FatalError
            with contextlib.suppress(TimeoutError):
                message = json.loads(ws.recv(timeout=1.0))
                assert message["type"] != "FatalError", message
        ws.send(json.dumps({"type": "Event", "eventType": "x", "event": None}))


# -- one address filling every slot -------------------------------------------------


def test_one_address_cannot_fill_the_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path, tag: str
) -> None:
    """900 busy connections (requests whose bodies have not arrived) from
    127.0.0.2, against a server allowed 1,024 open files (768 connections):
    new visitors from 127.0.0.1 used to be refused, as every connection was
    busy; now a connection of the address that holds the most is closed to
    let each of them in."""
    server = basalt_process(basic_app, tmp_path / "data", open_files=1024).start()
    host, port = _address(server)
    crowd: list[socket.socket] = []
    head = _post_head("/api/mutation", 1000) + b"{"
    try:
        with Watcher(server.url, tag, fresh=True) as watcher:
            watcher.answers_after(1)
            for _ in range(900):  # each a request in progress, its body not all sent
                sock = socket.socket()
                crowd.append(sock)
                sock.settimeout(PATIENCE)
                sock.bind(("127.0.0.2", 0))
                with contextlib.suppress(OSError):  # late ones are refused
                    sock.connect((host, port))
                    sock.sendall(head)
            during = len(watcher.failures)
            watcher.failures.clear()
            watcher.answers_after(20)
    finally:
        for sock in crowd:
            sock.close()
    assert server.proc is not None and server.proc.poll() is None
    print(f"visitors failed while the crowd arrived: {during}")
