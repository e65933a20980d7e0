"""The server's Authenticator with auth providers: HTTP headers and the
WebSocket's ``verify_user_token``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basalt.auth import AuthConfig, AuthConfigError
from basalt.errors import BadRequest, Unauthenticated
from basalt.server.auth import (
    ANONYMOUS,
    AdminKeyAttempts,
    Authenticator,
    TooManyAdminKeyAttempts,
    build_authenticator,
)

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
    with pytest.raises(BadRequest) as refused:  # ?adminKey=: never in a URL
        await auth.from_header(None, "127.0.0.1", {"adminKey": [ADMIN_KEY]})
    assert refused.value.code == "AdminKeyInUrl"
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_wrong_admin_keys_are_refused_after_ten_then_one_every_six_seconds() -> None:
    clock = FakeClock()
    auth = Authenticator(ADMIN_KEY, attempts=AdminKeyAttempts(clock=clock))
    wrong, right = f"Convex {ADMIN_KEY}x", f"Convex {ADMIN_KEY}"
    for _ in range(10):
        with pytest.raises(Unauthenticated) as info:
            await auth.from_header(wrong, "10.0.0.1")
        assert info.value.code == "BadAdminKey"
    for header in (wrong, right):
        with pytest.raises(TooManyAdminKeyAttempts) as too_many:
            await auth.from_header(header, "10.0.0.1")
        assert too_many.value.http_status == 429
        assert too_many.value.message == "Too many wrong admin keys from 10.0.0.1: try again in 6 s"
    assert (await auth.from_header(right, "10.0.0.2")).admin  # another address
    clock.now += 6  # one more attempt
    assert (await auth.from_header(right, "10.0.0.1")).admin
    with pytest.raises(Unauthenticated):
        await auth.from_header(wrong, "10.0.0.1")
    with pytest.raises(TooManyAdminKeyAttempts):
        await auth.from_header(right, "10.0.0.1")
    clock.now += 60  # the bucket is full again
    for _ in range(10):
        with pytest.raises(Unauthenticated) as info:
            await auth.from_header(wrong, "10.0.0.1")
        assert info.value.code == "BadAdminKey"


def test_admin_key_attempts_remember_a_bounded_number_of_addresses() -> None:
    clock = FakeClock()
    attempts = AdminKeyAttempts(burst=2, max_addresses=100, clock=clock)
    for i in range(1000):
        attempts.failed(f"10.0.{i // 256}.{i % 256}")
        attempts.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(attempts._buckets) <= 100
    assert attempts.wait_s("10.0.3.231") > 0  # the most recent are remembered
