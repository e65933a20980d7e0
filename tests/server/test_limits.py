"""Clients that misbehave on purpose — an oversized batch, endless or huge
headers, thousands of idle connections — against a real ``basalt serve``,
while a well-behaved client checks that the server keeps answering.

Nothing here measures durations: the well-behaved client counts answers it
got while the misbehaving one was at work (generous timeouts everywhere)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from convex.http_client import ConvexHttpClient

from basalt.server.http_api import MAX_BATCH_QUERIES

from .harness import BasaltProcess

#: Seconds any single answer may take before the test gives up on it.
PATIENCE = 60.0


class Watcher:
    """A well-behaved client asking ``/health`` and a query in a loop (in a
    thread) and counting the answers, until stopped. ``fresh``: every request
    on a new connection (a new visitor), else one kept-alive connection."""

    def __init__(self, url: str, tag: str, *, fresh: bool = False) -> None:
        self.url, self.tag, self.fresh = url, tag, fresh
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ask(self, http: httpx.Client) -> None:
        assert http.get("/health").json()["status"] == "ok"
        answer = http.post(
            "/api/query", json={"path": "notes:bodies", "args": {"tag": self.tag}}
        ).json()
        assert answer == {"status": "success", "value": ["watched"]}, answer

    def _run(self) -> None:
        kept = httpx.Client(base_url=self.url, timeout=PATIENCE)
        try:
            while not self._stop.is_set():
                try:
                    if self.fresh:
                        with httpx.Client(base_url=self.url, timeout=PATIENCE) as http:
                            self._ask(http)
                    else:
                        self._ask(kept)
                except Exception as exc:  # counted, and reported by the test
                    self.failures.append(repr(exc))
                else:
                    self.answers += 1
        finally:
            kept.close()

    def __enter__(self) -> Watcher:
        ConvexHttpClient(self.url).mutation(
            "notes:add", {"tag": self.tag, "body": "watched", "pos": 0.0}
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PATIENCE)

    def answers_after(self, count: int) -> int:
        """Wait until ``count`` more answers came, with no failure; return the total."""
        target = self.answers + count
        done = threading.Event()

        def check() -> None:
            while self.answers < target and not self._stop.is_set():
                if self.failures:
                    break
                threading.Event().wait(0.01)
            done.set()

        threading.Thread(target=check, daemon=True).start()
        assert done.wait(PATIENCE), f"the well-behaved client got no {count} answers"
        assert not self.failures, self.failures[:3]
        return self.answers


@pytest.fixture
def watcher(server: BasaltProcess, tag: str) -> Iterator[Watcher]:
    with Watcher(server.url, tag + "-watch") as w:
        w.answers_after(1)
        yield w


def _batch(entries: int, tag: str) -> bytes:
    query = {"path": "notes:bodies", "args": {"tag": tag}, "format": "convex_encoded_json"}
    return json.dumps({"queries": [query] * entries}).encode()


# -- /api/query_batch ---------------------------------------------------------------


def test_oversized_query_batch_is_refused(
    server: BasaltProcess, watcher: Watcher, tag: str
) -> None:
    """100,000 entries (3.7 MB) froze the whole server for 39 s; now the batch is
    refused with its count and the limit, and the others keep being answered."""
    body = _batch(100_000, tag)
    response = httpx.post(server.url + "/api/query_batch", content=body, timeout=PATIENCE)
    assert response.status_code == 400, response.text[:200]
    error = response.json()
    assert error["code"] == "TooManyQueries"
    assert "100000" in error["message"] and str(MAX_BATCH_QUERIES) in error["message"]
    watcher.answers_after(3)


def test_long_query_batches_let_others_in(
    server: BasaltProcess, watcher: Watcher, client: ConvexHttpClient, tag: str
) -> None:
    """Batches at the limit answer their entries as of one commit (those their
    time budget let run: the others say so), and the server answers the
    well-behaved client while they run."""
    for i in range(40):
        client.mutation("notes:add", {"tag": tag, "body": f"n{i}", "pos": float(i)})
    expected = [f"n{i}" for i in range(40)]
    body = _batch(MAX_BATCH_QUERIES, tag)
    results: list[httpx.Response] = []
    during: list[int] = []
    writes = 0

    def send_batches() -> None:
        with httpx.Client(timeout=PATIENCE) as http:
            for _ in range(3):
                results.append(http.post(server.url + "/api/query_batch", content=body))

    batches = threading.Thread(target=send_batches)
    seen = watcher.answers
    batches.start()
    while batches.is_alive():
        # Writes land between the entries of a batch: they must not show in it.
        client.mutation("notes:add", {"tag": tag, "body": f"w{writes}", "pos": 100.0 + writes})
        writes += 1
        if batches.is_alive():
            during.append(watcher.answers - seen)
    batches.join()
    assert len(results) == 3
    for response in results:
        assert response.status_code == 200, response.text[:200]
        answers = response.json()["results"]
        assert len(answers) == MAX_BATCH_QUERIES
        first = answers[0]
        assert first["status"] == "success" and first["value"][:40] == expected
        ran = [a for a in answers if a["status"] == "success"]
        assert len(ran) > 1 and answers[: len(ran)] == ran
        distinct = {json.dumps(a) for a in ran}
        assert len(distinct) == 1, sorted(distinct)[:3]
        for answer in answers[len(ran) :]:
            assert f"BatchTimeLimit: query_batch ran {len(ran)} of its" in answer["errorMessage"]
    # The watcher (and the writer above) were answered while the batches ran.
    assert writes >= 3 and during and during[-1] >= 3, (writes, during)


# -- request heads: size and time ---------------------------------------------------


def _read_answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes (a reset counts as the end)."""
    sock.settimeout(PATIENCE)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


