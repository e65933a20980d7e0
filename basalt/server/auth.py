"""Who is calling: the admin key and user tokens from the ``Authorization`` header.

User tokens are JWTs verified against the app's auth providers
(``auth_config.py``, see :mod:`basalt.auth`). The HTTP API calls
:meth:`Authenticator.from_header`; the sync WebSocket's ``Authenticate``
message goes through :meth:`Authenticator.for_client`.

The admin key travels in the ``Authorization`` header only (``Convex <key>``,
as the official clients send it). A ``?adminKey=`` query parameter, which
proxies and access logs keep, is refused with 400 ``AdminKeyInUrl``.

Guessing the admin key is slowed per client address (:class:`AdminKeyAttempts`):
after 10 failed attempts, one more every 6 seconds; meanwhile admin-key
attempts from that address are refused with 429 ``TooManyAdminKeyAttempts``
without being checked. Behind a reverse proxy, the address is the one the
proxy forwards (uvicorn reads ``X-Forwarded-For`` from the addresses in
``FORWARDED_ALLOW_IPS``, by default ``127.0.0.1,::1``).
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basalt.auth import AuthConfig, JwtVerifier, load_auth_config
from basalt.errors import BadRequest, Unauthenticated

#: What a request's client address is called when the server does not know it.
UNKNOWN_CLIENT = "unknown"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: a user identity, an admin, or anonymous."""

    identity: dict[str, Any] | None = None
    admin: bool = False


ANONYMOUS = Caller()


