#!/usr/bin/env python
"""Basalt's core write benchmark: raw SQLite vs. Basalt in-process vs. Basalt over HTTP.

Everything is measured in one run, on one disk, so the ratios mean something even
on a noisy machine:

1. ``raw``: single-row ``BEGIN IMMEDIATE; INSERT; COMMIT`` through apsw with the
   pragmas Basalt's SQLite engine uses (read from the engine at run time).
2. ``in-process``: ``await runtime.mutation("messages:send", ...)`` in a loop on a
   :class:`~basalt.runtime.Runtime` over :class:`~basalt.storage.sqlite.SqliteEngine`.
   Rounds of 1. and 2. are interleaved and the medians are reported.
3. ``HTTP``: ``basalt serve`` as a subprocess, driven by C keep-alive clients
   posting ``/api/mutation`` (a lean asyncio load generator in this process).

At the end the number of stored documents is checked against the number of
acknowledged mutations.

Usage::

    .venv/bin/python bench/core_bench.py [--seconds 5] [--clients 32]
                                         [--durability process|power] [--json]

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import apsw

from basalt.runtime import Runtime, load_app
from basalt.storage import sqlite as basalt_sqlite
from basalt.storage.base import Commit, KeyWrite
from basalt.storage.commitlog import encode_writes
from basalt.storage.indexing import index_key
from basalt.storage.sqlite import DURABILITY_SYNC, SqliteEngine
from basalt.storage.sqlite_checkpoint import Checkpointer
from basalt.storage.sqlite_tx import INSERT_DOCUMENT, INSERT_ENTRY
from basalt.values.ids import new_id
from basalt.values.wire import dumps_stored

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
APP_DIR = BENCH_DIR / "apps" / "insert"
DEFAULT_TMP_ROOT = BENCH_DIR / ".tmp"

IN_PROCESS_GOAL = 0.40  # in-process rate / raw rate
HTTP_GOAL = 2500.0  # mutations per second on one server process

#: Per-connection pragmas copied from the engine's writer connection to the raw
#: baseline (page_size is per database and is set before the file is created).
COPIED_PRAGMAS = (
    "journal_mode",
    "synchronous",
    "cache_size",
    "wal_autocheckpoint",
    "mmap_size",
    "temp_store",
    "locking_mode",
    "foreign_keys",
    "journal_size_limit",
)
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
SQLITE_DEFAULT_AUTOCHECKPOINT = 1000

#: The message body used everywhere: ~80 characters, so a stored document is ~150 bytes
#: and the raw baseline's JSON row is ~100 bytes.
BODY = "The quick brown fox jumps over the lazy dog while the benchmark keeps inserting."
AUTHORS = [f"user-{i:02d}" for i in range(16)]
RAW_VALUE = json.dumps({"author": AUTHORS[0], "body": BODY[:60]}, separators=(",", ":"))


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


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


# -- the engine's pragmas --------------------------------------------------------------


def engine_pragmas(tmp: Path, durability: str) -> dict[str, Any]:
    """The pragmas of a connection Basalt's engine opened, plus the page size of a
    database it created, so the raw baseline follows the engine automatically."""
    path = tmp / "probe.sqlite3"
    pragmas: dict[str, Any] = {}

    async def probe() -> None:
        engine = SqliteEngine(path, durability=durability)
        await engine.open()
        try:
            conn = getattr(engine, "_writer", None)
            if isinstance(conn, apsw.Connection):
                for name in COPIED_PRAGMAS:
                    rows = conn.execute(f"PRAGMA {name}").fetchall()
                    if rows:
                        pragmas[name] = rows[0][0]
        finally:
            await engine.close()

    run_async(probe())
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        pragmas["page_size"] = conn.execute("PRAGMA page_size").fetchall()[0][0]
    finally:
        conn.close()
    remove_db(path)
    if "synchronous" in pragmas:
        pragmas["synchronous"] = SYNC_NAMES.get(pragmas["synchronous"], pragmas["synchronous"])
    else:  # could not read the engine's connection: use its documented map
        pragmas["synchronous"] = DURABILITY_SYNC[durability]
        pragmas.setdefault("journal_mode", "wal")
    if pragmas.get("wal_autocheckpoint") == 0:
        # The engine checkpoints on a worker thread of its own (its writer connection
        # has SQLite's automatic checkpoint off); a plain SQLite program keeps the
        # automatic one, or its WAL would grow without bound.
        pragmas["wal_autocheckpoint"] = SQLITE_DEFAULT_AUTOCHECKPOINT
    expected = DURABILITY_SYNC[durability]
    if str(pragmas["synchronous"]).upper() != expected:
        say(
            f"warning: the engine's connection has synchronous={pragmas['synchronous']}, "
            f"but DURABILITY_SYNC[{durability!r}] is {expected}"
        )
    return pragmas


def open_raw(path: Path, pragmas: dict[str, Any]) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.setbusytimeout(10_000)
    conn.execute(f"PRAGMA page_size={int(pragmas['page_size'])}")
    for name in COPIED_PRAGMAS:
        if name in pragmas:
            conn.execute(f"PRAGMA {name}={pragmas[name]}")
    return conn


# -- 1. raw ------------------------------------------------------------------------------


def raw_round(path: Path, pragmas: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Single-row insert+commit transactions for ``seconds``."""
    conn = open_raw(path, pragmas)
    try:
        conn.execute("CREATE TABLE docs(id TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
        execute = conn.execute
        urandom = os.urandom
        value = RAW_VALUE
        sql = "INSERT INTO docs(id, value) VALUES (?, ?)"
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for i in range(n, n + 100):
                # 16 characters, ordered like Basalt's time-prefixed ids (an increasing
                # prefix, then random), so both sides append at the end of their B-trees.
                key = f"{i:08x}{urandom(4).hex()}"
                execute("BEGIN IMMEDIATE")
                execute(sql, (key, value))
                execute("COMMIT")
            n += 100
            now = time.perf_counter()
            if now >= deadline:
                break
        elapsed = now - start
        stored = conn.execute("SELECT count(*) FROM docs").fetchall()[0][0]
    finally:
        conn.close()
    remove_db(path)
    return {"count": n, "seconds": elapsed, "rate": n / elapsed, "stored": stored}


# -- 1b. Basalt's SQL alone ----------------------------------------------------------------


async def _sql_alone(
    path: Path, durability: str, seconds: float, table_number: int, indexes: list[Any]
) -> tuple[int, int, float]:
    conn = apsw.Connection(str(path))
    conn.setbusytimeout(10_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={DURABILITY_SYNC[durability]}")
    conn.execute("PRAGMA temp_store=MEMORY")
    # WAL checkpoints as the engine runs them: on a worker thread.
    checkpointer = Checkpointer(str(path))
    checkpointer.attach(conn)
    execute, executemany = conn.execute, conn.executemany
    n = 0
    spent = 0.0
    ts = time.time_ns()
    clock = time.perf_counter
    try:
        while spent < seconds:
            # 200 mutations' rows, made outside the timed part.
            batch = []
            for i in range(200):
                now = time.time() * 1000 + i / 1024
                doc = {"_id": new_id(table_number, now), "_creationTime": now,
                       "author": AUTHORS[i & 15], "body": BODY}  # fmt: skip
                keys = [KeyWrite(ix.id, index_key(doc, ix)) for ix in indexes]
                ts += 1
                commit = Commit(ts=ts, doc_ids=[doc["_id"]], keys=keys)
                batch.append(
                    (
                        [(doc["_id"], table_number, dumps_stored(doc))],
                        [(k.index_id, k.key, doc["_id"]) for k in keys],
                        [(ts, encode_writes(commit))],
                    )
                )
            start = clock()
            for doc_rows, entry_rows, log_rows in batch:
                if checkpointer.must_wait():
                    await checkpointer.wait()
                execute("BEGIN IMMEDIATE")
                execute("PRAGMA data_version").fetchall()
                executemany(INSERT_DOCUMENT, doc_rows)
                executemany(INSERT_ENTRY, entry_rows)
                executemany("INSERT INTO commits(ts, writes) VALUES (?, ?)", log_rows)
                execute("COMMIT")
                checkpointer.after_commit()
                await asyncio.sleep(0)  # a turn of the loop, as between mutations
            spent += clock() - start
            n += len(batch)
        stored = conn.execute(
            "SELECT count(*) FROM documents WHERE table_number = ?", (table_number,)
        ).fetchall()[0][0]
    finally:
        await checkpointer.close()
        conn.close()
    return int(stored), n, spent


def sql_alone_round(path: Path, durability: str, seconds: float) -> dict[str, Any]:
    """The statements Basalt's engine sends for one mutation that runs alone (its own
    SQLite transaction), with the rows it would write, and no Python runtime around
    them: the ceiling of the one-caller in-process rate on this layout."""

    async def catalog() -> tuple[int, list[Any]]:
        async with Runtime(load_app(APP_DIR), SqliteEngine(path, durability=durability)) as rt:
            engine = rt.storage
            assert isinstance(engine, SqliteEngine)
            table = engine.catalog.table_by_name("messages")
            assert table is not None
            return table.number, engine.catalog.indexes_of(table.number)

    table_number, indexes = run_async(catalog())
    stored, n, spent = run_async(_sql_alone(path, durability, seconds, table_number, indexes))
    remove_db(path)
    return {"count": n, "seconds": spent, "rate": n / spent, "stored": stored}


# -- 2. in-process -----------------------------------------------------------------------


async def count_messages(engine: SqliteEngine) -> int:
    """The number of documents in ``messages``, through the engine's read API."""
    table = engine.catalog.table_by_name("messages")
    if table is None:
        return 0
    async with engine.read() as tx:
        return await tx.count(table.number)


async def _basalt_round(
    path: Path, durability: str, seconds: float, callers: int
) -> dict[str, Any]:
    """``callers`` tasks each call the insert mutation in a loop for ``seconds``."""
    app = load_app(APP_DIR)
    engine = SqliteEngine(path, durability=durability)
    async with Runtime(app, engine) as runtime:
        mutation = runtime.mutation
        authors = AUTHORS
        body = BODY
        counts = [0] * callers
        start = time.perf_counter()
        deadline = start + seconds

        async def caller(k: int) -> None:
            while True:
                for i in range(50):
                    await mutation("messages:send", {"author": authors[i & 15], "body": body})
                counts[k] += 50
                if time.perf_counter() >= deadline:
                    return

        groups_before = engine.groups_committed
        await asyncio.gather(*(caller(k) for k in range(callers)))
        elapsed = time.perf_counter() - start
        groups = engine.groups_committed - groups_before
        stored = await count_messages(engine)
    n = sum(counts)
    return {
        "count": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "stored": stored,
        "callers": callers,
        "mutations_per_sqlite_commit": n / max(groups, 1),
    }


def basalt_round(path: Path, durability: str, seconds: float, callers: int = 1) -> dict[str, Any]:
    try:
        return run_async(_basalt_round(path, durability, seconds, callers))  # type: ignore[no-any-return]
    finally:
        remove_db(path)


# -- 3. HTTP -----------------------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def basalt_command() -> list[str]:
    script = Path(sys.executable).parent / "basalt"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "basalt.cli.main"]


def http_get(port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"basalt serve exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            status, _ = http_get(port, "/health")
            if status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"basalt serve did not answer /health within {timeout} s:\n{log.read_text()}"
    )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def mutation_request(port: int, author: str) -> bytes:
    body = json.dumps(
        {
            "path": "messages:send",
            "args": {"author": author, "body": BODY},
            "format": "convex_encoded_json",
        },
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


class LoadStats:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # successes completed inside the window
        self.window_errors = 0
        self.acked = 0  # every success, warm-up and tail included
        self.errors = 0  # every failure
        self.error_samples: list[str] = []

    def error(self, what: str, in_window: bool) -> None:
        self.errors += 1
        if in_window:
            self.window_errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what[:300])


def is_success(body: bytes) -> bool:
    if b'"status":"success"' in body:
        return True
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("status") == "success"


async def _client(port: int, request: bytes, stats: LoadStats, window: tuple[float, float]) -> None:
    """One keep-alive connection sending mutations back to back until the window ends."""
    w_start, w_end = window
    clock = time.perf_counter
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while clock() < w_end:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.transport.set_write_buffer_limits(high=1 << 20)
            assert reader is not None
            t0 = clock()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = -1
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                        break
                if length < 0:
                    raise ValueError(f"no content-length in {head!r}")
                body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stats.error(f"connection: {exc!r}", w_start <= clock() <= w_end)
                writer.close()
                reader = writer = None
                continue
            t1 = clock()
            ok = status == 200 and is_success(body)
            if ok:
                stats.acked += 1
                if w_start <= t1 <= w_end:
                    stats.latencies.append(t1 - t0)
            else:
                stats.error(
                    f"HTTP {status}: {body.decode(errors='replace')}", w_start <= t1 <= w_end
                )
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _drive(port: int, clients: int, warmup: float, seconds: float) -> LoadStats:
    stats = LoadStats()
    now = time.perf_counter()
    window = (now + warmup, now + warmup + seconds)
    requests = [mutation_request(port, AUTHORS[i % len(AUTHORS)]) for i in range(clients)]
    await asyncio.gather(*(_client(port, requests[i], stats, window) for i in range(clients)))
    return stats


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_wrk(port: int, clients: int, seconds: float, tmp: Path) -> dict[str, Any] | None:
    """The same request through wrk, if it is installed (optional cross-check)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    request = mutation_request(port, AUTHORS[0])
    body = request.partition(b"\r\n\r\n")[2].decode()
    script = tmp / "mutation.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "local bad = 0\n"
        "response = function(status, headers, body)\n"
        '  if status ~= 200 or not string.find(body, \'"status":"success"\', 1, true) then\n'
        "    bad = bad + 1\n"
        "  end\n"
        "end\n"
    )
    threads = max(1, min(clients, (os.cpu_count() or 2) // 2))
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/api/mutation",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    result: dict[str, Any] = {"output": out.stdout}
    for line in out.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rate"] = float(parts[1])
        elif len(parts) >= 2 and parts[0] in ("50%", "99%"):
            result[f"p{parts[0][:-1]}"] = parts[1]
        elif line.strip().startswith("Non-2xx"):
            result["non_2xx"] = int(parts[-1])
        elif "requests in" in line:
            result["requests"] = int(parts[0])
    return result


def http_bench(
    tmp: Path, durability: str, clients: int, seconds: float, warmup: float
) -> dict[str, Any]:
    data_dir = tmp / "server-data"
    log = tmp / "server.log"
    port = free_port()
    env = dict(os.environ)
    env["BASALT_ADMIN_KEY"] = f"basalt|bench-{secrets.token_hex(16)}"
    env["BASALT_DURABILITY"] = durability
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
    result: dict[str, Any] = {"clients": clients, "seconds": seconds, "warmup": warmup}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(proc, port, log)
            server_cpu0, client_cpu0, wall0 = (
                process_cpu(proc.pid),
                time.process_time(),
                time.perf_counter(),
            )
            stats = run_async(_drive(port, clients, warmup, seconds))
            wall = time.perf_counter() - wall0
            server_cpu1, client_cpu1 = process_cpu(proc.pid), time.process_time()
            # CPU use during the drive, in cores (1.0 = one core busy all the time).
            result["client_cpu"] = (client_cpu1 - client_cpu0) / wall
            if server_cpu0 is not None and server_cpu1 is not None:
                result["server_cpu"] = (server_cpu1 - server_cpu0) / wall
            latencies = sorted(stats.latencies)
            result.update(
                rate=len(latencies) / seconds,
                completed=len(latencies),
                window_errors=stats.window_errors,
                errors=stats.errors,
                error_samples=stats.error_samples,
                acked=stats.acked,
                p50_ms=percentile(latencies, 0.50) * 1000,
                p99_ms=percentile(latencies, 0.99) * 1000,
            )
            # Every acknowledged mutation must be stored (read while the server idles).
            result["stored"] = run_async(_count_file(data_dir / "basalt.sqlite3", durability))
            wrk = run_wrk(port, clients, seconds, tmp)
            if wrk is not None:
                result["wrk"] = wrk
        finally:
            stop_server(proc)
    result["server_exit"] = proc.returncode
    if result.get("errors") or proc.returncode not in (0, -signal.SIGINT):
        result["server_log_tail"] = log.read_text(errors="replace").splitlines()[-20:]
    return result


async def _count_file(path: Path, durability: str) -> int:
    engine = SqliteEngine(path, durability=durability)
    await engine.open()
    try:
        return await count_messages(engine)
    finally:
        await engine.close()


# -- the run -----------------------------------------------------------------------------


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f} /s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="length of each measurement (default %(default)s)",
    )
    parser.add_argument(
        "--clients", type=int, default=32, help="concurrent HTTP clients (default %(default)s)"
    )
    parser.add_argument(
        "--callers",
        type=int,
        default=32,
        help="concurrent in-process callers in the second in-process figure (default %(default)s)",
    )
    parser.add_argument("--durability", choices=sorted(DURABILITY_SYNC), default="process")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved raw/in-process rounds (default %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="HTTP warm-up before measuring (default %(default)s s)",
    )
    parser.add_argument(
        "--tmp-root",
        type=Path,
        default=DEFAULT_TMP_ROOT,
        help="where the temporary folder is made (default bench/.tmp)",
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP benchmark")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the numbers as JSON on stdout (the table goes to stderr)",
    )
    args = parser.parse_args(argv)

    out: Callable[[str], None] = say if args.json else print
    # On SIGTERM unwind normally, so the finally blocks stop the server and clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="core_bench-", dir=args.tmp_root))
    try:
        report = run(args, tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.tmp_root == DEFAULT_TMP_ROOT:
            with contextlib.suppress(OSError):
                args.tmp_root.rmdir()  # only if empty
    if args.json:
        print(json.dumps(report, indent=2))
    # Exit status 1: stored documents differ from acknowledged mutations, or HTTP errors.
    return 0 if report["correct"] and report.get("http", {}).get("errors", 0) == 0 else 1


def run(args: argparse.Namespace, tmp: Path, out: Callable[[str], None]) -> dict[str, Any]:
    _, loop_name = event_loop_factory()
    same_fs = os.stat(tmp).st_dev == os.stat(REPO_DIR).st_dev
    pragmas = engine_pragmas(tmp, args.durability)
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": apsw.sqlitelibversion(),
        "apsw": apsw.apswversion(),
        "platform": platform.platform(),
        "durability": args.durability,
        "event_loop": loop_name,
        "tmp": str(tmp),
        "tmp_same_filesystem_as_repo": same_fs,
        "engine": basalt_sqlite.__file__,
    }
    out(
        f"core_bench: {machine['cores']} cores, Python {machine['python']}, "
        f"SQLite {machine['sqlite']} (apsw {machine['apsw']}), durability={args.durability}, "
        f"loop={loop_name}, {machine['platform']}"
    )
    out(
        f"temp folder: {tmp} "
        f"({'same filesystem as' if same_fs else 'NOT on the same filesystem as'} the repo)"
    )
    out("pragmas (from Basalt's engine): " + " ".join(f"{k}={v}" for k, v in pragmas.items()))
    out(f"{args.rounds} interleaved rounds of {args.seconds:g} s (raw, basalt, raw, ...); medians")

    raw: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    inproc: list[dict[str, Any]] = []
    concurrent: list[dict[str, Any]] = []
    for r in range(args.rounds):
        say(f"  round {r + 1}/{args.rounds}: raw ...")
        raw.append(raw_round(tmp / f"raw-{r}.sqlite3", pragmas, args.seconds))
        say(f"  round {r + 1}/{args.rounds}: Basalt's SQL alone ...")
        alone.append(sql_alone_round(tmp / f"alone-{r}.sqlite3", args.durability, args.seconds))
        say(f"  round {r + 1}/{args.rounds}: basalt in-process, one caller ...")
        inproc.append(basalt_round(tmp / f"basalt-{r}.sqlite3", args.durability, args.seconds))
        say(f"  round {r + 1}/{args.rounds}: basalt in-process, {args.callers} callers ...")
        concurrent.append(
            basalt_round(tmp / f"basalt-c{r}.sqlite3", args.durability, args.seconds, args.callers)
        )
    raw_rate = statistics.median(x["rate"] for x in raw)
    alone_rate = statistics.median(x["rate"] for x in alone)
    alone_ratio = statistics.median(b["rate"] / a["rate"] for a, b in zip(raw, alone, strict=True))
    inproc_rate = statistics.median(x["rate"] for x in inproc)
    ratio = statistics.median(b["rate"] / a["rate"] for a, b in zip(raw, inproc, strict=True))
    conc_rate = statistics.median(x["rate"] for x in concurrent)
    conc_ratio = statistics.median(
        b["rate"] / a["rate"] for a, b in zip(raw, concurrent, strict=True)
    )
    per_commit = statistics.median(x["mutations_per_sqlite_commit"] for x in concurrent)

    def rounds(xs: list[dict[str, Any]]) -> str:
        return "rounds " + " ".join(f"{x['rate']:,.0f}" for x in xs)

    label = 28
    out(f"{'raw insert+commit':<{label}}{fmt_rate(raw_rate):>12}   ({rounds(raw)})")
    out(
        f"{'basalt SQL alone, 1 caller':<{label}}{fmt_rate(alone_rate):>12}   ratio "
        f"{alone_ratio:.2f}   ({rounds(alone)}; no Python: the one-caller ceiling)"
    )
    out(
        f"{'basalt in-process, 1 caller':<{label}}{fmt_rate(inproc_rate):>12}   ratio {ratio:.2f} "
        f"({ratio / alone_ratio:.0%} of the SQL-alone ceiling)   ({rounds(inproc)})"
    )
    met = "met" if conc_ratio >= IN_PROCESS_GOAL else "NOT met"
    name = f"basalt in-process, {args.callers} callers"
    out(
        f"{name:<{label}}{fmt_rate(conc_rate):>12}   ratio {conc_ratio:.2f} "
        f"(goal ≥ {IN_PROCESS_GOAL:.2f}: {met})   ({rounds(concurrent)}; "
        f"{per_commit:.1f} mutations per SQLite commit)"
    )
    report: dict[str, Any] = {
        "machine": machine,
        "pragmas": pragmas,
        "seconds": args.seconds,
        "raw": {"rate": raw_rate, "rounds": raw},
        "sql_alone": {"rate": alone_rate, "ratio_to_raw": alone_ratio, "rounds": alone},
        "in_process": {
            "rate": inproc_rate,
            "ratio_to_raw": ratio,
            "rounds": inproc,
        },
        "in_process_concurrent": {
            "callers": args.callers,
            "rate": conc_rate,
            "ratio_to_raw": conc_ratio,
            "mutations_per_sqlite_commit": per_commit,
            "goal_ratio": IN_PROCESS_GOAL,
            "rounds": concurrent,
        },
    }
    correct = all(x["stored"] == x["count"] for x in raw + alone + inproc + concurrent)
    stored = sum(x["stored"] for x in inproc + concurrent)
    called = sum(x["count"] for x in inproc + concurrent)
    checks = [
        f"in-process {stored:,} documents {'==' if stored == called else '!='} {called:,} mutations"
    ]

    if not args.no_http:
        say(
            f"  HTTP: basalt serve, {args.clients} clients, {args.warmup:g} s warm-up + "
            f"{args.seconds:g} s ..."
        )
        http = http_bench(tmp, args.durability, args.clients, args.seconds, args.warmup)
        http["ratio_to_raw"] = http["rate"] / raw_rate
        http["goal_rate"] = HTTP_GOAL
        report["http"] = http
        name = f"basalt HTTP ({args.clients} clients)"
        met = "met" if http["rate"] >= HTTP_GOAL else "NOT met"
        out(
            f"{name:<{label}}{fmt_rate(http['rate']):>12}   p50 {http['p50_ms']:.1f} ms "
            f"p99 {http['p99_ms']:.1f} ms   errors {http['window_errors']}   "
            f"ratio {http['ratio_to_raw']:.2f}   (goal ≥ {HTTP_GOAL:,.0f}/s: {met})"
        )
        cpu = f"    CPU during the drive: load generator {http['client_cpu']:.2f} cores"
        if "server_cpu" in http:
            cpu += f", server {http['server_cpu']:.2f} cores"
        out(cpu + f" (of {os.cpu_count()})")
        for sample in http["error_samples"]:
            out(f"    error sample: {sample}")
        if "server_log_tail" in http:
            out(f"    server exit status {http['server_exit']}; the end of its log:")
            for line in http["server_log_tail"]:
                out(f"      | {line}")
        if "wrk" in http:
            w = http["wrk"]
            out(
                f"{'wrk (same request)':<{label}}{fmt_rate(w.get('rate', float('nan'))):>12}   "
                f"p50 {w.get('p50', '?')} p99 {w.get('p99', '?')}   "
                f"non-2xx {w.get('non_2xx', 0)}"
            )
        ok = http["stored"] == http["acked"]
        correct = correct and ok
        checks.append(
            f"HTTP {http['stored']:,} documents {'==' if ok else '!='} {http['acked']:,} "
            f"acknowledged mutations (warm-up included; {http['errors']} errors)"
            + (", counted before wrk ran" if "wrk" in http else "")
        )
    report["correct"] = correct
    out(f"correctness: {'OK' if correct else 'FAILED'}: " + "; ".join(checks))
    return report


if __name__ == "__main__":
    sys.exit(main())
