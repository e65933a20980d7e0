"""Verifying user tokens (JWTs) against the app's auth providers.

:meth:`JwtVerifier.verify` checks, in this order:

1. the token is a well-formed JWT (three base64url parts, JSON header and payload);
2. its unverified ``iss`` names a configured provider (else ``NoAuthProvider``);
3. its ``alg`` is one the provider allows: never ``none`` nor a symmetric ``HS*``;
   a ``customJwt`` provider allows exactly its ``algorithm``;
4. its signature verifies with a key of the provider's JWKS (the key named by
   ``kid``; without ``kid``, any key of the right type). A ``kid`` the cached key
   set lacks makes it refetch the key set once (rate-limited, see
   :class:`~basalt.auth.fetch.DocumentCache`): that is how key rotation is noticed;
5. ``exp`` (required), ``nbf`` and ``iat``, with :data:`LEEWAY` seconds of clock skew;
6. ``sub`` (required) and, when the provider has an ``applicationID``, ``aud``.

Every failure but 2 raises :class:`~basalt.errors.Unauthenticated` with code
``InvalidAuthHeader`` and a message that says what is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from jwt import PyJWK, PyJWS
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    PyJWKError,
    PyJWTError,
)

from basalt.errors import Unauthenticated

from .config import OIDC_ALGORITHMS, AuthConfig, CustomJwtProvider, OidcProvider, same_issuer
from .fetch import DocumentCache, FetchError, check_jwks
from .identity import identity_from_claims

log = logging.getLogger("basalt.auth")

#: Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat`` (the Convex
#: clients refresh tokens 10 s before they expire).
LEEWAY = 10.0

#: The key type (``kty``) each algorithm family needs.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}

_JWS = PyJWS(algorithms=list(OIDC_ALGORITHMS), options={"enforce_minimum_key_length": True})

Provider = OidcProvider | CustomJwtProvider


def invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, code="InvalidAuthHeader")


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return repr(seconds)


def _describe_provider(provider: Provider) -> str:
    if isinstance(provider, OidcProvider):
        return f'OIDC provider "{provider.domain}"'
    return f'customJwt provider "{provider.issuer}"'


class JwtVerifier:
    """Verifies tokens against an :class:`AuthConfig`; :meth:`verify` returns the identity.

    ``cache`` fetches and caches key sets and discovery documents; ``clock`` is
    the wall clock for ``exp``/``nbf``/``iat`` (tests pass a fixed one).
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        leeway: float = LEEWAY,
        cache: DocumentCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.leeway = leeway
        self.cache = cache if cache is not None else DocumentCache()
        self.clock = clock

    async def verify(self, token: str) -> dict[str, Any]:
        """The Convex user identity of a valid ``token``."""
        return identity_from_claims(await self.verify_claims(token))

    async def verify_claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid ``token`` (signature, times, issuer and audience checked)."""
        header, payload = _parse(token)
        issuer = payload.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise invalid(
                'Token has no "iss" claim (the issuer): it cannot be matched to a provider'
            )
        candidates = self.config.matching(issuer)
        if not candidates:
            # Which issuers the deployment trusts is its own business: the
            # developer compares the token's with auth_config.py.
            raise Unauthenticated(
                f'No auth provider found matching the given token (issuer "{issuer}"): '
                "no provider in auth_config.py has that issuer",
                code="NoAuthProvider",
            )
        if len(candidates) > 1:  # same issuer, several applications: the audience decides
            audiences = _audiences(payload.get("aud")) or []
            candidates.sort(
                key=lambda p: p.application_id is not None and p.application_id not in audiences
            )
        first_error: Unauthenticated | None = None
        for provider in candidates:
            try:
                return await self._verify_with(provider, token, header)
            except Unauthenticated as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    async def _verify_with(
        self, provider: Provider, token: str, header: dict[str, Any]
    ) -> dict[str, Any]:
        alg = header.get("alg")
        if alg not in provider.algorithms:
            allowed = ", ".join(provider.algorithms)
            raise invalid(
                f"Token is signed with {_show_alg(alg)}, but the {_describe_provider(provider)} "
                f"accepts only {allowed}"
            )
        assert isinstance(alg, str)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid(f'Malformed token: the "kid" header must be a string, got {kid!r}')
        keys, source = await self._keys(provider, refresh=False)
        found = _select(keys, kid, alg, source)
        if not found:  # a key the cached set lacks: the issuer may have rotated its keys
            keys, source = await self._keys(provider, refresh=True)
            found = _select(keys, kid, alg, source)
        if not found:
            if kid is not None:
                # Neither the key file nor the ids of its keys: a client needs
                # to know only that this id is not among them.
                raise invalid(
                    f'Unknown key id "{kid}": no key of the {_describe_provider(provider)} '
                    "has that id (were its keys rotated?)"
                )
            raise invalid(f"No key in {source} fits algorithm {alg} (the token names no kid)")
        payload = _verify_signature(token, found, alg, kid, source)
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            raise invalid("Malformed token: its payload is not JSON") from None
        if not isinstance(claims, dict):
            raise invalid("Malformed token: its payload is not a JSON object")
        self._check_claims(provider, claims)
        return claims

    async def _keys(self, provider: Provider, *, refresh: bool) -> tuple[list[dict[str, Any]], str]:
        """The keys of ``provider`` and where they came from."""
        try:
            if isinstance(provider, CustomJwtProvider):
                source = provider.jwks
                if source.kind == "data":
                    assert source.document is not None
                    return list(source.document["keys"]), source.describe()
                document = await self.cache.get(source.location, refresh=refresh, check=check_jwks)
                return list(document["keys"]), source.describe()
            discovery = await self.cache.get(
                provider.discovery_url, check=lambda d, w: _check_discovery(provider, d, w)
            )
            jwks_uri: str = discovery["jwks_uri"]
            document = await self.cache.get(jwks_uri, refresh=refresh, check=check_jwks)
            return list(document["keys"]), jwks_uri
        except FetchError as exc:
            # Why is the server's business (it may name a file, a host, an HTTP
            # status): the log has it, the client only that the keys are missing.
            log.warning(
                "could not get the signing keys of the %s: %s", _describe_provider(provider), exc
            )
            raise invalid(
                f"Could not get the signing keys of the {_describe_provider(provider)} "
                "(the server log says why)"
            ) from None

    def _check_claims(self, provider: Provider, claims: dict[str, Any]) -> None:
        now = self.clock()
        leeway = self.leeway
        exp = _number(claims, "exp", required=True)
        assert exp is not None
        if exp <= now - leeway:
            raise invalid(f"Token expired at {_iso(exp)} ({now - exp:.0f} s ago)")
        nbf = _number(claims, "nbf", required=False)
        if nbf is not None and nbf > now + leeway:
            raise invalid(
                f"Token is not valid yet: not before {_iso(nbf)} (nbf, {nbf - now:.0f} s from now)"
            )
        iat = _number(claims, "iat", required=False)
        if iat is not None and iat > now + leeway:
            raise invalid(
                f"Token is not valid yet: issued at {_iso(iat)} (iat, {iat - now:.0f} s from now)"
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise invalid('Token has no "sub" claim (the id of the user)')
        if provider.application_id is not None:
            audiences = _audiences(claims.get("aud"))
            if audiences is None:
                raise invalid(
                    f'Token has no valid "aud" claim, but the {_describe_provider(provider)} '
                    f'requires the audience "{provider.application_id}" (its applicationID)'
                )
            if provider.application_id not in audiences:
                shown = ", ".join(f'"{a}"' for a in audiences) or "none"
                raise invalid(
                    f"Token audience {shown} does not include "
                    f'"{provider.application_id}" (the applicationID of the '
                    f"{_describe_provider(provider)})"
                )


def _show_alg(alg: object) -> str:
    if alg is None:
        return "no algorithm"
    if isinstance(alg, str) and alg.lower() == "none":
        return 'alg "none" (no signature)'
    if isinstance(alg, str) and alg.upper().startswith("HS"):
        return f"{alg} (a shared-secret algorithm)"
    return repr(alg) if not isinstance(alg, str) else alg


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and payload of ``token``."""
    if not isinstance(token, str) or not token.strip():
        raise invalid("Malformed token: it is empty")
    token = token.strip()
    parts = token.split(".")
    if len(parts) != 3:
        raise invalid(
            f"Malformed token: a JWT has 3 base64url parts separated by dots, got {len(parts)}"
        )
    try:
        decoded = _JWS.decode_complete(token, options={"verify_signature": False})
    except PyJWTError as exc:
        raise invalid(f"Malformed token: {exc}") from None
    header: dict[str, Any] = decoded["header"]
    try:
        payload = json.loads(decoded["payload"])
    except (ValueError, RecursionError):
        raise invalid("Malformed token: its payload is not JSON") from None
    if not isinstance(payload, dict):
        raise invalid("Malformed token: its payload is not a JSON object")
    return header, payload


