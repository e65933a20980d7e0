"""The user identity a verified token stands for, in the shape of Convex's
``UserIdentity``.

- ``tokenIdentifier`` is ``"<iss>|<sub>"``; ``subject`` and ``issuer`` are the
  ``sub`` and ``iss`` claims.
- The standard OpenID Connect claims get Convex's camelCase names
  (``given_name`` → ``givenName``, ``picture`` → ``pictureUrl``, …, see
  :data:`STANDARD_CLAIMS`).
- Every other claim is kept under its own name, except the registered JWT
  claims (``iss``, ``sub``, ``aud``, ``exp``, ``nbf``, ``iat``, ``jti``).

Values are Convex values, typed as Convex gives them to a JavaScript function:

- **JSON numbers become ``float``** (Convex's float64), integers included: the
  claims reach Convex functions as JavaScript numbers, so ``identity["level"]``
  is ``3.0`` here as ``identity.level`` is ``3`` (a number, not a bigint) there.
  (A claim stored in a document as an ``int`` would be an int64.)
- ``updatedAt`` is a string (Convex's ``UserIdentity.updatedAt`` is typed
  ``string``): a numeric ``updated_at`` (seconds since the epoch, as OIDC says)
  becomes an RFC 3339 timestamp such as ``"2024-05-01T12:00:00+00:00"``; a string
  is kept.
- ``address`` is a string too (``UserIdentity.address``): an OIDC address
  object becomes its compact JSON text.
- ``emailVerified`` / ``phoneNumberVerified``: booleans; the strings ``"true"`` and
  ``"false"`` (which some providers' templates emit) become booleans.
- A custom claim that is not a legal Convex value (a field name starting with
  ``$``, non-ASCII field names, nesting deeper than Convex allows) is dropped,
  so that a function can always return its identity.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

from basalt.errors import InvalidValue
from basalt.values import check_value

log = logging.getLogger("basalt.auth")

#: OIDC standard claim → the field of Convex's UserIdentity.
STANDARD_CLAIMS: dict[str, str] = {
    "name": "name",
    "given_name": "givenName",
    "family_name": "familyName",
    "nickname": "nickname",
    "preferred_username": "preferredUsername",
    "profile": "profileUrl",
    "picture": "pictureUrl",
    "email": "email",
    "email_verified": "emailVerified",
    "gender": "gender",
    "birthdate": "birthday",
    "zoneinfo": "timezone",
    "locale": "language",
    "phone_number": "phoneNumber",
    "phone_number_verified": "phoneNumberVerified",
    "address": "address",
    "updated_at": "updatedAt",
}

#: Registered JWT claims that are not part of the identity.
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})


def convex_json(value: Any) -> Any:
    """A JSON value as Convex would see it: numbers are float64."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [convex_json(v) for v in value]
    if isinstance(value, dict):
        return {k: convex_json(v) for k, v in value.items()}
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return convex_json(value)


def _timestamp(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            pass
    return convex_json(value)


def _address(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return convex_json(value)


_CONVERT = {
    "emailVerified": _boolean,
    "phoneNumberVerified": _boolean,
    "updatedAt": _timestamp,
    "address": _address,
}


def identity_from_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """The identity of verified ``claims`` (which have string ``iss`` and ``sub``).

    Custom claims named like an identity field are overridden: ``tokenIdentifier``,
    ``subject`` and ``issuer`` always come from ``iss`` and ``sub``, and a standard
    claim (``given_name``) wins over a custom claim with its Convex name
    (``givenName``).
    """
    issuer, subject = claims["iss"], claims["sub"]
    identity: dict[str, Any] = {
        "tokenIdentifier": f"{issuer}|{subject}",
        "subject": subject,
        "issuer": issuer,
    }
    for claim, name in STANDARD_CLAIMS.items():
        value = claims.get(claim)
        if value is not None:
            _put(identity, claim, name, _CONVERT.get(name, convex_json)(value))
    for claim, value in claims.items():
        if claim in REGISTERED_CLAIMS or claim in STANDARD_CLAIMS:
            continue
        if claim in identity:  # tokenIdentifier, subject, issuer, or set by a standard claim
            continue
        _put(identity, claim, claim, convex_json(value))
    return identity


def _put(identity: dict[str, Any], claim: str, name: str, value: Any) -> None:
    """Set ``identity[name] = value`` if that keeps the identity a Convex value."""
    try:
        check_value({name: value}, what="claim")
    except InvalidValue as exc:
        log.info("token claim %r left out of the identity: %s", claim, exc.message)
        return
    identity[name] = value
