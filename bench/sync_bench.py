#!/usr/bin/env python
"""Basalt's sync benchmark: commit → update latency over WebSocket, and invalidation cost.

Two measurements, one run:

(a) ``latency``: ``basalt serve`` on ``bench/apps/sync`` as a subprocess; W load
    processes (uvloop + the ``websockets`` asyncio client, compression off) open
    C WebSocket connections in all, each sending ``Connect`` and ``ModifyQuerySet``
    (Add ``counter:get``) and waiting for its first Transition. Then N commits are
    made, spaced S seconds apart, each a ``POST /api/mutation`` of ``counter:bump``
    sent by one of the load processes in turn; for every (client, commit) pair the
    time from just before the POST to the arrival of the Transition carrying the new
    value is recorded.
(b) ``invalidation``: in-process, a Runtime on a temporary SQLite database and a
    SyncHub in the same loop with K sessions subscribed to ``messages:by_channel``
    on K distinct channels; mutations then insert into a channel nobody watches.
    The time spent in the hub's commit listener (``SyncHub._on_commit``, which calls
    ``SubscriptionIndex.matches``) is compared with the cost of the mutation, and the
    mutation rate with the subscriptions is compared with the rate with none.

Usage::

    .venv/bin/python bench/sync_bench.py [--clients 1000] [--commits 30]
                                         [--subscriptions 10000] [--json]

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import apsw

# core_bench.py sits next to this file; its server helpers are reused.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_bench import (
    basalt_command,
    free_port,
    process_cpu,
    stop_server,
    wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
APP_DIR = BENCH_DIR / "apps" / "sync"
DEFAULT_TMP_ROOT = BENCH_DIR / ".tmp"

LATENCY_GOAL_MS = 250.0  # p99 commit → update latency, 1,000 clients of one query
INVALIDATION_GOAL = 0.10  # commit-listener time / mutation time, 10,000 idle subscriptions

#: Seconds the clients of (a) have to connect and get their first Transition.
CONNECT_TIMEOUT = 30.0

#: File descriptors a process needs besides its sockets (Python, SQLite, pipes, ...).
FD_MARGIN = 256

#: The clock of every latency: CLOCK_MONOTONIC, which on Linux is one clock for
#: the whole machine, so readings taken in different processes compare.
now_ns = time.monotonic_ns


def say(message: str) -> None:
    """Progress on stderr (the results go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    factory, _ = event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "n": len(s),
        "p50": percentile(s, 0.50),
        "p99": percentile(s, 0.99),
        "max": s[-1] if s else float("nan"),
    }


def basalt_revision() -> str:
    """The repository's commit, and whether basalt/ differs from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        diff = ["git", "--no-optional-locks", "-C", str(REPO_DIR), "diff", "--quiet", "HEAD"]
        dirty = subprocess.run(
            [*diff, "--", "basalt"],
            capture_output=True,
            timeout=10,
            check=False,
        ).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" with uncommitted changes in basalt/" if dirty else "")


def ensure_open_files(needed: int) -> dict[str, Any]:
    """Raise this process's soft open-file limit to ``needed`` if it is lower
    (never above the hard limit). Children (the server, the load processes)
    inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    info: dict[str, Any] = {"soft": soft, "hard": hard, "needed": needed, "raised_to": None}
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        info["raised_to"] = target
    return info


# -- (a) the server ----------------------------------------------------------------------


# -- (a) one load process ----------------------------------------------------------------