def _audiences(aud: object) -> list[str] | None:
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return list(aud)
    return None


def _number(claims: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise invalid(f'Token has no "{name}" claim (an expiry time is required)')
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f'Malformed token: the "{name}" claim must be a number, got {value!r}')
    return float(value)


def _select(
    keys: Sequence[dict[str, Any]], kid: str | None, alg: str, source: str
) -> list[dict[str, Any]]:
    """The keys that may have signed a token with ``kid`` and ``alg``.

    A key with the token's ``kid`` that cannot verify ``alg`` (another key type,
    curve or algorithm) is an error, not a reason to refetch.
    """
    named = [k for k in keys if kid is None or k.get("kid") == kid]
    usable = [k for k in named if _fits(k, alg)]
    if kid is not None and named and not usable:
        key = named[0]
        raise invalid(
            f'Key "{kid}" of {source} cannot verify {alg}: it is a {key.get("kty")} key'
            + (f" for {key['alg']}" if "alg" in key else "")
            + (f" on curve {key['crv']}" if "crv" in key else "")
            + (f' for use "{key["use"]}"' if key.get("use", "sig") != "sig" else "")
        )
    return usable


def _fits(key: dict[str, Any], alg: str) -> bool:
    if key.get("kty") != _KEY_TYPES.get(alg[:2]):
        return False
    if key.get("use", "sig") != "sig" or key.get("alg", alg) != alg:
        return False
    return alg not in _CURVES or key.get("crv") == _CURVES[alg]


