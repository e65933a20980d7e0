#!/usr/bin/env python
"""Basalt on PostgreSQL: raw psycopg vs. Basalt over HTTP (1 and N processes) vs. SQLite.

Everything is measured in one run, against the same PostgreSQL server:

1. ``raw PG``: single-row ``INSERT`` + ``COMMIT`` through psycopg on one connection
   (autocommit off) in a scratch schema, at the server's own ``synchronous_commit``.
2. ``PG HTTP``: ``basalt serve`` with ``BASALT_DATABASE_URL`` on one fresh schema,
   first one process, then N processes on one schema (the clients are spread
   round-robin across them), driven by C keep-alive clients posting
   ``/api/mutation`` (core_bench's load generator).
3. ``SQLite HTTP``: the same workload on one ``basalt serve`` over SQLite.

At the end the number of stored documents is checked against the number of
acknowledged mutations for every server run. Every scratch schema is dropped and
every server process stopped, whatever happens.

Usage::

    .venv/bin/python bench/postgres_bench.py [--seconds 5] [--clients 32]
                                             [--processes 3] [--json]

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# core_bench.py sits next to this file (``python bench/postgres_bench.py`` puts
# bench/ first on sys.path); its load generator and server helpers are reused.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import core_bench as cb

from basalt.storage.postgres import PostgresEngine
from basalt.storage.sqlite import DURABILITY_SYNC

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def schema_name(kind: str) -> str:
    return f"bench_{kind}_{secrets.token_hex(4)}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def pg_settings(url: str) -> dict[str, str]:
    names = ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "max_connections")
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def xact_counts(url: str) -> tuple[int, int]:
    """(xact_commit, xact_rollback) of the whole database (every session's, after
    PostgreSQL's stats flush, which can lag by up to a second)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux only)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return float(sum(fields) - idle), float(sum(fields))


# -- 1. raw ------------------------------------------------------------------------------


def raw_pg(url: str, schema: str, seconds: float, warmup: float) -> dict[str, Any]:
    """One connection, autocommit off: ``INSERT`` one row, ``COMMIT``, in a loop."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(
        url, autocommit=False, connect_timeout=10, options=f"-c search_path={schema}"
    ) as conn:
        # Same shape as Basalt's documents table: text key in "C" collation, JSON text.
        conn.execute('CREATE TABLE docs(id text COLLATE "C" PRIMARY KEY, value text NOT NULL)')
        conn.commit()
        execute = conn.execute
        commit = conn.commit
        urandom = os.urandom
        value = cb.RAW_VALUE
        query = "INSERT INTO docs(id, value) VALUES (%s, %s)"
        n = 0
        measured = 0
        start = time.perf_counter()
        w_start = start + warmup
        deadline = w_start + seconds
        t0 = None
        while True:
            for i in range(n, n + 50):
                # Increasing prefix, then random: appends at the end of the B-tree,
                # like Basalt's time-prefixed document ids.
                execute(query, (f"{i:08x}{urandom(4).hex()}", value))
                commit()
            n += 50
            now = time.perf_counter()
            if t0 is None and now >= w_start:
                t0, base = now, n
            if now >= deadline:
                break
        assert t0 is not None
        measured = n - base
        elapsed = now - t0
        stored = execute("SELECT count(*) FROM docs").fetchone()[0]  # type: ignore[index]
        conn.commit()
    return {
        "count": n,
        "measured": measured,
        "seconds": elapsed,
        "rate": measured / elapsed,
        "stored": stored,
    }


# -- 2./3. HTTP --------------------------------------------------------------------------


async def _drive(ports: list[int], clients: int, warmup: float, seconds: float) -> cb.LoadStats:
    """core_bench's keep-alive clients, client i talking to ``ports[i % len(ports)]``."""
    stats = cb.LoadStats()
    now = time.perf_counter()
    window = (now + warmup, now + warmup + seconds)
    tasks = []
    for i in range(clients):
        port = ports[i % len(ports)]
        request = cb.mutation_request(port, cb.AUTHORS[i % len(cb.AUTHORS)])
        tasks.append(cb._client(port, request, stats, window))
    await asyncio.gather(*tasks)
    return stats


async def _count_pg(url: str, schema: str) -> int:
    engine = PostgresEngine(url, schema=schema, pool_size=1)
    await engine.open()
    try:
        return await cb.count_messages(engine)  # type: ignore[arg-type]
    finally:
        await engine.close()


def http_bench(
    tmp: Path,
    label: str,
    *,
    url: str | None,
    schema: str | None,
    processes: int,
    durability: str,
    clients: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """Start ``processes`` servers (one after the other, each waited for), drive them,
    count the stored documents, stop them."""
    env = dict(os.environ)
    env["BASALT_ADMIN_KEY"] = f"basalt|bench-{secrets.token_hex(16)}"
    env["BASALT_DURABILITY"] = durability
    env.pop("BASALT_DATABASE_URL", None)
    env.pop("BASALT_DATABASE_SCHEMA", None)
    if url is not None:
        env["BASALT_DATABASE_URL"] = url
        env["BASALT_DATABASE_SCHEMA"] = schema or ""
    result: dict[str, Any] = {
        "label": label,
        "processes": processes,
        "clients": clients,
        "seconds": seconds,
        "warmup": warmup,
    }
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    ports: list[int] = []
    data_dirs: list[Path] = []
    try:
        for k in range(processes):
            data_dir = tmp / f"{label}-data-{k}"
            log = tmp / f"{label}-{k}.log"
            port = cb.free_port()
            command = [
                *cb.basalt_command(),
                "serve",
                "--app",
                str(cb.APP_DIR),
                "--data",
                str(data_dir),
                "--port",
                str(port),
            ]
            with open(log, "wb") as log_file:
                proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            procs.append((proc, log))
            cb.wait_ready(proc, port, log)
            ports.append(port)
            data_dirs.append(data_dir)
        xact0 = xact_counts(url) if url is not None else None
        cpu0 = [cb.process_cpu(p.pid) for p, _ in procs]
        machine0, client0, wall0 = cpu_times(), time.process_time(), time.perf_counter()
        stats = cb.run_async(_drive(ports, clients, warmup, seconds))
        wall = time.perf_counter() - wall0
        cpu1 = [cb.process_cpu(p.pid) for p, _ in procs]
        machine1, client1 = cpu_times(), time.process_time()
        result["client_cpu"] = (client1 - client0) / wall
        if None not in cpu0 and None not in cpu1:
            result["server_cpu"] = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / wall  # type: ignore[operator]
        if machine0 is not None and machine1 is not None:
            busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1.0)
            result["machine_busy"] = busy * (os.cpu_count() or 1)
        latencies = sorted(stats.latencies)
        result.update(
            rate=len(latencies) / seconds,
            completed=len(latencies),
            window_errors=stats.window_errors,
            errors=stats.errors,
            error_samples=stats.error_samples,
            acked=stats.acked,
            p50_ms=cb.percentile(latencies, 0.50) * 1000,
            p99_ms=cb.percentile(latencies, 0.99) * 1000,
        )
        if url is not None:
            assert schema is not None
            result["stored"] = cb.run_async(_count_pg(url, schema))
            time.sleep(1.0)  # let the servers' backends flush their statistics
            xact1 = xact_counts(url)
            assert xact0 is not None
            result["pg_xact_commit"] = xact1[0] - xact0[0]
            result["pg_xact_rollback"] = xact1[1] - xact0[1]
        else:
            result["stored"] = cb.run_async(
                cb._count_file(data_dirs[0] / "basalt.sqlite3", durability)
            )
    finally:
        for proc, _ in procs:
            cb.stop_server(proc)
    result["server_exits"] = [p.returncode for p, _ in procs]
    bad_exit = any(p.returncode not in (0, -signal.SIGINT) for p, _ in procs)
    if result.get("errors") or bad_exit or "rate" not in result:
        result["server_log_tails"] = [
            log.read_text(errors="replace").splitlines()[-15:] for _, log in procs
        ]
    return result


# -- the run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="default %(default)s")
    parser.add_argument("--warmup", type=float, default=1.0, help="default %(default)s s")
    parser.add_argument("--clients", type=int, default=32, help="default %(default)s")
    parser.add_argument(
        "--processes", type=int, default=3, help="servers on one schema (default %(default)s)"
    )
    parser.add_argument(
        "--durability",
        choices=sorted(DURABILITY_SYNC),
        default="process",
        help="BASALT_DURABILITY of the SQLite server (default %(default)s)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("BASALT_BENCH_DATABASE_URL") or DEFAULT_URL,
        help="PostgreSQL URL (default $BASALT_BENCH_DATABASE_URL or %(default)s)",
    )
    parser.add_argument("--tmp-root", type=Path, default=cb.DEFAULT_TMP_ROOT)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the numbers as JSON on stdout (the table goes to stderr)",
    )
    args = parser.parse_args(argv)

    out: Callable[[str], None] = cb.say if args.json else print
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="postgres_bench-", dir=args.tmp_root))
    schemas: list[str] = []
    try:
        report = run(args, tmp, out, schemas)
    finally:
        for schema in schemas:
            try:
                drop_schema(args.url, schema)
            except psycopg.Error as exc:
                cb.say(f"warning: could not drop schema {schema}: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)
        if args.tmp_root == cb.DEFAULT_TMP_ROOT:
            with contextlib.suppress(OSError):
                args.tmp_root.rmdir()  # only if empty
    if args.json:
        print(json.dumps(report, indent=2))
    errors = sum(report[k]["errors"] for k in ("pg_1", "pg_n", "sqlite_1"))
    return 0 if report["correct"] and errors == 0 else 1


def run(
    args: argparse.Namespace, tmp: Path, out: Callable[[str], None], schemas: list[str]
) -> dict[str, Any]:
    _, loop_name = cb.event_loop_factory()
    settings = pg_settings(args.url)
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "platform": platform.platform(),
        "event_loop": loop_name,
        "postgres": settings,
        "sqlite_durability": args.durability,
    }
    out(
        f"postgres_bench: {machine['cores']} cores, Python {machine['python']}, "
        f"psycopg {psycopg.__version__}, loop={loop_name}, {machine['platform']}"
    )
    out(
        f"PostgreSQL {settings['server_version'].split()[0]}: "
        f"synchronous_commit={settings['synchronous_commit']} fsync={settings['fsync']} "
        f"wal_sync_method={settings['wal_sync_method']}; "
        f"SQLite server: durability={args.durability} "
        f"(synchronous={DURABILITY_SYNC[args.durability]})"
    )
    out(
        f"each row: {args.warmup:g} s warm-up + {args.seconds:g} s; HTTP: {args.clients} "
        f"keep-alive clients, round-robin over the processes"
    )
    label = 26

    schemas.append(schema_name("raw"))
    cb.say("  raw psycopg insert+commit ...")
    raw = raw_pg(args.url, schemas[-1], args.seconds, args.warmup)
    out(f"{'raw PG insert+commit':<{label}}{cb.fmt_rate(raw['rate']):>12}   (1 connection)")

    def show(name: str, r: dict[str, Any], extra: str) -> None:
        out(
            f"{name:<{label}}{cb.fmt_rate(r['rate']):>12}   p50 {r['p50_ms']:.1f} ms "
            f"p99 {r['p99_ms']:.1f} ms   errors {r['errors']}   {extra}"
        )
        cpu = f"    CPU: load generator {r['client_cpu']:.2f}"
        if "server_cpu" in r:
            cpu += f", basalt server(s) {r['server_cpu']:.2f}"
        if "machine_busy" in r:
            cpu += f", whole machine {r['machine_busy']:.2f}"
        out(cpu + f" cores busy (of {os.cpu_count()})")
        if "pg_xact_commit" in r:
            out(
                f"    PostgreSQL transactions in the database (every session, warm-up "
                f"included): {r['pg_xact_commit']:,} commits, {r['pg_xact_rollback']:,} "
                f"rollbacks; {r['acked']:,} mutations acknowledged"
            )
        for sample in r["error_samples"]:
            out(f"    error sample: {sample}")
        for k, tail in enumerate(r.get("server_log_tails", [])):
            out(f"    server {k} exit status {r['server_exits'][k]}; the end of its log:")
            for line in tail:
                out(f"      | {line}")

    common: dict[str, Any] = {
        "durability": args.durability,
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup": args.warmup,
    }
    schemas.append(schema_name("pg1"))
    cb.say("  basalt serve on PostgreSQL, 1 process ...")
    pg1 = http_bench(tmp, "pg1", url=args.url, schema=schemas[-1], processes=1, **common)
    pg1_raw = pg1["rate"] / raw["rate"]
    show("basalt PG HTTP, 1 proc", pg1, f"ratio to raw PG {pg1_raw:.2f}")

    schemas.append(schema_name("pgn"))
    cb.say(f"  basalt serve on PostgreSQL, {args.processes} processes on one schema ...")
    pgn = http_bench(
        tmp, "pgn", url=args.url, schema=schemas[-1], processes=args.processes, **common
    )
    pgn_pg1 = pgn["rate"] / pg1["rate"]
    show(
        f"basalt PG HTTP, {args.processes} procs",
        pgn,
        f"ratio to 1 proc {pgn_pg1:.2f}, to raw PG {pgn['rate'] / raw['rate']:.2f}",
    )

    cb.say("  basalt serve on SQLite, 1 process ...")
    sq1 = http_bench(tmp, "sqlite1", url=None, schema=None, processes=1, **common)
    pg1_sq1 = pg1["rate"] / sq1["rate"]
    show("basalt SQLite HTTP, 1 proc", sq1, f"PG-1 / SQLite-1 {pg1_sq1:.2f}")

    out(
        f"ratios: PG-1 / raw-PG {pg1_raw:.2f}   PG-{args.processes} / PG-1 {pgn_pg1:.2f}   "
        f"PG-1 / SQLite-1 {pg1_sq1:.2f}"
    )
    checks = [
        f"raw {raw['stored']:,} rows {'==' if raw['stored'] == raw['count'] else '!='} "
        f"{raw['count']:,} commits"
    ]
    correct = raw["stored"] == raw["count"]
    for name, r in (("PG-1", pg1), (f"PG-{args.processes}", pgn), ("SQLite-1", sq1)):
        ok = r["stored"] == r["acked"]
        correct = correct and ok
        checks.append(
            f"{name} {r['stored']:,} {'==' if ok else '!='} {r['acked']:,} acked "
            f"({r['errors']} errors)"
        )
    out(f"correctness: {'OK' if correct else 'FAILED'}: " + "; ".join(checks))
    return {
        "machine": machine,
        "raw_pg": raw,
        "pg_1": pg1,
        "pg_n": pgn,
        "sqlite_1": sq1,
        "ratios": {
            "pg1_over_raw_pg": pg1_raw,
            "pgn_over_pg1": pgn_pg1,
            "pg1_over_sqlite1": pg1_sq1,
        },
        "correct": correct,
    }


if __name__ == "__main__":
    sys.exit(main())
