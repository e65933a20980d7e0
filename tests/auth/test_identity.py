"""The identity of verified claims: Convex's UserIdentity shape and value types."""

from __future__ import annotations

from typing import Any

from basalt.auth import STANDARD_CLAIMS, identity_from_claims
from basalt.values import check_value

BASE = {"iss": "https://i.test", "sub": "u1", "aud": "a", "exp": 2, "iat": 1, "nbf": 1}


def identity(**claims: Any) -> dict[str, Any]:
    result = identity_from_claims({**BASE, **claims})
    check_value(result)  # always a legal Convex value
    return result


def test_minimal_identity() -> None:
    assert identity(jti="x") == {
        "tokenIdentifier": "https://i.test|u1",
        "subject": "u1",
        "issuer": "https://i.test",
    }


def test_every_standard_claim_is_renamed() -> None:
    claims = {claim: f"value of {claim}" for claim in STANDARD_CLAIMS}
    claims |= {"email_verified": True, "phone_number_verified": False}
    result = identity(**claims)
    for claim, name in STANDARD_CLAIMS.items():
        assert result[name] == claims[claim], name
        if claim != name:
            assert claim not in result
    assert result["profileUrl"] == "value of profile"
    assert result["birthday"] == "value of birthdate"
    assert result["timezone"] == "value of zoneinfo"
    assert result["language"] == "value of locale"


def test_value_conversions() -> None:
    result = identity(
        updated_at=1700000000.5,
        email_verified="true",
        phone_number_verified="False",
        address={"street_address": "1 Main St", "country": "GB"},
        count=7,
        ratio=0.5,
        flags=[1, True, None, "x"],
    )
    assert result["updatedAt"] == "2023-11-14T22:13:20.500000+00:00"
    assert result["emailVerified"] is True
    assert result["phoneNumberVerified"] is False
    assert result["address"] == '{"street_address":"1 Main St","country":"GB"}'
    assert result["count"] == 7.0 and type(result["count"]) is float
    assert result["flags"] == [1.0, True, None, "x"]
    assert type(result["flags"][1]) is bool
    assert identity(updated_at="2024-01-01T00:00:00Z")["updatedAt"] == "2024-01-01T00:00:00Z"


def test_custom_claims_cannot_replace_identity_fields() -> None:
    result = identity(
        tokenIdentifier="forged",
        subject="forged",
        issuer="forged",
        given_name="Ada",
        givenName="custom",
        familyName="only-custom",
    )
    assert result["tokenIdentifier"] == "https://i.test|u1"
    assert result["subject"] == "u1"
    assert result["issuer"] == "https://i.test"
    assert result["givenName"] == "Ada"  # the standard claim wins
    assert result["familyName"] == "only-custom"


def test_claims_that_are_not_convex_values_are_left_out() -> None:
    result = identity(
        **{"$admin": True, "ok": {"nested": 1}, "bad": {"$inner": 1}, "naïve": "x"},
    )
    assert "ok" in result
    assert "$admin" not in result
    assert "bad" not in result
    assert "naïve" not in result


def test_null_standard_claims_are_absent_but_custom_nulls_stay() -> None:
    result = identity(email=None, team=None)
    assert "email" not in result
    assert result["team"] is None
