"""``ctx.auth`` in HTTP actions: a verified ``Authorization: Bearer <JWT>`` is the
identity; any other value leaves it None and stays readable by the handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from basalt.runtime.http_messages import Request, Response
from basalt.runtime.http_router import HttpRouter
from basalt.server.auth import build_authenticator

from ..auth.helpers import APP_ID, ISSUER, SigningKey, jwks
from .conftest import MakeSite


async def whoami(ctx: Any, request: Request) -> Response:
    identity = await ctx.auth.get_user_identity()
    return Response.json({"identity": identity, "header": request.headers.get("authorization")})


async def test_identity_from_a_bearer_jwt(site: MakeSite, tmp_path: Path) -> None:
    key = SigningKey(rsa.generate_private_key(65537, 2048), "RS256", "k1")
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "jwks.json").write_text(json.dumps(jwks(key)))
    (folder / "auth_config.py").write_text(
        f"providers = [{{'type': 'customJwt', 'issuer': '{ISSUER}', 'jwks': 'jwks.json', "
        f"'algorithm': 'RS256', 'applicationID': '{APP_ID}'}}]\n"
    )
    http = HttpRouter()
    http.route(path="/whoami", method="GET", handler=whoami)
    served = await site(
        {"http": {"http": http}}, authenticator=build_authenticator("admin", folder)
    )
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        token = key.sign(sub="user-9")
        r = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.json()["identity"]["tokenIdentifier"] == f"{ISSUER}|user-9"
        for header in ("Bearer ak_live_123", "Bearer " + key.sign(iss="https://other.test")):
            r = await client.get("/whoami", headers={"Authorization": header})
            assert r.json() == {"identity": None, "header": header}
        assert (await client.get("/whoami")).json() == {"identity": None, "header": None}
