"""User auth end to end: the official Python client (``ConvexHttpClient.set_auth``)
against a real HTTP server whose app has an ``auth_config.py``.

Two servers: the ASGI app served in process by uvicorn with
:func:`~basalt.server.auth.build_authenticator` (what ``basalt serve`` must do),
and ``basalt serve`` itself in a subprocess.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from convex.http_client import ConvexHttpClient

from basalt.runtime import Runtime, load_app
from basalt.server.app import BasaltApp
from basalt.server.auth import build_authenticator
from basalt.testing.engines import drop_test_databases_sync, engine_for_tests

from .helpers import APP_ID, ISSUER, SigningKey, jwks

_HARNESS = Path(__file__).resolve().parents[1] / "server" / "harness.py"
_spec = importlib.util.spec_from_file_location("_basalt_auth_test_harness", _HARNESS)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

ADMIN_KEY = "auth-e2e-admin-key|" + "a" * 32

WHOAMI = """
from basalt import query


@query
async def whoami(ctx):
    return await ctx.auth.get_user_identity()
"""

AUTH_CONFIG = f"""
providers = [
    {{
        "type": "customJwt",
        "issuer": "{ISSUER}",
        "jwks": "jwks.json",
        "algorithm": "RS256",
        "applicationID": "{APP_ID}",
    }},
]
"""


@pytest.fixture
def auth_app(tmp_path: Path, rsa_key: SigningKey) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "whoami.py").write_text(WHOAMI)
    (app / "auth_config.py").write_text(AUTH_CONFIG)
    (app / "jwks.json").write_text(json.dumps(jwks(rsa_key)))
    return app


def check_user_auth(url: str, key: SigningKey, other: SigningKey, app: Path) -> None:
    """What a client sees: its identity with a good token, a 401 with a bad one
    that says what is wrong but not where the server keeps its files."""
    client = ConvexHttpClient(url)
    assert client.query("whoami:whoami") is None
    client.set_auth(key.sign(sub="user-7", email="u7@example.test", level=2))
    assert client.query("whoami:whoami") == {
        "tokenIdentifier": f"{ISSUER}|user-7",
        "subject": "user-7",
        "issuer": ISSUER,
        "email": "u7@example.test",
        "level": 2.0,
    }
    client.set_auth(SigningKey(other.private, "RS256", key.kid).sign())
    with pytest.raises(Exception, match=r"^401 InvalidAuthHeader: Token signature does not") as e:
        client.query("whoami:whoami")
    assert 'the key file "jwks.json"' in str(e.value)
    assert str(app.parent) not in str(e.value)
    # A key id the key file lacks: neither the file nor the ids it has.
    client.set_auth(SigningKey(other.private, "RS256", "no-such-kid").sign())
    with pytest.raises(Exception, match='Unknown key id "no-such-kid"') as e:
        client.query("whoami:whoami")
    assert "jwks.json" not in str(e.value) and key.kid not in str(e.value)
    assert str(app.parent) not in str(e.value)
    response = httpx.post(
        url + "/api/query",
        json={"path": "whoami:whoami", "args": {}, "format": "json"},
        headers={"Authorization": f"Bearer {key.sign(iss='https://unknown.test')}"},
    )
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "NoAuthProvider"
    assert body["message"].startswith("No auth provider found matching the given token")
    assert ISSUER not in body["message"]  # the issuers the deployment trusts are its own


@pytest.fixture
def in_process_server(auth_app: Path, tmp_path: Path) -> Iterator[str]:
    """The ASGI app with ``build_authenticator``, served by uvicorn in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            BasaltApp(
                Runtime(load_app(auth_app), engine_for_tests(tmp_path, "db")),
                build_authenticator(ADMIN_KEY, auth_app),
            ),
            lifespan="on",
            log_level="warning",
            ws="none",
            http="h11",
        )
    )
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="uvicorn", daemon=True
    )
    thread.start()
    try:
        harness.wait_until(lambda: server.started or not thread.is_alive(), 15, "uvicorn")
        assert server.started, "uvicorn did not start"
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        drop_test_databases_sync(tmp_path)


def test_user_auth_through_http(
    in_process_server: str, auth_app: Path, rsa_key: SigningKey, rsa_key2: SigningKey
) -> None:
    check_user_auth(in_process_server, rsa_key, rsa_key2, auth_app)


def test_user_auth_through_basalt_serve(
    auth_app: Path,
    tmp_path: Path,
    rsa_key: SigningKey,
    rsa_key2: SigningKey,
    server_env: dict[str, str],
) -> None:
    process = harness.BasaltProcess(
        auth_app, tmp_path / "data", admin_key=ADMIN_KEY, env=server_env
    )
    process.start()
    try:
        started = time.monotonic()
        check_user_auth(process.url, rsa_key, rsa_key2, auth_app)
        assert time.monotonic() - started < 30
    finally:
        process.stop()


def test_user_auth_over_the_sync_websocket(
    auth_app: Path, tmp_path: Path, rsa_key: SigningKey, server_env: dict[str, str]
) -> None:
    """The official WebSocket client: set_auth with a JWT, then clear_auth."""
    from convex import ConvexClient

    process = harness.BasaltProcess(
        auth_app, tmp_path / "data", admin_key=ADMIN_KEY, env=server_env
    )
    process.start()
    try:
        client = ConvexClient(process.url)
        assert client.query("whoami:whoami") is None
        client.set_auth(rsa_key.sign(sub="ws-user", name="Web Socket"))
        identity = client.query("whoami:whoami")
        assert identity["tokenIdentifier"] == f"{ISSUER}|ws-user"
        assert identity["name"] == "Web Socket"
        client.clear_auth()
        assert client.query("whoami:whoami") is None
    finally:
        process.stop()


def test_a_bad_token_on_the_websocket_gets_auth_error(
    auth_app: Path, tmp_path: Path, rsa_key: SigningKey, server_env: dict[str, str]
) -> None:
    """An expired token: AuthError with the reason, then the server closes the socket."""
    import websockets.sync.client

    process = harness.BasaltProcess(
        auth_app, tmp_path / "data", admin_key=ADMIN_KEY, env=server_env
    )
    process.start()
    try:
        url = process.url.replace("http://", "ws://") + "/api/sync"
        with websockets.sync.client.connect(url) as ws:
            ws.send(json.dumps({
                "type": "Connect", "sessionId": "s-1", "connectionCount": 0,
                "lastCloseReason": "InitialConnect", "clientTs": 0,
            }))  # fmt: skip
            expired = rsa_key.sign(sub="late", now=time.time() - 7200)
            ws.send(json.dumps(
                {"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": expired}
            ))  # fmt: skip
            message = json.loads(ws.recv(timeout=10))
            assert message["type"] == "AuthError"
            assert "expired" in message["error"].lower()
            assert message["baseVersion"] == 0 and message["authUpdateAttempted"] is True
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        process.stop()