class TooManyAdminKeyAttempts(Unauthenticated):
    code = "TooManyAdminKeyAttempts"
    http_status = 429


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class AdminKeyAttempts:
    """Failed admin-key attempts per client address: a bucket of ``burst``
    attempts each, refilled by one every ``interval_s`` seconds. At most
    ``max_addresses`` are remembered (those whose bucket is full are forgotten
    first, then the longest unchanged)."""

    def __init__(
        self,
        *,
        burst: int = 10,
        interval_s: float = 6.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _refilled(self, address: str) -> _Bucket | None:
        bucket = self._buckets.get(address)
        if bucket is not None:
            now = self.clock()
            bucket.tokens = min(
                self.burst, bucket.tokens + (now - bucket.updated) / self.interval_s
            )
            bucket.updated = now
        return bucket

    def wait_s(self, address: str) -> float:
        """Seconds before ``address`` may try an admin key again (0: now)."""
        bucket = self._refilled(address)
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * self.interval_s

    def failed(self, address: str) -> None:
        """Count a wrong admin key sent from ``address``."""
        bucket = self._refilled(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._forget()
            bucket = self._buckets[address] = _Bucket(float(self.burst), self.clock())
        else:  # the most recently changed last: the first ones are forgotten first
            del self._buckets[address]
            self._buckets[address] = bucket
        bucket.tokens -= 1

    def _forget(self) -> None:
        now = self.clock()
        full = [
            a
            for a, b in self._buckets.items()
            if b.tokens + (now - b.updated) / self.interval_s >= self.burst
        ]
        for address in full:
            del self._buckets[address]
        while len(self._buckets) >= self.max_addresses:
            del self._buckets[next(iter(self._buckets))]


class Authenticator:
    """Checks admin keys and user tokens.

    ``auth_config``: the app's auth providers; without any, every user token is
    refused with ``NoAuthProvider``.
    """

    def __init__(
        self,
        admin_key: str,
        auth_config: AuthConfig | None = None,
        attempts: AdminKeyAttempts | None = None,
    ) -> None:
        self.admin_key = admin_key
        self.attempts = attempts or AdminKeyAttempts()
        self._verifier: JwtVerifier | None = None
        self.set_auth_config(auth_config)

    @property
    def auth_config(self) -> AuthConfig:
        return self._verifier.config if self._verifier is not None else AuthConfig()

    def set_auth_config(self, auth_config: AuthConfig | None) -> None:
        """Use these providers from now on (``basalt dev`` after ``auth_config.py`` changed).

        The cache of fetched key sets and discovery documents is kept.
        """
        if auth_config is None or not auth_config.providers:
            self._verifier = None
        elif self._verifier is None or self._verifier.config != auth_config:
            cache = self._verifier.cache if self._verifier is not None else None
            self._verifier = JwtVerifier(auth_config, cache=cache)

    def is_admin_key(self, key: str) -> bool:
        if not key or not self.admin_key:
            return False
        return hmac.compare_digest(key.encode(), self.admin_key.encode())

    def check_admin_key(self, key: str, client: str, message: str) -> None:
        """Raise :class:`Unauthenticated` (``BadAdminKey``, with ``message``)
        unless ``key`` is the admin key, or :class:`TooManyAdminKeyAttempts`
        without looking at it while ``client`` has failed too often."""
        wait = self.attempts.wait_s(client)
        if wait > 0:
            raise TooManyAdminKeyAttempts(
                f"Too many wrong admin keys from {client}: try again in {math.ceil(wait)} s"
            )
        if not self.is_admin_key(key):
            self.attempts.failed(client)
            raise Unauthenticated(message, code="BadAdminKey")

    def for_client(self, client: str) -> ClientAuthenticator:
        """What a sync connection from ``client`` checks its credentials with."""
        return ClientAuthenticator(self, client)

    async def verify_user_token(self, token: str) -> dict[str, Any]:
        """The user identity (Convex's ``UserIdentity``) of a valid JWT.

        Raises :class:`~basalt.errors.Unauthenticated` with code
        ``NoAuthProvider`` (no provider for the token's issuer) or
        ``InvalidAuthHeader`` (anything else wrong with the token).
        """
        if self._verifier is None:
            raise Unauthenticated(
                "No auth provider found matching the given token: this deployment has no "
                "auth providers configured (add them in auth_config.py)",
                code="NoAuthProvider",
            )
        return await self._verifier.verify(token)

    async def user(self, token: str) -> Caller:
        """The caller a user token (JWT) stands for."""
        return Caller(identity=await self.verify_user_token(token))

    async def from_header(
        self,
        value: str | None,
        client: str = UNKNOWN_CLIENT,
        query: Mapping[str, Any] | None = None,
    ) -> Caller:
        """The caller of an HTTP request from ``client`` (its address), by its
        ``Authorization`` header; ``query`` (its query parameters) must not
        hold an admin key."""
        if query and "adminKey" in query:
            raise BadRequest(
                "The admin key is not accepted in the URL (?adminKey=), where proxies and "
                "logs keep it: send it in the Authorization header, as 'Convex <admin key>'",
                code="AdminKeyInUrl",
            )
        if not value:
            return ANONYMOUS
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() == "convex":
            self.check_admin_key(
                credential, client, "The admin key in the Authorization header is not valid"
            )
            return Caller(admin=True)
        if scheme.lower() == "bearer":
            if not credential:
                raise Unauthenticated("Empty Bearer token", code="InvalidAuthHeader")
            return await self.user(credential)
        raise Unauthenticated(
            f"Authorization header must be 'Bearer <token>' or 'Convex <admin key>', "
            f"got scheme {scheme!r}",
            code="InvalidAuthHeader",
        )


class ClientAuthenticator:
    """The authenticator as one client address sees it (the sync WebSocket's
    ``Authenticate`` messages): wrong admin keys count against that address."""

    __slots__ = ("_auth", "client")

    def __init__(self, auth: Authenticator, client: str) -> None:
        self._auth = auth
        self.client = client

    def is_admin_key(self, key: str) -> bool:
        """True for the admin key; False for a wrong one (counted), and
        :class:`TooManyAdminKeyAttempts` while the address has failed too often."""
        try:
            self._auth.check_admin_key(key, self.client, "The admin key is not valid")
        except TooManyAdminKeyAttempts:
            raise
        except Unauthenticated:
            return False
        return True

    async def verify_user_token(self, token: str) -> dict[str, Any]:
        return await self._auth.verify_user_token(token)


def client_address(scope: Mapping[str, Any]) -> str:
    """The address of an ASGI connection's client (uvicorn's proxy handling
    already applied), or :data:`UNKNOWN_CLIENT`."""
    client = scope.get("client")
    if client and client[0]:
        return str(client[0])
    return UNKNOWN_CLIENT


def build_authenticator(admin_key: str, app_folder: Path | None) -> Authenticator:
    """The authenticator of a deployment: its admin key and the auth providers of
    the app in ``app_folder`` (its ``auth_config.py``; none without a folder).

    Raises :class:`~basalt.auth.AuthConfigError` (an ``AppLoadError``) when
    ``auth_config.py`` is wrong.
    """
    config = load_auth_config(app_folder) if app_folder is not None else AuthConfig()
    return Authenticator(admin_key, config)