@pytest.mark.parametrize("port", ["api", "site"])
@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"X-Big: " + b"a" * 100_000 + b"\r\n", id="one-big-header"),
        pytest.param(b"".join(b"X-%d: 1\r\n" % i for i in range(150)), id="many-headers"),
        pytest.param(b"X-Big: " + b"a" * 33_000 + b"\r\n", id="just-over-32k"),
    ],
)
def test_oversized_request_head_is_refused(
    server: BasaltProcess, watcher: Watcher, port: str, head: bytes
) -> None:
    """A head over the limit gets 431 and a closed connection, on both ports."""
    info = json.loads((server.data / "server.json").read_text())
    url = httpx.URL(info["url"] if port == "api" else info["siteUrl"])
    with socket.create_connection((url.host, url.port), timeout=PATIENCE) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    watcher.answers_after(3)


def test_head_under_the_limit_is_served(server: BasaltProcess) -> None:
    response = httpx.get(server.url + "/health", headers={"x-pad": "a" * 30_000}, timeout=PATIENCE)
    assert response.status_code == 200


def test_endless_header_is_cut_off(server: BasaltProcess, watcher: Watcher) -> None:
    """A 250 MiB header used to be read (and held) whole; the server now stops
    reading it early and drops the connection, and others keep being served."""
    total = 250 << 20
    chunk = b"a" * (1 << 20)
    sent = 0
    url = httpx.URL(server.url)
    with socket.create_connection((url.host, url.port), timeout=PATIENCE) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_answer(sock)
    assert sent < total, "the server read a 250 MiB header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    watcher.answers_after(3)


@pytest.fixture
def impatient_server(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> BasaltProcess:
    """A server that gives request heads one second."""
    return basalt_process(basic_app, tmp_path / "data", env={"BASALT_HEADER_TIMEOUT": "1"}).start()


def test_heads_that_never_finish_are_closed(impatient_server: BasaltProcess, tag: str) -> None:
    """A client that connects and sends nothing, or dribbles a head byte by
    byte, is disconnected once the header time is up; others are served."""
    url = httpx.URL(impatient_server.url)
    with Watcher(impatient_server.url, tag) as watcher:
        silent = socket.create_connection((url.host, url.port), timeout=PATIENCE)
        dribbler = socket.create_connection((url.host, url.port), timeout=PATIENCE)
        dribbler.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        closed = False
        for _ in range(int(PATIENCE / 0.1)):
            try:
                dribbler.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            dribbler.settimeout(0.1)
            try:
                if not dribbler.recv(65536, socket.MSG_PEEK):
                    closed = True
                    break
                answer = _read_answer(dribbler)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
                closed = True
                break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
        assert closed, "the server kept a never-ending head open"
        assert _read_answer(silent) == b""
        silent.close()
        dribbler.close()
        watcher.answers_after(3)


# -- many connections ---------------------------------------------------------------


def test_thousands_of_half_open_connections(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path, tag: str
) -> None:
    """2,500 connections that send half a request and wait, against a server
    allowed 1,024 open files: new visitors (a new connection per request) are
    still answered, and nothing fails once the crowd is in place."""
    server = basalt_process(basic_app, tmp_path / "data", open_files=1024).start()
    url = httpx.URL(server.url)
    crowd: list[socket.socket] = []
    try:
        with Watcher(server.url, tag, fresh=True) as watcher:
            watcher.answers_after(1)
            for _ in range(2500):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect((url.host, url.port))
                crowd.append(sock)
                with contextlib.suppress(OSError):
                    sock.send(b"GET /health HTTP/1.1\r\n")
            # The crowd is in place: every visitor from now on is answered.
            during = len(watcher.failures)
            watcher.failures.clear()
            watcher.answers_after(20)
    finally:
        for sock in crowd:
            sock.close()
    assert server.proc is not None and server.proc.poll() is None
    print(f"visitors failed while the crowd arrived: {during}")
