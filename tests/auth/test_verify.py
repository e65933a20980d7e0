"""Verifying tokens: signatures, algorithms, times, issuer and audience."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.warnings import InsecureKeyLengthWarning

from basalt.auth import AuthConfig, JwtVerifier
from basalt.errors import Unauthenticated

from .helpers import APP_ID, ISSUER, SigningKey, data_url, jwks, unsigned_token


def custom(jwks_location: str, *, algorithm: str = "RS256", **extra: Any) -> dict[str, Any]:
    return {
        "type": "customJwt",
        "issuer": ISSUER,
        "jwks": jwks_location,
        "algorithm": algorithm,
        "applicationID": APP_ID,
        **extra,
    }


def verifier(*providers: dict[str, Any], **kw: Any) -> JwtVerifier:
    return JwtVerifier(AuthConfig.from_providers(list(providers)), **kw)


@pytest.fixture
def rsa_verifier(tmp_path: Path, rsa_key: SigningKey) -> JwtVerifier:
    """A customJwt provider whose key set is a file."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(rsa_key)))
    return verifier(custom(str(path)))


async def refused(v: JwtVerifier, token: str, code: str = "InvalidAuthHeader") -> str:
    with pytest.raises(Unauthenticated) as info:
        await v.verify(token)
    assert info.value.code == code, info.value.message
    assert info.value.http_status == 401
    return info.value.message


async def test_valid_token_gives_the_identity(
    rsa_verifier: JwtVerifier, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(
        sub="user-42",
        name="Ada Lovelace",
        given_name="Ada",
        family_name="Lovelace",
        email="ada@example.test",
        email_verified=True,
        picture="https://img.example.test/ada.png",
        locale="en-GB",
        zoneinfo="Europe/London",
        updated_at=1700000000,
        role="admin",
        level=3,
        jti="token-1",
        orgs=[{"id": "o1", "seats": 5}],
    )
    identity = await rsa_verifier.verify(token)
    assert identity == {
        "tokenIdentifier": f"{ISSUER}|user-42",
        "subject": "user-42",
        "issuer": ISSUER,
        "name": "Ada Lovelace",
        "givenName": "Ada",
        "familyName": "Lovelace",
        "email": "ada@example.test",
        "emailVerified": True,
        "pictureUrl": "https://img.example.test/ada.png",
        "language": "en-GB",
        "timezone": "Europe/London",
        "updatedAt": "2023-11-14T22:13:20+00:00",
        "role": "admin",
        "level": 3.0,
        "orgs": [{"id": "o1", "seats": 5.0}],
    }
    assert type(identity["level"]) is float


async def test_es256_keys_from_a_data_url(ec_key: SigningKey) -> None:
    v = verifier(custom(data_url(jwks(ec_key)), algorithm="ES256"))
    identity = await v.verify(ec_key.sign())
    assert identity["tokenIdentifier"] == f"{ISSUER}|user-1"
    assert v.cache.fetches == 0  # inline keys: nothing to fetch


async def test_keys_from_a_file_url(tmp_path: Path, rsa_key: SigningKey) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(jwks(rsa_key)))
    v = verifier(custom(path.as_uri()))
    assert (await v.verify(rsa_key.sign()))["subject"] == "user-1"


