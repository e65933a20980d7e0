"""The server as a process: durability across ``kill -9``, the admin key kept
in the data folder, the ``server.json`` marker and a clean shutdown."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from convex import ConvexInt64
from convex.http_client import ConvexExecutionError, ConvexHttpClient

from .harness import BasaltProcess


def test_acknowledged_mutations_survive_kill_9(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = basalt_process(basic_app, data).start()
    client = first.client()
    n = 25
    ids = [
        client.mutation("notes:add", {"tag": "durable", "body": f"b{i}", "pos": float(i)})
        for i in range(n)
    ]
    client.mutation("values:store", {"tag": "durable", "value": ConvexInt64(2**62)})
    first.kill9()
    assert first.proc is not None and first.proc.returncode == -9

    second = basalt_process(basic_app, data).start()
    client = second.client()
    docs = client.query("notes:list", {"tag": "durable"})
    assert [d["_id"] for d in docs] == ids
    assert [d["body"] for d in docs] == [f"b{i}" for i in range(n)]
    assert client.query("values:load", {"tag": "durable"}) == [ConvexInt64(2**62)]
    # And the restarted server takes new writes.
    client.mutation("notes:add", {"tag": "durable", "body": "after restart", "pos": 99.0})
    assert len(client.query("notes:list", {"tag": "durable"})) == n + 1


def test_admin_key_is_generated_once_and_reused(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = basalt_process(basic_app, data, admin_key=None).start()
    key_file = data / "admin_key"
    key = key_file.read_text().strip()
    assert len(key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert f"admin key: {key}" in first.output()

    client = ConvexHttpClient(first.url)
    with pytest.raises(ConvexExecutionError, match="Could not find public function"):
        client.query("notes:secret_count", {"tag": "k"})
    client.set_admin_auth(key)
    assert client.query("notes:secret_count", {"tag": "k"}) == 0.0
    assert first.stop() == 0

    second = basalt_process(basic_app, data, admin_key=None).start()
    assert key_file.read_text().strip() == key
    # Printed once, when generated: not on every start, where it ends up in logs.
    assert key not in second.output()
    assert f"admin key: in {key_file}" in second.output()
    client = ConvexHttpClient(second.url)
    client.set_admin_auth(key)
    assert client.query("notes:secret_count", {"tag": "k"}) == 0.0


def test_dev_prints_the_admin_key_on_every_start(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = basalt_process(basic_app, data, admin_key=None, command="dev").start()
    key = (data / "admin_key").read_text().strip()
    assert f"admin key: {key}" in first.output()
    assert first.stop() == 0
    second = basalt_process(basic_app, data, admin_key=None, command="dev").start()
    assert f"admin key: {key}" in second.output()


def test_serve_does_not_print_a_key_from_the_environment(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    key = "env-secret-key|" + "s" * 32
    server = basalt_process(basic_app, tmp_path / "data", admin_key=key).start()
    assert key not in server.output()
    assert "admin key: from BASALT_ADMIN_KEY" in server.output()


UPLOADS = """
from basalt import mutation


@mutation(args={})
async def upload_url(ctx):
    return await ctx.storage.generate_upload_url()
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_files_are_private_to_their_owner(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    """The database holds every document and the file-storage secret: the
    data folder is 0700 and every file in it 0600 (SQLite's -wal and -shm
    included), whatever the umask; looser modes left by an older version are
    tightened on start; export ZIPs are 0600 too."""
    (basic_app / "uploads.py").write_text(UPLOADS)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    server = basalt_process(basic_app, data, admin_key=None).start()
    client = server.client()
    client.mutation("notes:add", {"tag": "private", "body": "secret", "pos": 1.0})
    response = httpx.post(client.mutation("uploads:upload_url", {}), content=b"<html>")
    assert response.status_code == 200

    assert _mode(data) == 0o700
    for name in ("admin_key", "server.json"):
        assert _mode(data / name) == 0o600, name
    sqlite = data / "basalt.sqlite3"
    if server.database is None:  # SQLite: the database is in the data folder
        for path in (sqlite, data / "basalt.sqlite3-wal", data / "basalt.sqlite3-shm"):
            assert _mode(path) == 0o600, path.name
    blobs = data / "blobs"
    assert _mode(blobs) == 0o700
    blob_files = [p for p in blobs.rglob("*") if p.is_file()]
    assert blob_files and all(_mode(p) == 0o600 for p in blob_files), blob_files
    assert all(_mode(p) == 0o700 for p in blobs.rglob("*") if p.is_dir())

    assert server.stop() == 0
    snapshot = tmp_path / "snapshot.zip"
    export = ["export", "--data", str(data), "-o", str(snapshot)]
    result = subprocess.run(
        [sys.executable, "-m", "basalt.cli.main", *export],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _mode(snapshot) == 0o600

    # Modes an older version left behind are tightened on the next start.
    data.chmod(0o755)
    blobs.chmod(0o755)
    if server.database is None:
        sqlite.chmod(0o644)
    again = basalt_process(basic_app, data, admin_key=None).start()
    assert again.client().query("notes:bodies", {"tag": "private"}) == ["secret"]
    assert _mode(data) == 0o700 and _mode(blobs) == 0o700
    if server.database is None:
        assert _mode(sqlite) == 0o600
        assert _mode(data / "basalt.sqlite3-wal") == 0o600


def test_env_admin_key_wins_over_the_stored_one(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env_key, stored_key = "env-key|" + "e" * 32, "stored-key|" + "s" * 32
    (data / "admin_key").write_text(stored_key + "\n")
    server = basalt_process(basic_app, data, admin_key=env_key).start()
    with httpx.Client(base_url=server.url) as http:
        body = {"path": "notes:secret_count", "args": {"tag": "k"}}
        for key, status in ((env_key, 200), (stored_key, 401)):
            headers = {"Authorization": f"Convex {key}"}
            assert http.post("/api/query", json=body, headers=headers).status_code == status


def test_server_marker_and_clean_shutdown(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = basalt_process(basic_app, data).start()
    marker = data / "server.json"
    info = json.loads(marker.read_text())
    assert info["pid"] == server.pid
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", info["url"])
    assert info["url"] == server.url
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600  # it holds the admin key
    assert server.stop() == 0  # SIGTERM: a clean stop, exit status 0
    assert not marker.exists()


def test_port_in_use_is_a_clear_error(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(basic_app, tmp_path / "one").start()
    port = server.url.rsplit(":", 1)[1]
    other = basalt_process(basic_app, tmp_path / "two")  # not started: its environment
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "basalt.cli.main",
            "serve",
            "--app",
            str(basic_app),
            "--data",
            str(tmp_path / "two"),
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=other.env,
    )
    assert result.returncode != 0
    assert port in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr
