"""The admin key of ``basalt serve``: kept off disk when it comes from the
environment, long enough to resist guessing, sent in the Authorization header
only, and guessed at no faster than 10 wrong keys then one every 6 s per
client address."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import websockets.sync.client

from .harness import ADMIN_KEY, BasaltProcess

PATIENCE = 30.0


def test_a_key_from_the_environment_is_never_written_to_the_data_folder(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = basalt_process(basic_app, data).start()
    marker = json.loads((data / "server.json").read_text())
    assert marker["adminKeySource"] == "BASALT_ADMIN_KEY"
    server.client(admin=True).mutation("notes:add", {"tag": "k", "body": "b", "pos": 1.0})
    server.kill9()  # what a crash leaves behind
    for path in data.rglob("*"):
        if path.is_file():
            assert ADMIN_KEY.encode() not in path.read_bytes(), path


def exit_output(process: BasaltProcess) -> tuple[int, str]:
    process.launch()
    assert process.proc is not None
    return process.proc.wait(timeout=PATIENCE), process.output()


def test_a_short_admin_key_is_refused_at_start(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    status, output = exit_output(basalt_process(basic_app, tmp_path / "d1", admin_key="x" * 31))
    assert status == 1
    assert output.startswith(
        "error: BASALT_ADMIN_KEY is too short: an admin key needs at least 32 characters "
        "(it has 31)"
    )
    assert "x" * 31 not in output and "Traceback" not in output

    data = tmp_path / "d2"
    data.mkdir(mode=0o700)
    (data / "admin_key").write_text("short\n")
    status, output = exit_output(basalt_process(basic_app, data, admin_key=None))
    assert status == 1
    assert f"error: the admin key in {data / 'admin_key'} is too short" in output
    assert "delete that file to have a new key generated there" in output


def test_the_admin_key_is_refused_in_the_url(http: httpx.Client) -> None:
    """Proxies and access logs keep URLs: the key goes in the Authorization header."""
    for path in ("/api/check_admin_key", "/api/stats"):
        response = http.get(path, params={"adminKey": ADMIN_KEY})
        assert response.status_code == 400
        assert response.json()["code"] == "AdminKeyInUrl"
        assert ADMIN_KEY not in response.text
    body = {"path": "notes:secret_count", "args": {"tag": "t"}}
    refused = http.post("/api/query", json=body, params={"adminKey": ADMIN_KEY})
    assert refused.status_code == 400 and refused.json()["code"] == "AdminKeyInUrl"
    headers = {"Authorization": f"Convex {ADMIN_KEY}"}
    assert http.get("/api/check_admin_key", headers=headers).status_code == 200


def authenticate_admin(url: str, key: str) -> dict[str, object]:
    """Send an admin Authenticate on the sync WebSocket; the server's answer."""
    with websockets.sync.client.connect(url.replace("http://", "ws://") + "/api/sync") as ws:
        connect = {
            "type": "Connect",
            "sessionId": str(uuid.uuid4()),
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        }
        ws.send(json.dumps(connect))
        ws.send(json.dumps({"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin",
                            "value": key}))  # fmt: skip
        while True:
            message: dict[str, object] = json.loads(ws.recv(timeout=PATIENCE))
            if message["type"] in ("Transition", "AuthError"):
                return message


def test_wrong_admin_keys_from_one_address_are_slowed_down(
    basalt_process: Callable[..., BasaltProcess], basic_app: Path, tmp_path: Path
) -> None:
    server = basalt_process(basic_app, tmp_path / "data").start()
    wrong = {"Authorization": "Convex " + "guess" * 8}
    right = {"Authorization": f"Convex {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=PATIENCE) as http:
        assert http.get("/api/check_admin_key", headers=right).status_code == 200
        for _ in range(9):
            assert http.get("/api/check_admin_key", headers=wrong).status_code == 401
        assert authenticate_admin(server.url, "guess" * 8)["type"] == "AuthError"  # the 10th
        refused = http.get("/api/check_admin_key", headers=wrong)
        assert refused.status_code == 429
        assert refused.json()["code"] == "TooManyAdminKeyAttempts"
        assert refused.json()["message"].startswith("Too many wrong admin keys from 127.0.0.1")
        # Meanwhile no key from that address is looked at, the right one neither.
        assert http.get("/api/check_admin_key", headers=right).status_code == 429
        answer = authenticate_admin(server.url, ADMIN_KEY)
        assert answer["type"] == "AuthError"
        assert "Too many wrong admin keys" in str(answer["error"])
        # Callers without the admin key are served as before.
        assert http.get("/health").json()["status"] == "ok"
    # Another address is not held back.
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.url, timeout=PATIENCE, transport=other) as http:
        assert http.get("/api/check_admin_key", headers=right).status_code == 200
