#!/usr/bin/env python
"""File storage throughput: upload and download through the real HTTP server,
against a raw disk copy of the same bytes, measured in the same run.

1. ``raw copy``: read the source file and write it to a new file on the same
   filesystem, 1 MiB at a time, then fsync — what storing a blob costs at the
   least (Basalt's local blob store also fsyncs before acknowledging).
2. ``upload``: ``POST /api/storage/upload?token=…`` with the file as the body
   (streamed from the page cache by a lean asyncio client), until the
   ``{"storageId"}`` answer: the server hashes, writes, fsyncs, renames and
   records the ``_storage`` row.
3. ``download``: ``GET`` on the file's ``get_url`` URL; the client hashes what it
   receives, and the sha-256 is checked against the source, the ``Digest``
   header and the ``_storage`` metadata.
4. ``raw read``: reading the stored blob file (for reference).

The server is a separate process (uvicorn + httptools, uvloop when installed)
serving the deployment's API app with the file routes, over a runtime on SQLite
and a local blob store in the temporary folder. Rounds are interleaved (raw
copy and upload in alternating order, then download and raw read; the disk is
synced before each timed write) and medians reported; the ratios are the
medians of the per-round ratios, so a drift of the machine's speed affects both
sides alike; an untimed round comes first, as a warm-up. The exit status is 1
if any checksum differs.

Usage::

    .venv/bin/python bench/files_bench.py [--size-mib 256] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_TMP_ROOT = BENCH_DIR / ".tmp"
CHUNK = 1 << 20
MiB = 1 << 20


def say(message: str) -> None:
    """Progress on stderr (the results go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- the server (child process) --------------------------------------------------------


async def serve(data: Path, url_file: Path) -> None:
    import uvicorn

    from basalt import mutation, query, v
    from basalt.files import LocalBlobStore
    from basalt.runtime import App, Runtime
    from basalt.runtime.files import FileService
    from basalt.runtime.services import Services
    from basalt.server.app import BasaltApp
    from basalt.server.asgi import Request, cors_headers
    from basalt.server.auth import build_authenticator
    from basalt.server.files_routes import FileRoutes
    from basalt.storage.sqlite import SqliteEngine

    @mutation
    async def generate_upload_url(ctx: Any) -> str:
        return str(await ctx.storage.generate_upload_url())

    @query(args={"id": v.id("_storage")})
    async def info(ctx: Any, id: str) -> Any:
        return {"url": await ctx.storage.get_url(id), "meta": await ctx.storage.get_metadata(id)}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    files = FileService(LocalBlobStore(data / "blobs"), origin=url)
    runtime = Runtime(
        App.from_modules({"files": {"generate_upload_url": generate_upload_url, "info": info}}),
        SqliteEngine(data / "basalt.sqlite3"),
        services=Services(files=files),
    )
    await runtime.start()
    await files.start(runtime)
    api = BasaltApp(runtime, build_authenticator("bench-admin-key", None))
    routes = FileRoutes(files)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        # What the deployment's app does for /api/storage/* once it is wired.
        if scope["type"] == "http" and scope["path"].startswith("/api/storage/"):
            request = Request(scope, receive)
            response = await routes.handle(request)
            await response.send(send, cors_headers(request))
        else:
            await api(scope, receive, send)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # this process handles them below
            yield

    server = Server(
        uvicorn.Config(
            asgi, lifespan="off", log_level="warning", access_log=False, http="httptools"
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    url_file.write_text(url)
    await serving
    await api.aclose()
    await files.stop()
    await runtime.stop()


# -- a lean HTTP/1.1 client --------------------------------------------------------------
# Blocking sockets: the upload body goes out with sendfile (zero-copy from the page
# cache) and the download is received into one reused buffer and hashed in place,
# so the client costs as little CPU as possible and the numbers are the server's.


def request(
    url: str, method: str, target: str, body: Path | bytes | None = None, headers: str = ""
) -> tuple[int, dict[str, str], bytes, str]:
    """One request on a new connection: status, headers, the first MiB of the
    body, and the sha-256 (hex) of the whole body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        length = (
            0 if body is None else (body.stat().st_size if isinstance(body, Path) else len(body))
        )
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
            f"{headers}Connection: close\r\n\r\n".encode()
        )
        if isinstance(body, Path):
            with open(body, "rb") as f:
                sock.sendfile(f)
        elif body:
            sock.sendall(body)
        buffer = bytearray(4 * MiB)
        view = memoryview(buffer)
        received = bytearray()
        while b"\r\n\r\n" not in received:
            n = sock.recv_into(buffer)
            if not n:
                raise ConnectionError("the server closed the connection early")
            received += view[:n]
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        answer = {
            k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
        }
        remaining = int(answer.get("content-length", "0")) - len(rest)
        hasher = hashlib.sha256(rest)
        kept = bytearray(rest[:MiB])
        while remaining > 0:
            n = sock.recv_into(buffer, min(remaining, len(buffer)))
            if not n:
                raise ConnectionError("the server closed the connection early")
            hasher.update(view[:n])
            if len(kept) < MiB:
                kept += view[: min(n, MiB)]
            remaining -= n
        return status, answer, bytes(kept), hasher.hexdigest()


def call(url: str, kind: str, path: str, args: dict[str, Any]) -> Any:
    body = json.dumps({"path": path, "args": args, "format": "json"}).encode()
    status, _, answer, _ = request(
        url, "POST", f"/api/{kind}", body, "Content-Type: application/json\r\n"
    )
    result = json.loads(answer)
    if status != 200 or result.get("status") != "success":
        raise RuntimeError(f"{kind} {path} failed: {status} {answer[:300]!r}")
    return result["value"]


# -- the measurements --------------------------------------------------------------------


def raw_copy(source: Path, target: Path) -> float:
    start = time.perf_counter()
    with open(source, "rb", buffering=0) as src, open(target, "wb", buffering=0) as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
        os.fsync(dst.fileno())
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def raw_read(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass
    return time.perf_counter() - start


def http_upload(url: str, source: Path) -> tuple[float, str]:
    """Seconds to upload ``source``, and the new storage id."""
    upload_url = call(url, "mutation", "files:generate_upload_url", {})
    target = upload_url.removeprefix(url)
    start = time.perf_counter()
    status, _, answer, _ = request(
        url, "POST", target, source, "Content-Type: application/octet-stream\r\n"
    )
    elapsed = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"upload failed: {status} {answer[:300]!r}")
    return elapsed, str(json.loads(answer)["storageId"])


def http_download(url: str, storage_id: str, digest: str, data: Path) -> dict[str, Any]:
    """Seconds to download the file, to read its blob raw, and the checksum checks."""
    info = call(url, "query", "files:info", {"id": storage_id})
    start = time.perf_counter()
    status, headers, _, got = request(url, "GET", info["url"].removeprefix(url))
    download_s = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"download failed: {status}")
    expected_b64 = base64.b64encode(bytes.fromhex(digest)).decode()
    checks = {
        "downloaded bytes": got == digest,
        "Digest header": headers.get("digest") == f"sha-256={expected_b64}",
        "_storage sha256": info["meta"]["sha256"] == expected_b64,
    }
    root = data / "blobs"
    blob = next(p for p in root.rglob("*") if p.is_file() and p.parent.parent == root)
    read_s = raw_read(blob)
    blob.unlink()  # keep one blob at a time on disk
    return {"download_s": download_s, "read_s": read_s, "checks": checks}


def measure_round(i: int, url: str, source: Path, digest: str, tmp: Path) -> dict[str, Any]:
    """One round. The disk is synced before each timed write, and the order of
    raw copy and upload alternates between rounds, so neither side always pays
    for write-back the other left behind."""
    order = ["copy", "upload"] if i % 2 == 0 else ["upload", "copy"]
    result: dict[str, Any] = {}
    for step in order:
        os.sync()
        if step == "copy":
            result["copy_s"] = raw_copy(source, tmp / "copy.bin")
        else:
            result["upload_s"], storage_id = http_upload(url, source)
    os.sync()
    result.update(http_download(url, storage_id, digest, tmp / "data"))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tmp-root", type=Path, default=DEFAULT_TMP_ROOT)
    parser.add_argument("--json", action="store_true", help="numbers as JSON on stdout")
    parser.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_async(serve(*args.serve))
        return 0

    args.tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="files-bench-", dir=args.tmp_root))
    size = args.size_mib * MiB
    server: subprocess.Popen[bytes] | None = None
    try:
        source = tmp / "source.bin"
        hasher = hashlib.sha256()
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                block = os.urandom(MiB)
                hasher.update(block)
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        digest = hasher.hexdigest()
        data = tmp / "data"
        data.mkdir()
        url_file = tmp / "url"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(data), str(url_file)],
            stdout=sys.stderr,
            stderr=sys.stderr,
        )
        deadline = time.monotonic() + 30
        while not url_file.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bench server did not start")
            time.sleep(0.05)
        url = url_file.read_text()
        say(f"{args.size_mib} MiB per transfer, {args.rounds} rounds, folder {tmp}, server {url}")
        measure_round(0, url, source, digest, tmp)  # warm-up: page cache, allocator, server
        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            measured = measure_round(i, url, source, digest, tmp)
            rounds.append(measured)
            say(
                f"  round {i + 1}: raw copy {size / measured['copy_s'] / MiB:7.0f} MB/s   "
                f"upload {size / measured['upload_s'] / MiB:7.0f} MB/s   "
                f"download {size / measured['download_s'] / MiB:7.0f} MB/s"
            )
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def rate(key: str) -> float:
        return statistics.median(size / r[key] / MiB for r in rounds)

    def ratio(key: str) -> float:
        return statistics.median(r["copy_s"] / r[key] for r in rounds)

    checks_ok = all(all(r["checks"].values()) for r in rounds)
    result = {
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "raw_copy_mb_s": rate("copy_s"),
        "upload_mb_s": rate("upload_s"),
        "download_mb_s": rate("download_s"),
        "raw_read_mb_s": rate("read_s"),
        "upload_vs_raw_copy": ratio("upload_s"),
        "download_vs_raw_copy": ratio("download_s"),
        "sha256_verified": checks_ok,
    }
    lines = [
        f"file storage, {args.size_mib} MiB per transfer, median of {args.rounds} rounds "
        "(1 MB = 1 MiB)",
        f"  raw disk copy (read+write+fsync)  {result['raw_copy_mb_s']:8.0f} MB/s   1.00x",
        f"  upload   (HTTP POST → stored)     {result['upload_mb_s']:8.0f} MB/s   "
        f"{result['upload_vs_raw_copy']:.2f}x raw copy",
        f"  download (HTTP GET, hashed)       {result['download_mb_s']:8.0f} MB/s   "
        f"{result['download_vs_raw_copy']:.2f}x raw copy",
        f"  raw read of the stored blob       {result['raw_read_mb_s']:8.0f} MB/s",
        f"  sha-256 of every download matches the source, Digest and _storage: "
        f"{'yes' if checks_ok else 'NO'}",
    ]
    if args.json:
        say("\n".join(lines))
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))
    if not checks_ok:
        for i, r in enumerate(rounds, 1):
            say(f"round {i} checks: {r['checks']}")
    return 0 if checks_ok else 1


if __name__ == "__main__":
    sys.exit(main())
