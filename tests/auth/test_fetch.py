"""Key sets and discovery documents from a real local HTTP server: caching,
refetching on key rotation, rate limits, failures."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from basalt.auth import AuthConfig, DocumentCache, JwtVerifier
from basalt.errors import Unauthenticated

from .helpers import APP_ID, ISSUER, JsonServer, ManualClock, SigningKey, jwks

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


def custom_verifier(server: JsonServer, clock: ManualClock, **cache: Any) -> JwtVerifier:
    provider = {
        "type": "customJwt",
        "issuer": ISSUER,
        "jwks": server.url + JWKS_PATH,
        "algorithm": "RS256",
        "applicationID": APP_ID,
    }
    return JwtVerifier(
        AuthConfig.from_providers([provider]),
        cache=DocumentCache(clock=clock, **cache),
    )


def oidc_verifier(domain: str, clock: ManualClock) -> JwtVerifier:
    config = AuthConfig.from_providers([{"domain": domain, "applicationID": APP_ID}])
    return JwtVerifier(config, cache=DocumentCache(clock=clock))


async def test_the_key_set_is_fetched_once_and_cached(
    json_server: JsonServer, clock: ManualClock, rsa_key: SigningKey
) -> None:
    json_server.serve(JWKS_PATH, jwks(rsa_key))
    v = custom_verifier(json_server, clock, ttl=600)
    for i in range(5):
        assert (await v.verify(rsa_key.sign(sub=f"u{i}")))["subject"] == f"u{i}"
        clock.advance(60)
    assert json_server.count(JWKS_PATH) == 1
    clock.advance(600)  # past the time to live: fetched again
    await v.verify(rsa_key.sign())
    await v.verify(rsa_key.sign())
    assert json_server.count(JWKS_PATH) == 2


async def test_concurrent_first_requests_share_one_fetch(
    json_server: JsonServer, clock: ManualClock, rsa_key: SigningKey
) -> None:
    json_server.serve(JWKS_PATH, jwks(rsa_key))
    v = custom_verifier(json_server, clock)
    identities = await asyncio.gather(*(v.verify(rsa_key.sign(sub=f"u{i}")) for i in range(10)))
    assert [i["subject"] for i in identities] == [f"u{i}" for i in range(10)]
    assert json_server.count(JWKS_PATH) == 1


async def test_unknown_kid_refetches_once_after_key_rotation(
    json_server: JsonServer, clock: ManualClock, rsa_key: SigningKey, rsa_key2: SigningKey
) -> None:
    json_server.serve(JWKS_PATH, jwks(rsa_key))
    v = custom_verifier(json_server, clock, min_interval=5)
    await v.verify(rsa_key.sign())
    json_server.serve(JWKS_PATH, jwks(rsa_key2, rsa_key))  # the issuer rotates its keys
    clock.advance(5)
    identity = await v.verify(rsa_key2.sign(sub="after-rotation"))
    assert identity["subject"] == "after-rotation"
    assert json_server.count(JWKS_PATH) == 2
    await v.verify(rsa_key2.sign())
    await v.verify(rsa_key.sign())
    assert json_server.count(JWKS_PATH) == 2


async def test_unknown_kids_do_not_refetch_more_often_than_min_interval(
    json_server: JsonServer, clock: ManualClock, rsa_key: SigningKey, rsa_key2: SigningKey
) -> None:
    json_server.serve(JWKS_PATH, jwks(rsa_key))
    v = custom_verifier(json_server, clock, min_interval=5)
    await v.verify(rsa_key.sign())
    clock.advance(10)
    for kid in ("made-up-1", "made-up-2", "made-up-3"):
        with pytest.raises(Unauthenticated) as info:
            await v.verify(rsa_key2.sign(kid=kid))
        assert info.value.code == "InvalidAuthHeader"
        assert info.value.message == (
            f'Unknown key id "{kid}": no key of the customJwt provider "{ISSUER}" has that id '
            "(were its keys rotated?)"
        )
        clock.advance(1)
    assert json_server.count(JWKS_PATH) == 2  # the first fetch and one refetch
    clock.advance(5)
    with pytest.raises(Unauthenticated):
        await v.verify(rsa_key2.sign(kid="made-up-4"))
    assert json_server.count(JWKS_PATH) == 3


async def test_oidc_provider_keys_from_the_discovery_document(
    json_server: JsonServer, clock: ManualClock, ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    domain = json_server.url
    json_server.serve(DISCOVERY_PATH, {"issuer": domain + "/", "jwks_uri": domain + "/oauth/keys"})
    json_server.serve("/oauth/keys", jwks(ec_key, rsa_key))
    v = oidc_verifier(domain + "/", clock)
    for key in (ec_key, rsa_key, ec_key):
        identity = await v.verify(key.sign(iss=domain, aud=[APP_ID, "other"], sub="oidc-user"))
        assert identity["tokenIdentifier"] == f"{domain}|oidc-user"
    assert json_server.count(DISCOVERY_PATH) == 1
    assert json_server.count("/oauth/keys") == 1
    with pytest.raises(Unauthenticated) as info:
        await v.verify(rsa_key.sign(iss=domain, aud="other"))
    assert 'does not include "my-app" (the applicationID of the OIDC provider' in str(info.value)


async def refused_for_keys(
    v: JwtVerifier, token: str, caplog: pytest.LogCaptureFixture, provider: str
) -> str:
    """Refuse ``token`` because the provider's keys cannot be had: the client is
    told that much; the reason is in the server log (returned)."""
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="basalt.auth"),
        pytest.raises(Unauthenticated) as info,
    ):
        await v.verify(token)
    assert info.value.code == "InvalidAuthHeader"
    assert info.value.message == (
        f"Could not get the signing keys of the {provider} (the server log says why)"
    )
    [record] = [r for r in caplog.records if r.name == "basalt.auth"]
    logged = record.getMessage()
    assert logged.startswith(f"could not get the signing keys of the {provider}: ")
    return logged


async def test_oidc_discovery_must_name_its_issuer(
    json_server: JsonServer,
    clock: ManualClock,
    rsa_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    domain = json_server.url
    json_server.serve(
        DISCOVERY_PATH, {"issuer": "https://elsewhere.test", "jwks_uri": domain + "/keys"}
    )
    json_server.serve("/keys", jwks(rsa_key))
    v = oidc_verifier(domain, clock)
    logged = await refused_for_keys(
        v, rsa_key.sign(iss=domain), caplog, f'OIDC provider "{domain}"'
    )
    assert logged.endswith(
        f"the document at {domain}{DISCOVERY_PATH} names the issuer 'https://elsewhere.test', "
        f'not "{domain}" (an OIDC provider\'s discovery document must name its own issuer)'
    )
    assert json_server.count("/keys") == 0


async def test_key_server_failures(
    json_server: JsonServer,
    clock: ManualClock,
    rsa_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    json_server.fail(JWKS_PATH, 503)
    v = custom_verifier(json_server, clock, ttl=60, min_interval=5)
    logged = await refused_for_keys(v, rsa_key.sign(), caplog, f'customJwt provider "{ISSUER}"')
    assert logged.endswith(
        f"GET {json_server.url}{JWKS_PATH} answered HTTP 503 Service Unavailable"
    )
    with pytest.raises(Unauthenticated):  # the failure is remembered for min_interval
        await v.verify(rsa_key.sign())
    assert json_server.count(JWKS_PATH) == 1

    clock.advance(5)
    json_server.serve(JWKS_PATH, jwks(rsa_key))
    assert await v.verify(rsa_key.sign())
    assert json_server.count(JWKS_PATH) == 2

    clock.advance(60)  # stale, and the server is down again: the stale keys keep serving
    json_server.fail(JWKS_PATH, 500)
    with caplog.at_level(logging.WARNING, logger="basalt.auth"):
        assert await v.verify(rsa_key.sign())
    assert json_server.count(JWKS_PATH) == 3
    assert "still using the copy fetched before" in caplog.text


async def test_not_a_key_set(
    json_server: JsonServer,
    clock: ManualClock,
    rsa_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    json_server.serve(JWKS_PATH, {"keys": "nope"})
    v = custom_verifier(json_server, clock)
    logged = await refused_for_keys(v, rsa_key.sign(), caplog, f'customJwt provider "{ISSUER}"')
    assert logged.endswith(
        f"the document at {json_server.url}{JWKS_PATH} is not a JSON Web Key Set: it needs a "
        '"keys" array of JSON objects'
    )


async def test_unreachable_key_server(
    clock: ManualClock, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    with JsonServerClosed() as url:
        provider = {
            "type": "customJwt",
            "issuer": ISSUER,
            "jwks": url + JWKS_PATH,
            "algorithm": "RS256",
        }
        v = JwtVerifier(
            AuthConfig.from_providers([provider]), cache=DocumentCache(clock=clock, timeout=5)
        )
        logged = await refused_for_keys(v, rsa_key.sign(), caplog, f'customJwt provider "{ISSUER}"')
    assert f"GET {url}" in logged and "failed" in logged


class JsonServerClosed:
    """The URL of a port on 127.0.0.1 that nothing listens on."""

    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
