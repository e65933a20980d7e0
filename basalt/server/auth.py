"""Who is calling: the admin key and user tokens from the ``Authorization`` header.

User tokens are JWTs verified against the app's auth providers
(``auth_config.py``, see :mod:`basalt.auth`). The HTTP API calls
:meth:`Authenticator.from_header`; the sync WebSocket's ``Authenticate``
message with ``tokenType: "User"`` calls :meth:`Authenticator.verify_user_token`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basalt.auth import AuthConfig, JwtVerifier, load_auth_config
from basalt.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: a user identity, an admin, or anonymous."""

    identity: dict[str, Any] | None = None
    admin: bool = False


ANONYMOUS = Caller()


class Authenticator:
    """Checks admin keys and user tokens.

    ``auth_config``: the app's auth providers; without any, every user token is
    refused with ``NoAuthProvider``.
    """

    def __init__(self, admin_key: str, auth_config: AuthConfig | None = None) -> None:
        self.admin_key = admin_key
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

    async def from_header(self, value: str | None, admin_key_param: str | None = None) -> Caller:
        """The caller of an HTTP request (``Authorization`` header, or ``?adminKey=``)."""
        if admin_key_param:
            if not self.is_admin_key(admin_key_param):
                raise Unauthenticated("The admin key is not valid", code="BadAdminKey")
            return Caller(admin=True)
        if not value:
            return ANONYMOUS
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() == "convex":
            if not self.is_admin_key(credential):
                raise Unauthenticated(
                    "The admin key in the Authorization header is not valid", code="BadAdminKey"
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


def build_authenticator(admin_key: str, app_folder: Path | None) -> Authenticator:
    """The authenticator of a deployment: its admin key and the auth providers of
    the app in ``app_folder`` (its ``auth_config.py``; none without a folder).

    Raises :class:`~basalt.auth.AuthConfigError` (an ``AppLoadError``) when
    ``auth_config.py`` is wrong.
    """
    config = load_auth_config(app_folder) if app_folder is not None else AuthConfig()
    return Authenticator(admin_key, config)