async def test_expired_token(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(now=time.time() - 7200, expires_in=3600)
    message = await refused(rsa_verifier, token)
    assert message.startswith("Token expired at ")
    assert "s ago" in message


async def test_times_have_ten_seconds_of_leeway(rsa_key: SigningKey) -> None:
    now = 1_800_000_000.0
    v = verifier(custom(data_url(jwks(rsa_key))), clock=lambda: now)
    assert await v.verify(rsa_key.sign(now=now - 100, expires_in=95))  # expired 5 s ago
    assert await v.verify(rsa_key.sign(now=now + 5, nbf=now + 5))  # valid in 5 s
    message = await refused(v, rsa_key.sign(now=now - 100, expires_in=89))
    assert message == "Token expired at 2027-01-15T07:59:49Z (11 s ago)"


async def test_not_yet_valid(rsa_key: SigningKey) -> None:
    now = 1_800_000_000.0
    v = verifier(custom(data_url(jwks(rsa_key))), clock=lambda: now)
    message = await refused(v, rsa_key.sign(now=now, nbf=int(now) + 60))
    assert message == (
        "Token is not valid yet: not before 2027-01-15T08:01:00Z (nbf, 60 s from now)"
    )
    message = await refused(v, rsa_key.sign(now=now + 120))
    assert message.startswith("Token is not valid yet: issued at ")
    assert "(iat, 120 s from now)" in message


async def test_exp_and_sub_are_required(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    assert '"exp"' in await refused(rsa_verifier, rsa_key.sign(expires_in=None))
    assert '"sub"' in await refused(rsa_verifier, rsa_key.sign(sub=None))
    message = await refused(rsa_verifier, rsa_key.sign(exp="tomorrow"))
    assert message == "Malformed token: the \"exp\" claim must be a number, got 'tomorrow'"


async def test_unknown_issuer(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    message = await refused(
        rsa_verifier, rsa_key.sign(iss="https://evil.example.test"), code="NoAuthProvider"
    )
    assert message == (
        'No auth provider found matching the given token (issuer "https://evil.example.test"): '
        "no provider in auth_config.py has that issuer"
    )
    assert ISSUER not in message  # which issuers the deployment trusts is not told
    assert '"iss"' in await refused(rsa_verifier, rsa_key.sign(iss=None))


async def test_issuer_matches_with_or_without_a_trailing_slash(rsa_key: SigningKey) -> None:
    v = verifier(custom(data_url(jwks(rsa_key)), issuer=ISSUER + "/"))
    identity = await v.verify(rsa_key.sign(iss=ISSUER))
    assert identity["issuer"] == ISSUER  # the token's own iss
    v = verifier(custom(data_url(jwks(rsa_key))))
    assert (await v.verify(rsa_key.sign(iss=ISSUER + "/")))["issuer"] == ISSUER + "/"


async def test_wrong_audience(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    message = await refused(rsa_verifier, rsa_key.sign(aud=["other-app", "third"]))
    assert message == (
        'Token audience "other-app", "third" does not include "my-app" (the applicationID '
        f'of the customJwt provider "{ISSUER}")'
    )
    assert await rsa_verifier.verify(rsa_key.sign(aud=["other-app", APP_ID]))
    assert '"aud"' in await refused(rsa_verifier, rsa_key.sign(aud=None))


async def test_without_application_id_any_audience_is_accepted(rsa_key: SigningKey) -> None:
    provider = custom(data_url(jwks(rsa_key)))
    del provider["applicationID"]
    v = verifier(provider)
    assert await v.verify(rsa_key.sign(aud="whatever"))
    assert await v.verify(rsa_key.sign(aud=None))


async def test_same_issuer_two_applications(rsa_key: SigningKey) -> None:
    keys = data_url(jwks(rsa_key))
    v = verifier(custom(keys, applicationID="web"), custom(keys, applicationID="mobile"))
    assert await v.verify(rsa_key.sign(aud="mobile"))
    assert await v.verify(rsa_key.sign(aud="web"))
    assert 'does not include "web"' in await refused(v, rsa_key.sign(aud="desktop"))


async def test_signature_by_another_key(
    rsa_verifier: JwtVerifier, rsa_key: SigningKey, rsa_key2: SigningKey
) -> None:
    forged = SigningKey(rsa_key2.private, "RS256", rsa_key.kid)  # same kid, other key
    message = await refused(rsa_verifier, forged.sign())
    assert message.startswith(f'Token signature does not verify with key "{rsa_key.kid}" of ')


async def test_tampered_payload(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    header, _, signature = rsa_key.sign(sub="alice").split(".")
    other = rsa_key.sign(sub="mallory").split(".")[1]
    message = await refused(rsa_verifier, f"{header}.{other}.{signature}")
    assert "signature does not verify" in message


async def test_alg_none_is_refused(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    payload = jwt.decode(rsa_key.sign(), options={"verify_signature": False})
    token = jwt.encode(payload, None, algorithm="none", headers={"kid": rsa_key.kid})
    message = await refused(rsa_verifier, token)
    assert message.startswith('Token is signed with alg "none" (no signature), but the ')
    assert message.endswith("accepts only RS256")


async def test_hs256_is_refused(rsa_verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    payload = jwt.decode(rsa_key.sign(), options={"verify_signature": False})
    token = jwt.encode(payload, "a shared secret of 32 bytes......", algorithm="HS256")
    assert "HS256 (a shared-secret algorithm)" in await refused(rsa_verifier, token)
    # The classic confusion attack: HMAC keyed with the public key the server trusts.
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    public = json.dumps(rsa_key.jwk()).encode()
    unsigned = unsigned_token(header, payload)
    signing_input = unsigned.rsplit(".", 1)[0].encode()
    mac = hmac.new(public, signing_input, hashlib.sha256).digest()
    forged = unsigned_token(header, payload, mac)
    assert "HS256" in await refused(rsa_verifier, forged)


async def test_es256_token_for_an_rs256_provider(
    rsa_verifier: JwtVerifier, ec_key: SigningKey
) -> None:
    message = await refused(rsa_verifier, ec_key.sign())
    assert message.startswith("Token is signed with ES256, but the customJwt provider")


async def test_key_of_the_wrong_type_for_the_kid(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    keys = {"keys": [{**ec_key.jwk(), "kid": rsa_key.kid, "alg": "ES256"}]}
    v = verifier(custom(data_url(keys)))
    message = await refused(v, rsa_key.sign())
    assert message == (
        f'Key "{rsa_key.kid}" of the inline data: URL cannot verify RS256: it is a EC key '
        "for ES256 on curve P-256"
    )


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", "Malformed token: it is empty"),
        ("not-a-jwt", "Malformed token: a JWT has 3 base64url parts separated by dots, got 1"),
        ("a.b", "Malformed token: a JWT has 3 base64url parts separated by dots, got 2"),
        ("@@@.###.$$$", "Malformed token: "),
        ("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "Malformed token: its payload is not JSON"),
        ("eyJhbGciOiJSUzI1NiJ9.WzEsMl0.c2ln", "Malformed token: its payload is not a JSON"),
    ],
)
async def test_malformed_tokens(rsa_verifier: JwtVerifier, token: str, expected: str) -> None:
    assert (await refused(rsa_verifier, token)).startswith(expected)


async def test_token_without_kid_tries_the_keys_that_fit(
    rsa_key: SigningKey, rsa_key2: SigningKey, ec_key: SigningKey
) -> None:
    v = verifier(custom(data_url(jwks(ec_key, rsa_key2, rsa_key))))
    assert (await v.verify(rsa_key.sign(kid=None)))["subject"] == "user-1"
    stranger = SigningKey(rsa.generate_private_key(65537, 2048), "RS256", "x")
    message = await refused(v, stranger.sign(kid=None))
    assert message.startswith("Token signature does not verify with any of the 2 keys of ")


async def test_short_rsa_keys_are_refused() -> None:
    weak = SigningKey(rsa.generate_private_key(65537, 1024), "RS256", "weak")
    v = verifier(custom(data_url(jwks(weak))))
    with pytest.warns(InsecureKeyLengthWarning):  # PyJWT warns when signing, too
        token = weak.sign()
    message = await refused(v, token)
    assert "is refused" in message
    assert "2048" in message
