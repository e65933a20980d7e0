"""The server's Authenticator with auth providers: HTTP headers and the
WebSocket's ``verify_user_token``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basalt.auth import AuthConfig, AuthConfigError
from basalt.errors import Unauthenticated
from basalt.server.auth import ANONYMOUS, Authenticator, build_authenticator

from .helpers import APP_ID, ISSUER, SigningKey, data_url, jwks

ADMIN_KEY = "admin-key-for-tests"


def config_for(*keys: SigningKey) -> AuthConfig:
    return AuthConfig.from_providers(
        [
            {
                "type": "customJwt",
                "issuer": ISSUER,
                "jwks": data_url(jwks(*keys)),
                "algorithm": "RS256",
                "applicationID": APP_ID,
            }
        ]
    )


async def test_without_providers_user_tokens_are_refused(rsa_key: SigningKey) -> None:
    auth = Authenticator(ADMIN_KEY)
    with pytest.raises(Unauthenticated) as info:
        await auth.from_header(f"Bearer {rsa_key.sign()}")
    assert info.value.code == "NoAuthProvider"
    with pytest.raises(Unauthenticated) as info:
        await auth.verify_user_token(rsa_key.sign())
    assert info.value.code == "NoAuthProvider"
    assert Authenticator(ADMIN_KEY, AuthConfig()).auth_config == AuthConfig()


async def test_bearer_tokens_and_admin_keys(rsa_key: SigningKey) -> None:
    auth = Authenticator(ADMIN_KEY, config_for(rsa_key))
    caller = await auth.from_header(f"Bearer {rsa_key.sign(sub='bob', name='Bob')}")
    assert caller.admin is False
    assert caller.identity is not None
    assert caller.identity["tokenIdentifier"] == f"{ISSUER}|bob"
    assert caller.identity["name"] == "Bob"
    assert (await auth.from_header(f"Convex {ADMIN_KEY}")).admin is True
    assert (await auth.from_header(None, ADMIN_KEY)).admin is True
    assert await auth.from_header(None) is ANONYMOUS
    with pytest.raises(Unauthenticated) as info:
        await auth.from_header("Bearer not.a.token")
    assert info.value.code == "InvalidAuthHeader"
    assert info.value.message.startswith("Malformed token: ")


async def test_verify_user_token_for_the_websocket(rsa_key: SigningKey) -> None:
    auth = Authenticator(ADMIN_KEY, config_for(rsa_key))
    identity = await auth.verify_user_token(rsa_key.sign(sub="ws-user"))
    assert identity["subject"] == "ws-user"
    with pytest.raises(Unauthenticated) as info:
        await auth.verify_user_token(rsa_key.sign(aud="someone-else"))
    assert info.value.code == "InvalidAuthHeader"


async def test_changing_providers(rsa_key: SigningKey, rsa_key2: SigningKey) -> None:
    auth = Authenticator(ADMIN_KEY, config_for(rsa_key))
    cache = auth._verifier.cache if auth._verifier else None
    auth.set_auth_config(config_for(rsa_key2))
    assert auth._verifier is not None and auth._verifier.cache is cache
    assert await auth.verify_user_token(rsa_key2.sign())
    with pytest.raises(Unauthenticated):
        await auth.verify_user_token(rsa_key.sign(kid=rsa_key2.kid))
    auth.set_auth_config(None)
    with pytest.raises(Unauthenticated) as info:
        await auth.verify_user_token(rsa_key2.sign())
    assert info.value.code == "NoAuthProvider"


async def test_build_authenticator(tmp_path: Path, rsa_key: SigningKey) -> None:
    assert build_authenticator(ADMIN_KEY, None).auth_config == AuthConfig()
    assert build_authenticator(ADMIN_KEY, tmp_path).auth_config == AuthConfig()
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(rsa_key)))
    (tmp_path / "auth_config.py").write_text(
        f"providers = [{{'type': 'customJwt', 'issuer': {ISSUER!r}, 'jwks': 'jwks.json', "
        "'algorithm': 'RS256'}]\n"
    )
    auth = build_authenticator(ADMIN_KEY, tmp_path)
    assert auth.is_admin_key(ADMIN_KEY)
    assert (await auth.verify_user_token(rsa_key.sign()))["issuer"] == ISSUER
    (tmp_path / "auth_config.py").write_text("providers = [{'type': 'customJwt'}]\n")
    with pytest.raises(AuthConfigError) as info:
        build_authenticator(ADMIN_KEY, tmp_path)
    assert info.value.message == 'auth_config.py providers[0]: "issuer" is required'