def _verify_signature(
    token: str, keys: list[dict[str, Any]], alg: str, kid: str | None, source: str
) -> bytes:
    """The payload of ``token`` if one of ``keys`` verifies its signature."""
    problems: list[str] = []
    for jwk in keys:
        try:
            key = PyJWK(jwk, algorithm=alg)
        except (PyJWKError, InvalidKeyError) as exc:
            problems.append(f"key {jwk.get('kid', '(no kid)')!r} is unusable: {exc}")
            continue
        try:
            decoded = _JWS.decode_complete(token, key=key, algorithms=[alg])
        except InvalidSignatureError:
            continue
        except InvalidKeyError as exc:  # e.g. an RSA key shorter than 2048 bits
            problems.append(f"key {jwk.get('kid', '(no kid)')!r} is refused: {exc}")
            continue
        except InvalidAlgorithmError as exc:
            raise invalid(f"Token algorithm refused: {exc}") from None
        except PyJWTError as exc:
            raise invalid(f"Malformed token: {exc}") from None
        payload: bytes = decoded["payload"]
        return payload
    which = f'key "{kid}"' if kid is not None else f"any of the {len(keys)} keys"
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise invalid(f"Token signature does not verify with {which} of {source}{detail}")


def _check_discovery(
    provider: OidcProvider, document: dict[str, Any], where: str
) -> dict[str, Any]:
    """``document`` if it is the OpenID discovery document of ``provider``."""
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or not same_issuer(issuer, provider.domain):
        raise FetchError(
            f'{where} names the issuer {issuer!r}, not "{provider.domain}" '
            "(an OIDC provider's discovery document must name its own issuer)"
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise FetchError(f'{where} has no "jwks_uri" URL (got {jwks_uri!r})')
    return document