def connect_frame() -> str:
    return json.dumps(
        {
            "type": "Connect",
            "sessionId": str(uuid.uuid4()),
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
    )


SUBSCRIBE_FRAME = json.dumps(
    {
        "type": "ModifyQuerySet",
        "baseVersion": 0,
        "newVersion": 1,
        "modifications": [{"type": "Add", "queryId": 0, "udfPath": "counter:get", "args": [{}]}],
    }
)


def bump_request(port: int) -> bytes:
    body = json.dumps(
        {"path": "counter:bump", "args": {}, "format": "convex_encoded_json"},
        separators=(",", ":"),
    ).encode()
    head = (
        "POST /api/mutation HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


class SyncClient:
    """One WebSocket connection subscribed to ``counter:get``; it records when
    each Transition arrives and the counter value it carries."""

    def __init__(self) -> None:
        self.initial: float | None = None
        self.subscribed = asyncio.Event()
        self.values: list[float] = []  # counter value after each update (non-decreasing)
        self.times: list[int] = []  # arrival, now_ns()
        self.server_ts: list[int] = []  # the Transition's serverTs (server wall clock, ns)
        self.frames = 0  # every frame received, the first Transition included
        self.transitions = 0
        self.empty_transitions = 0  # Transitions without a QueryUpdated for query 0
        self.other_frames: dict[str, int] = {}
        self.anomalies: list[str] = []
        self.closed_by_us = False
        self.error: str | None = None
        self._last_end: Any = None
        self.ws: Any = None

    def anomaly(self, what: str) -> None:
        if len(self.anomalies) < 5:
            self.anomalies.append(what[:500])

    def target_reached(self, value: float) -> bool:
        return bool(self.values) and self.values[-1] >= value

    async def run(self, uri: str, connecting: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        try:
            async with connecting:
                self.ws = await connect(
                    uri,
                    compression=None,
                    proxy=None,
                    ping_interval=None,
                    open_timeout=60,
                    close_timeout=5,
                    max_size=1 << 24,
                )
                await self.ws.send(connect_frame())
                await self.ws.send(SUBSCRIBE_FRAME)
            async for text in self.ws:
                self.handle(now_ns(), text)
        except ConnectionClosed as exc:
            if not self.closed_by_us:
                self.error = f"connection closed by the server: {exc!r}"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.subscribed.set()  # never leave the waiter hanging
        if self.ws is not None and not self.closed_by_us and self.error is None:
            self.error = "the server closed the connection"

    def handle(self, t: int, text: str | bytes) -> None:
        self.frames += 1
        msg = json.loads(text)
        kind = msg.get("type")
        if kind != "Transition":
            self.other_frames[kind] = self.other_frames.get(kind, 0) + 1
            if kind != "Ping":
                self.anomaly(f"frame {text!r}")
            return
        if self.initial is not None:
            self.transitions += 1
        if self._last_end is not None and msg.get("startVersion") != self._last_end:
            self.anomaly(
                f"startVersion {msg.get('startVersion')} != last endVersion {self._last_end}"
            )
        self._last_end = msg.get("endVersion")
        value = None
        for mod in msg.get("modifications", ()):
            if mod.get("queryId") == 0:
                if mod.get("type") == "QueryUpdated":
                    value = float(mod["value"])
                else:
                    self.anomaly(f"modification {mod!r}")
        if value is None:
            if self.initial is not None:
                self.empty_transitions += 1
            return
        if self.initial is None:
            self.initial = value
            self.subscribed.set()
            return
        if self.values and value < self.values[-1]:
            self.anomaly(f"value went back from {self.values[-1]} to {value}")
        self.values.append(value)
        self.times.append(t)
        self.server_ts.append(int(msg.get("serverTs") or 0))

    async def close(self) -> None:
        self.closed_by_us = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


async def post_bump(port: int, request: bytes) -> tuple[float | None, str | None]:
    """One ``counter:bump`` over a fresh keep-alive-less connection; (value, error)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, dict) or answer.get("status") != "success":
        return None, f"HTTP {status}: {body[:300].decode(errors='replace')}"
    return float(answer["value"]), None


async def load_process(pipe: Connection, spec: dict[str, Any]) -> dict[str, Any]:
    """Open this process's clients, report ready, make its share of the commits on
    the shared schedule, then report every arrival."""
    loop = asyncio.get_running_loop()
    uri = f"ws://127.0.0.1:{spec['port']}/api/sync"
    clients = [SyncClient() for _ in range(spec["clients"])]
    connecting = asyncio.Semaphore(64)
    t0 = now_ns()
    cpu0 = time.process_time()
    tasks = [loop.create_task(c.run(uri, connecting)) for c in clients]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(c.subscribed.wait() for c in clients)), spec["connect_timeout"]
        )
    subscribed = sum(c.initial is not None for c in clients)
    pipe.send(
        {
            "ready": subscribed,
            "connected": sum(c.ws is not None for c in clients),
            "got_a_frame": sum(c.frames > 0 for c in clients),
            "connect_seconds": (now_ns() - t0) / 1e9,
            "connect_cpu": time.process_time() - cpu0,
            "initial": sorted({c.initial for c in clients if c.initial is not None}),
            "errors": [c.error for c in clients if c.error][:5],
        }
    )
    go = await loop.run_in_executor(None, pipe.recv)
    if go.get("stop"):
        for c in clients:
            await c.close()
        return {"aborted": True}

    commits: list[dict[str, Any]] = []
    errors: list[str] = []
    request = bump_request(spec["port"])
    start_ns, spacing_ns, n, k, w = (
        go["start_ns"],
        go["spacing_ns"],
        go["commits"],
        spec["index"],
        spec["processes"],
    )
    cpu0 = time.process_time()
    wall0 = now_ns()

    async def trigger() -> None:
        for i in range(k, n, w):
            delay = (start_ns + i * spacing_ns - now_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            wall = time.time_ns()
            sent = now_ns()
            try:
                value, error = await post_bump(spec["port"], request)
            except Exception as exc:
                value, error = None, f"{type(exc).__name__}: {exc}"
            acked = now_ns()
            if error is not None:
                errors.append(error)
            commits.append(
                {"i": i, "value": value, "sent": sent, "acked": acked, "wall": wall, "by": k}
            )

    await trigger()
    # Wait until every client has seen the last value, or the grace period ends.
    target = go["final_value"]
    deadline = start_ns + n * spacing_ns + int(spec["grace"] * 1e9)
    while now_ns() < deadline:
        if all(c.target_reached(target) or c.error for c in clients):
            break
        await asyncio.sleep(0.02)
    wall = (now_ns() - wall0) / 1e9
    cpu = time.process_time() - cpu0
    await asyncio.gather(*(c.close() for c in clients))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    other: dict[str, int] = {}
    for c in clients:
        for kind, count in c.other_frames.items():
            other[kind] = other.get(kind, 0) + count
    return {
        "commits": commits,
        "errors": errors,
        "cpu_cores": cpu / wall,
        "arrivals": [(c.values, c.times, c.server_ts) for c in clients],
        "transitions": sum(c.transitions for c in clients),
        "empty_transitions": sum(c.empty_transitions for c in clients),
        "other_frames": other,
        "anomalies": [a for c in clients for a in c.anomalies][:10],
        "client_errors": [c.error for c in clients if c.error][:10],
        "clients_with_errors": sum(1 for c in clients if c.error),
        # Converts serverTs (wall clock) to this process's now_ns() clock.
        "wall_minus_mono": time.time_ns() - now_ns(),
    }


def load_process_main(pipe: Connection, spec: dict[str, Any]) -> None:
    """Entry point of a load process (started with the 'spawn' method)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        result = run_async(load_process(pipe, spec))
    except BaseException:
        result = {"fatal": traceback.format_exc()}
    with contextlib.suppress(OSError):
        pipe.send(result)


# -- (a) the run -------------------------------------------------------------------------


def latency_bench(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tmp / "server-data"
    log = tmp / "server.log"
    port = free_port()
    env = dict(os.environ)
    env["BASALT_ADMIN_KEY"] = f"basalt|bench-{secrets.token_hex(16)}"
    env.pop("BASALT_DATABASE_URL", None)
    command = [
        *basalt_command(),
        "serve",
        "--app",
        str(APP_DIR),
        "--data",
        str(data_dir),
        "--port",
        str(port),
    ]
    nproc = max(1, min(args.processes, args.clients))
    shares = [args.clients // nproc + (1 if i < args.clients % nproc else 0) for i in range(nproc)]
    result: dict[str, Any] = {
        "clients": args.clients,
        "processes": nproc,
        "commits": args.commits,
        "warmup_commits": args.warmup,
        "spacing_s": args.spacing,
    }
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    pipes: list[Connection] = []
    finished = False
    with open(log, "wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(server, port, log)
            # One bump before anyone subscribes, so the counter document exists.
            value, error = run_async(post_bump(port, bump_request(port)))
            if error is not None:
                raise RuntimeError(f"the first counter:bump failed: {error}")
            for i, share in enumerate(shares):
                parent, child = ctx.Pipe()
                spec = {
                    "port": port,
                    "clients": share,
                    "index": i,
                    "processes": nproc,
                    "connect_timeout": CONNECT_TIMEOUT,
                    "grace": args.grace,
                }
                p = ctx.Process(target=load_process_main, args=(child, spec), name=f"sync-load-{i}")
                p.daemon = True
                p.start()
                child.close()
                procs.append(p)
                pipes.append(parent)
            say(f"  (a) {args.clients} clients in {nproc} load processes: connecting ...")
            ready = [recv(p, procs[i], 120) for i, p in enumerate(pipes)]
            result["connect_seconds"] = max(r["connect_seconds"] for r in ready)
            result["connect_cpu_seconds"] = [r["connect_cpu"] for r in ready]
            subscribed = sum(r["ready"] for r in ready)
            result["subscribed"] = subscribed
            initial = sorted({v for r in ready for v in r["initial"]})
            result["initial_values"] = initial
            if subscribed != args.clients or initial != [value]:
                for pipe in pipes:
                    pipe.send({"stop": True})
                errors = [e for r in ready for e in r["errors"]]
                per_process = [
                    f"{r['connected']} connected, {r['got_a_frame']} got a frame, "
                    f"{r['ready']} subscribed"
                    for r in ready
                ]
                raise RuntimeError(
                    f"only {subscribed} of {args.clients} clients got their first Transition "
                    f"with the counter within {CONNECT_TIMEOUT:.0f} s (initial values {initial}, "
                    f"expected [{value}]); per load process: {per_process}; errors: {errors}"
                )
            say(
                f"  (a) subscribed in {result['connect_seconds']:.1f} s; {args.warmup} warm-up + "
                f"{args.commits} commits {args.spacing * 1000:.0f} ms apart ..."
            )
            spacing_ns = int(args.spacing * 1e9)
            start_ns = now_ns() + 500_000_000
            go = {
                "start_ns": start_ns,
                "spacing_ns": spacing_ns,
                "commits": args.warmup + args.commits,
                "final_value": value + args.warmup + args.commits,
            }
            cpu0, wall0 = process_cpu(server.pid), now_ns()
            for pipe in pipes:
                pipe.send(go)
            timeout = 0.5 + (args.warmup + args.commits) * args.spacing + args.grace + 60
            reports = [recv(p, procs[i], timeout) for i, p in enumerate(pipes)]
            finished = True
            cpu1, wall1 = process_cpu(server.pid), now_ns()
            if cpu0 is not None and cpu1 is not None:
                result["server_cpu_cores"] = (cpu1 - cpu0) / ((wall1 - wall0) / 1e9)
            result.update(analyse(reports, value, args.warmup))
        finally:
            for pipe in pipes:
                pipe.close()
            for p in procs:
                if not finished:  # interrupted or failed: do not wait for their schedule
                    p.terminate()
                p.join(timeout=10)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
            stop_server(server)
    result["server_exit"] = server.returncode
    tail = log.read_text(errors="replace").splitlines()
    result["server_log_tail"] = [line for line in tail if line.strip()][-15:]
    return result


def recv(pipe: Connection, proc: Any, timeout: float) -> dict[str, Any]:
    if not pipe.poll(timeout):
        raise RuntimeError(f"{proc.name} did not answer within {timeout:.0f} s")
    message: dict[str, Any] = pipe.recv()
    if "fatal" in message:
        raise RuntimeError(f"{proc.name} failed:\n{message['fatal']}")
    return message


def analyse(reports: list[dict[str, Any]], first_value: float, warmup: int) -> dict[str, Any]:
    """Latency of every (client, commit) pair; the first ``warmup`` commits are
    summarised apart."""
    commits = sorted((c for r in reports for c in r["commits"]), key=lambda c: c["i"])
    values = [c["value"] for c in commits]
    expected_values = [first_value + 1 + i for i in range(len(commits))]
    warm_latencies = []
    for report in reports:
        for vals, times, _ in report["arrivals"]:
            for c in commits[:warmup]:
                j = bisect.bisect_left(vals, c["value"] or float("inf"))
                if j < len(vals):
                    warm_latencies.append((times[j] - c["sent"]) / 1e6)
    ok_commits = [c for c in commits[warmup:] if c["value"] is not None]
    latencies: list[float] = []
    same_process: list[float] = []
    built: list[float] = []  # serverTs - sent
    delivered: list[float] = []  # arrival - serverTs
    coalesced = missing = 0
    first_arrival = {c["i"]: None for c in ok_commits}
    last_arrival = dict(first_arrival)
    for w, report in enumerate(reports):
        offset = report["wall_minus_mono"]
        for vals, times, server_ts in report["arrivals"]:
            for c in ok_commits:
                j = bisect.bisect_left(vals, c["value"])
                if j == len(vals):
                    missing += 1
                    continue
                t = times[j]
                ms = (t - c["sent"]) / 1e6
                latencies.append(ms)
                if c["by"] == w:
                    same_process.append(ms)
                if vals[j] != c["value"]:
                    coalesced += 1
                elif server_ts[j]:
                    s = server_ts[j] - offset
                    built.append((s - c["sent"]) / 1e6)
                    delivered.append((t - s) / 1e6)
                i = c["i"]
                if first_arrival[i] is None or t < first_arrival[i]:
                    first_arrival[i] = t
                if last_arrival[i] is None or t > last_arrival[i]:
                    last_arrival[i] = t
    per_commit = [
        {
            "i": c["i"],
            "by": c["by"],
            "sent_s": round(c["sent"] / 1e9, 4),
            "post_ms": round((c["acked"] - c["sent"]) / 1e6, 2),
            "first_ms": None
            if first_arrival[c["i"]] is None
            else round((first_arrival[c["i"]] - c["sent"]) / 1e6, 2),
            "last_ms": None
            if last_arrival[c["i"]] is None
            else round((last_arrival[c["i"]] - c["sent"]) / 1e6, 2),
        }
        for c in ok_commits
    ]
    fan_out = [
        (last_arrival[i] - first_arrival[i]) / 1e6
        for i in first_arrival
        if first_arrival[i] is not None
    ]
    clients = sum(len(r["arrivals"]) for r in reports)
    other: dict[str, int] = {}
    for r in reports:
        for kind, count in r["other_frames"].items():
            other[kind] = other.get(kind, 0) + count
    return {
        "commits_made": len(ok_commits),
        "warmup_latency_ms": summary(warm_latencies),
        "commit_errors": [e for r in reports for e in r["errors"]][:5],
        "values_as_expected": values == expected_values,
        "expected_updates": clients * len(ok_commits),
        "updates_arrived": len(latencies),
        "updates_coalesced": coalesced,
        "updates_missing": missing,
        "latency_ms": summary(latencies),
        "latency_same_process_ms": summary(same_process),
        "server_built_after_ms": summary(built),
        "delivered_after_build_ms": summary(delivered),
        "fan_out_ms": summary(fan_out),
        "post_round_trip_ms": summary([(c["acked"] - c["sent"]) / 1e6 for c in ok_commits]),
        "load_cpu_cores": [r["cpu_cores"] for r in reports],
        "per_commit": per_commit,
        "transitions": sum(r["transitions"] for r in reports),
        "empty_transitions": sum(r["empty_transitions"] for r in reports),
        "other_frames": other,
        "anomalies": [a for r in reports for a in r["anomalies"]][:10],
        "clients_with_errors": sum(r["clients_with_errors"] for r in reports),
        "client_errors": [e for r in reports for e in r["client_errors"]][:10],
    }


# -- (b) invalidation, in-process --------------------------------------------------------


class _NoVerifier:
    """Sessions here never authenticate."""

    def is_admin_key(self, key: str) -> bool:
        return False

    async def verify_user_token(self, token: str) -> dict[str, Any]:
        raise RuntimeError("no authentication in this benchmark")


BODY = "The quick brown fox jumps over the lazy dog while the benchmark keeps inserting."


async def _invalidation_round(
    path: Path, subscriptions: int, seconds: float, skip_cycles: bool = False
) -> dict[str, Any]:
    """Mutations into an unwatched channel for ``seconds`` with ``subscriptions``
    idle sessions. ``skip_cycles``: once subscribed, the hub's refresh cycles do
    nothing (isolates the commit listener from the cycles' work)."""
    from basalt.runtime import Runtime, load_app
    from basalt.storage.sqlite import SqliteEngine
    from basalt.sync import SyncHub, SyncSession

    runtime = Runtime(load_app(APP_DIR), SqliteEngine(path))
    result: dict[str, Any] = {"subscriptions": subscriptions, "cycles_skipped": skip_cycles}
    async with runtime:
        hub = SyncHub(runtime)
        # Time the commit listener and the refresh cycles (instance attributes
        # shadow the methods; start() registers the listener it finds here).
        listener_ns: list[int] = []  # one per call
        original_listener = hub._on_commit

        def timed_listener(commit: Any) -> None:
            t = time.perf_counter_ns()
            original_listener(commit)
            listener_ns.append(time.perf_counter_ns() - t)

        cycle_ns = [0, 0]
        original_cycle = hub.cycle
        skipping = [False]

        async def timed_cycle() -> None:
            if skipping[0]:
                return
            t = time.perf_counter_ns()
            await original_cycle()
            cycle_ns[0] += time.perf_counter_ns() - t
            cycle_ns[1] += 1

        hub._on_commit = timed_listener  # type: ignore[method-assign]
        hub.cycle = timed_cycle  # type: ignore[method-assign]
        hub.start()
        try:
            sent = [0]

            def send(message: dict[str, Any]) -> None:
                sent[0] += 1

            t0 = time.perf_counter()
            sessions = []
            for i in range(subscriptions):
                session = SyncSession(hub, _NoVerifier(), send, lambda: None)
                await session.handle(connect_frame())
                await session.handle(
                    json.dumps(
                        {
                            "type": "ModifyQuerySet",
                            "baseVersion": 0,
                            "newVersion": 1,
                            "modifications": [
                                {
                                    "type": "Add",
                                    "queryId": 0,
                                    "udfPath": "messages:by_channel",
                                    "args": [{"channel": f"channel-{i:05d}"}],
                                }
                            ],
                        }
                    )
                )
                sessions.append(session)
            deadline = time.monotonic() + 120
            while any(s.queries[0].sent_version < 1 for s in sessions):
                if time.monotonic() > deadline:
                    raise RuntimeError("the subscriptions did not all get their first result")
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            result["subscribe_seconds"] = time.perf_counter() - t0
            result["indexed_entries"] = len(hub.index)

            commits: list[Any] = []
            unlisten = runtime.storage.on_commit(commits.append)
            mutation = runtime.mutation
            args = {"channel": "nobody-listens", "body": BODY}
            for _ in range(20):  # warm-up
                await mutation("messages:send", args)
            await asyncio.sleep(0.05)
            commits.clear()
            listener_ns.clear()
            cycle_ns[:] = [0, 0]
            skipping[0] = skip_cycles
            sent0 = sent[0]
            n = 0
            start = time.perf_counter()
            deadline_pc = start + seconds
            while time.perf_counter() < deadline_pc:
                for _ in range(10):
                    await mutation("messages:send", args)
                n += 10
            elapsed = time.perf_counter() - start
            # Let the last cycle finish before reading the counters.
            await asyncio.sleep(0.05)
            while not skip_cycles and (hub.ts < commits[-1].ts or hub._wake.is_set()):
                await asyncio.sleep(0.01)
            unlisten()
            listener = sorted(listener_ns)
            result.update(
                mutations=n,
                seconds=elapsed,
                rate=n / elapsed,
                mutation_us=elapsed / n * 1e6,
                listener_calls=len(listener),
                listener_us=sum(listener) / max(len(listener), 1) / 1e3,
                listener_median_us=percentile(listener, 0.5) / 1e3,
                cycles=cycle_ns[1],
                cycle_us=cycle_ns[0] / max(cycle_ns[1], 1) / 1e3,
                cycle_us_per_mutation=cycle_ns[0] / n / 1e3,
                messages_sent=sent[0] - sent0,
                messages_per_mutation=(sent[0] - sent0) / n,
            )
            # The index alone, replayed on the same commits.
            matches = hub.index.matches
            hits = 0
            repeats = max(1, 20_000 // max(len(commits), 1))
            t = time.perf_counter_ns()
            for _ in range(repeats):
                for commit in commits:
                    hits += len(matches(commit))
            result["matches_us"] = (time.perf_counter_ns() - t) / (repeats * len(commits)) / 1e3
            result["matches_hits"] = hits
            # A cycle with nothing new to send (no commit since the last one).
            skipping[0] = False
            await original_cycle()
            t = time.perf_counter_ns()
            for _ in range(5):
                await original_cycle()
            result["idle_cycle_us"] = (time.perf_counter_ns() - t) / 5 / 1e3
            for session in sessions:
                session.close()
        finally:
            await hub.stop()
    return result


def invalidation_bench(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    rounds = {}
    plan = (
        ("baseline", 0, False),
        ("subscribed", args.subscriptions, False),
        ("subscribed_no_cycles", args.subscriptions, True),
    )
    for name, subs, skip in plan:
        say(
            f"  (b) {subs:,} subscriptions{', refresh cycles skipped' if skip else ''}: "
            f"{args.seconds:g} s of mutations ..."
        )
        path = tmp / f"invalidation-{name}.sqlite3"
        rounds[name] = run_async(_invalidation_round(path, subs, args.seconds, skip))
    base, subbed, quiet = rounds["baseline"], rounds["subscribed"], rounds["subscribed_no_cycles"]
    return {
        "subscriptions": args.subscriptions,
        "baseline": base,
        "subscribed": subbed,
        "subscribed_no_cycles": quiet,
        "rate_ratio": subbed["rate"] / base["rate"],
        "rate_ratio_no_cycles": quiet["rate"] / base["rate"],
        "listener_share_no_cycles": quiet["listener_us"] / base["mutation_us"],
        # The commit listener's cost against the mutation alone (0 subscriptions) ...
        "listener_share": subbed["listener_us"] / base["mutation_us"],
        # ... and against the mutation as measured with the subscriptions.
        "listener_share_of_subscribed": subbed["listener_us"] / subbed["mutation_us"],
        "goal_share": INVALIDATION_GOAL,
    }


# -- the run -----------------------------------------------------------------------------


def fmt_ms(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.1f} ms  p99 {s['p99']:.1f} ms  max {s['max']:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--clients", type=int, default=1000, help="WebSocket clients in (a) (default %(default)s)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="load-generator processes sharing the clients (default %(default)s)",
    )
    parser.add_argument(
        "--commits", type=int, default=30, help="commits measured in (a) (default %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="commits made before the measured ones in (a), reported apart (default %(default)s)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.3,
        help="seconds between the commits of (a) (default %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds (a) waits after the last commit for late updates (default %(default)s)",
    )
    parser.add_argument(
        "--subscriptions",
        type=int,
        default=10_000,
        help="idle subscriptions in (b) (default %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="length of each mutation-rate measurement in (b) (default %(default)s)",
    )
    parser.add_argument("--only", choices=("a", "b"), help="run only one of the two parts")
    parser.add_argument(
        "--tmp-root",
        type=Path,
        default=DEFAULT_TMP_ROOT,
        help="where the temporary folder is made (default bench/.tmp)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the numbers as JSON on stdout (the text goes to stderr)",
    )
    args = parser.parse_args(argv)

    out: Callable[[str], None] = say if args.json else print
    # On SIGTERM unwind normally, so the finally blocks stop the processes and clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sync_bench-", dir=args.tmp_root))
    try:
        report = run(args, tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.tmp_root == DEFAULT_TMP_ROOT:
            with contextlib.suppress(OSError):
                args.tmp_root.rmdir()  # only if empty
    if args.json:
        print(json.dumps(report, indent=2))
    # Exit status 1 only for wrong behaviour (lost updates, errors), never for speed.
    return 0 if report["correct"] else 1


def run(args: argparse.Namespace, tmp: Path, out: Callable[[str], None]) -> dict[str, Any]:
    _, loop_name = event_loop_factory()
    import websockets

    limits = ensure_open_files(args.clients + FD_MARGIN)
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": apsw.sqlitelibversion(),
        "apsw": apsw.apswversion(),
        "websockets": websockets.__version__,
        "platform": platform.platform(),
        "event_loop": loop_name,
        "basalt": basalt_revision(),
        "load_average_at_start": os.getloadavg()[0],
        "open_files": limits,
        "tmp": str(tmp),
    }
    out(
        f"sync_bench: {machine['cores']} cores, Python {machine['python']}, "
        f"SQLite {machine['sqlite']} (apsw {machine['apsw']}), websockets {machine['websockets']}, "
        f"loop={loop_name}, {machine['platform']}; load average {os.getloadavg()[0]:.2f}"
    )
    out(f"basalt: {machine['basalt']}")
    if limits["raised_to"] is not None:
        out(
            f"open-file limit: raised the soft limit from {limits['soft']} to "
            f"{limits['raised_to']} (hard {limits['hard']}) with resource.setrlimit"
        )
    else:
        out(
            f"open-file limit: soft {limits['soft']}, hard {limits['hard']}: enough for "
            f"{args.clients:,} sockets (not raised)"
        )
    report: dict[str, Any] = {"machine": machine}
    correct = True

    if args.only != "b":
        a = latency_bench(tmp, args)
        report["latency"] = a
        a["goal_p99_ms"] = LATENCY_GOAL_MS
        lat = a["latency_ms"]
        met = "met" if lat["p99"] <= LATENCY_GOAL_MS else "NOT met"
        out(
            f"(a) commit → update latency: {a['clients']:,} WebSocket clients of counter:get "
            f"({a['processes']} load processes), {a['commits_made']} commits "
            f"{a['spacing_s'] * 1000:.0f} ms apart via POST /api/mutation"
        )
        out(f"    subscribed in {a['connect_seconds']:.1f} s")
        out(
            f"    updates arrived {a['updates_arrived']:,} of {a['expected_updates']:,} "
            f"(missing {a['updates_missing']}, coalesced into a later Transition "
            f"{a['updates_coalesced']})"
        )
        out(f"    latency {fmt_ms(lat)}   (goal p99 ≤ {LATENCY_GOAL_MS:.0f} ms: {met})")
        if a["warmup_commits"]:
            out(
                f"    the {a['warmup_commits']} warm-up commits before them (not counted above): "
                f"{fmt_ms(a['warmup_latency_ms'])}"
            )
        out(
            f"    pairs whose commit was sent by the receiving process: "
            f"{fmt_ms(a['latency_same_process_ms'])}"
        )
        out(
            f"    server built the Transition after     {fmt_ms(a['server_built_after_ms'])}"
            "   (its serverTs minus the send)"
        )
        out(f"    client received it after building     {fmt_ms(a['delivered_after_build_ms'])}")
        out(f"    first → last client, per commit       {fmt_ms(a['fan_out_ms'])}")
        out(f"    POST /api/mutation round trip         {fmt_ms(a['post_round_trip_ms'])}")
        load = " + ".join(f"{c:.2f}" for c in a["load_cpu_cores"])
        cpu = f"    CPU during the commits: load processes {load} cores"
        if "server_cpu_cores" in a:
            cpu += f", server {a['server_cpu_cores']:.2f} cores"
        out(cpu + f" (of {os.cpu_count()})")
        one_each = a["clients"] * (a["warmup_commits"] + a["commits"])
        out(
            f"    frames after each client's first Transition: {a['transitions']:,} Transitions "
            f"(one per client per commit would be {one_each:,}; {a['empty_transitions']} carried "
            f"no update), other frames {a['other_frames'] or 'none'}, "
            f"clients with errors {a['clients_with_errors']}"
        )
        for what in a["anomalies"] + a["client_errors"] + a["commit_errors"]:
            out(f"    problem: {what}")
        ok = (
            a["updates_missing"] == 0
            and a["updates_arrived"] == a["expected_updates"]
            and a["commits_made"] == a["commits"]
            and a["values_as_expected"]
            and a["clients_with_errors"] == 0
            and not a["anomalies"]
        )
        if not ok or a["server_exit"] not in (0, -signal.SIGINT):
            out(f"    server exit status {a['server_exit']}; the end of its log:")
            for line in a["server_log_tail"]:
                out(f"      | {line}")
        correct = correct and ok

    if args.only != "a":
        b = invalidation_bench(tmp, args)
        report["invalidation"] = b
        base, sub = b["baseline"], b["subscribed"]
        out(
            f"(b) invalidation, in-process: {b['subscriptions']:,} sessions each subscribed to "
            "messages:by_channel on its own channel; mutations insert into a channel nobody watches"
        )
        out(
            f"    subscribed in {sub['subscribe_seconds']:.1f} s "
            f"({sub['indexed_entries']:,} entries in the index)"
        )
        quiet = b["subscribed_no_cycles"]
        k = f"{b['subscriptions']:,}"
        rows = [
            ("0 subscriptions", base, ""),
            (f"{k} subscriptions", sub, f"   ratio {b['rate_ratio']:.3f}"),
            (
                f"{k}, cycles skipped",
                quiet,
                f"   ratio {b['rate_ratio_no_cycles']:.3f}",
            ),
        ]
        out("    mutation rate (one caller, the hub running):")
        for name, r, tail in rows:
            out(
                f"      {name:<28}{r['rate']:>9,.0f} /s  {r['mutation_us']:>9.1f} µs per mutation"
                f"{tail}"
            )
        met = "met" if b["listener_share"] <= INVALIDATION_GOAL else "NOT met"
        out(
            f"    commit listener (SyncHub._on_commit), mean per commit, against a mutation with "
            f"0 subscriptions ({base['mutation_us']:.1f} µs):"
        )
        out(
            f"      {k + ' subscriptions':<28}{sub['listener_us']:>6.1f} µs = "
            f"{b['listener_share'] * 100:5.2f} %   (goal ≤ {INVALIDATION_GOAL * 100:.0f} %: {met}; "
            f"median {sub['listener_median_us']:.1f} µs; "
            f"{b['listener_share_of_subscribed'] * 100:.3f} % of a mutation with them)"
        )
        out(
            f"      {k + ', cycles skipped':<28}{quiet['listener_us']:>6.1f} µs = "
            f"{b['listener_share_no_cycles'] * 100:5.2f} %   "
            f"(median {quiet['listener_median_us']:.1f} µs)"
        )
        out(
            f"      {'0 subscriptions':<28}{base['listener_us']:>6.1f} µs = "
            f"{base['listener_us'] / base['mutation_us'] * 100:5.2f} %"
        )
        out(
            f"    SubscriptionIndex.matches alone, replayed in a loop on the run's "
            f"{sub['mutations']:,} commits: {sub['matches_us']:.2f} µs per commit "
            f"({sub['matches_hits']} hits)"
        )
        out(
            f"    refresh cycles: {sub['cycles']:,} for {sub['mutations']:,} mutations, "
            f"{sub['cycle_us'] / 1000:.2f} ms each; "
            f"{sub['messages_per_mutation']:,.0f} messages sent per mutation "
            "(to sessions whose queries did not change)"
        )
        out(
            f"    a cycle with no new commit: {sub['idle_cycle_us']:,.1f} µs with {k} "
            f"sessions, {base['idle_cycle_us']:,.1f} µs with none"
        )
        ok = (
            sub["matches_hits"] == 0
            and quiet["matches_hits"] == 0
            and sub["indexed_entries"] == b["subscriptions"]
        )
        correct = correct and ok
    report["correct"] = correct
    report["load_average_at_end"] = os.getloadavg()[0]
    out(
        f"correctness: {'OK' if correct else 'FAILED'}   "
        f"(load average at the end {report['load_average_at_end']:.2f})"
    )
    return report


if __name__ == "__main__":
    sys.exit(main())
