"""User authentication with JWTs, as Convex does it.

- :func:`load_auth_config` reads the app's ``auth_config.py`` (Convex's
  ``auth.config.ts``) into an :class:`AuthConfig` of OIDC and ``customJwt``
  providers, validated when the app loads.
- :class:`JwtVerifier` verifies a token against those providers (signature from
  the provider's JWKS, ``exp``/``nbf``/``iat``, issuer, audience) and returns
  the user identity in the shape of Convex's ``UserIdentity``.

This package depends only on :mod:`basalt.errors`, :mod:`basalt.values` and
PyJWT; the server builds its :class:`~basalt.server.auth.Authenticator` on it.
"""

from .config import (
    CONFIG_FILE,
    CUSTOM_JWT_ALGORITHMS,
    AuthConfig,
    AuthConfigError,
    CustomJwtProvider,
    JwksSource,
    OidcProvider,
    Provider,
    load_auth_config,
)
from .fetch import DocumentCache, FetchError
from .identity import STANDARD_CLAIMS, identity_from_claims
from .verifier import LEEWAY, JwtVerifier

__all__ = [
    "CONFIG_FILE",
    "CUSTOM_JWT_ALGORITHMS",
    "LEEWAY",
    "STANDARD_CLAIMS",
    "AuthConfig",
    "AuthConfigError",
    "CustomJwtProvider",
    "DocumentCache",
    "FetchError",
    "JwksSource",
    "JwtVerifier",
    "OidcProvider",
    "Provider",
    "identity_from_claims",
    "load_auth_config",
]
