"""``auth_config.py``: the providers in Convex's shapes, validated when the app loads."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from basalt.auth import (
    AuthConfig,
    AuthConfigError,
    CustomJwtProvider,
    JwksSource,
    OidcProvider,
    load_auth_config,
)
from basalt.errors import AppLoadError

from .helpers import SigningKey, data_url, jwks

GOOD_JWKS = data_url({"keys": []})


def write_config(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "auth_config.py").write_text(textwrap.dedent(source))
    return folder


def config_error(providers: Any, **kw: Any) -> str:
    with pytest.raises(AuthConfigError) as info:
        AuthConfig.from_providers(providers, **kw)
    assert isinstance(info.value, AppLoadError)
    return info.value.message


def test_no_file_means_no_providers(tmp_path: Path) -> None:
    assert load_auth_config(tmp_path) == AuthConfig()
    assert load_auth_config(tmp_path).providers == ()


def test_both_kinds_of_provider(tmp_path: Path, rsa_key: SigningKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwks.json").write_text(json.dumps(jwks(rsa_key)))
    write_config(
        tmp_path,
        """
        import os

        providers = [
            {"domain": "https://clerk.example.test", "applicationID": "convex"},
            {
                "type": "customJwt",
                "issuer": "https://auth.example.test",
                "jwks": "keys/jwks.json",
                "algorithm": "RS256",
            },
            {
                "type": "customJwt",
                "issuer": "https://other.example.test",
                "jwks": "https://other.example.test/jwks",
                "algorithm": "ES256",
                "applicationID": "my-app",
            },
        ]
        """,
    )
    config = load_auth_config(tmp_path)
    assert config.providers == (
        OidcProvider("https://clerk.example.test", "convex"),
        CustomJwtProvider(
            "https://auth.example.test",
            JwksSource("file", str((tmp_path / "keys" / "jwks.json").resolve())),
            "RS256",
        ),
        CustomJwtProvider(
            "https://other.example.test",
            JwksSource("url", "https://other.example.test/jwks"),
            "ES256",
            "my-app",
        ),
    )
    assert config.issuers == [
        "https://clerk.example.test",
        "https://auth.example.test",
        "https://other.example.test",
    ]
    oidc = config.providers[0]
    assert isinstance(oidc, OidcProvider)
    assert oidc.discovery_url == "https://clerk.example.test/.well-known/openid-configuration"


def test_convex_default_export_shape(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """
        default = {"providers": [{"domain": "https://id.example.test/", "applicationID": "a"}]}
        """,
    )
    assert load_auth_config(tmp_path).providers == (OidcProvider("https://id.example.test/", "a"),)


def test_the_error_names_file_index_and_field(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        f"""
        providers = [
            {{"domain": "https://id.example.test", "applicationID": "a"}},
            {{"type": "customJwt", "issuer": "https://x.test", "jwks": "{GOOD_JWKS}",
              "algorithm": "HS256"}},
        ]
        """,
    )
    with pytest.raises(AuthConfigError) as info:
        load_auth_config(tmp_path)
    assert info.value.message == (
        'auth_config.py providers[1]: "algorithm" must be "RS256" or "ES256", got "HS256"'
    )


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"applicationID": "a"}, 'p providers[0]: "domain" is required'),
        ({"domain": "https://x.test"}, 'p providers[0]: "applicationID" is required'),
        (
            {"domain": "https://x.test", "applicationId": "a"},
            'p providers[0]: unknown field "applicationId" (did you mean "applicationID"?)',
        ),
        (
            {"domain": "https://x.test", "applicationID": "a", "jwks": "https://x.test/k"},
            'p providers[0]: unknown field "jwks"; expected "domain", "applicationID" '
            '(set "type": "customJwt" for those)',
        ),
        (
            {"domain": "x.test", "applicationID": "a"},
            'p providers[0]: "domain" must be the issuer\'s https:// (or http://) URL, '
            'got "x.test"',
        ),
        (
            {"domain": "https://x.test", "applicationID": 5},
            'p providers[0]: "applicationID" must be a string, got int',
        ),
        (
            {"domain": "https://x.test", "applicationID": ""},
            'p providers[0]: "applicationID" must not be empty',
        ),
        (
            {"type": "oidc", "domain": "https://x.test"},
            'p providers[0]: "type" must be "customJwt" (or left out for an OIDC provider), '
            'got "oidc"',
        ),
        (
            {"type": "customJwt", "jwks": GOOD_JWKS, "algorithm": "RS256"},
            'p providers[0]: "issuer" is required',
        ),
        (
            {"type": "customJwt", "issuer": "https://x.test", "jwks": GOOD_JWKS},
            'p providers[0]: "algorithm" must be "RS256" or "ES256", got nothing',
        ),
        (
            {"type": "customJwt", "issuer": "https://x.test", "algorithm": "RS256"},
            'p providers[0]: "jwks" is required',
        ),
        (
            {
                "type": "customJwt",
                "issuer": "https://x.test",
                "jwks": "ftp://x.test/jwks",
                "algorithm": "RS256",
            },
            'p providers[0]: "jwks" must be an https:// URL, a file path, a file:// URL or '
            "a data: URL, got a ftp: URL",
        ),
        (
            {
                "type": "customJwt",
                "issuer": "https://x.test",
                "jwks": "data:text/plain;base64,!!!notbase64",
                "algorithm": "RS256",
            },
            'p providers[0]: "jwks": its base64 data does not decode',
        ),
        (
            {
                "type": "customJwt",
                "issuer": "https://x.test",
                "jwks": data_url({"kty": "RSA"}),
                "algorithm": "ES256",
            },
            'p providers[0]: "jwks": the data: URL is not a JSON Web Key Set: it needs a '
            '"keys" array of JSON objects',
        ),
        ("https://x.test", "p providers[0]: must be a dict, got str"),
    ],
)
def test_provider_errors(provider: Any, message: str) -> None:
    assert config_error([provider], source="p").startswith(message)


def test_providers_must_be_a_list() -> None:
    assert config_error({"domain": "x"}) == (
        "auth config: providers must be a list of provider dicts, got dict"
    )


def test_missing_jwks_file(tmp_path: Path) -> None:
    message = config_error(
        [
            {
                "type": "customJwt",
                "issuer": "https://x.test",
                "jwks": "missing.json",
                "algorithm": "RS256",
            }
        ],
        base_dir=tmp_path,
        source="auth_config.py",
    )
    assert message == (
        f'auth_config.py providers[0]: "jwks": cannot read {tmp_path.resolve() / "missing.json"}: '
        "No such file or directory"
    )


def test_a_file_without_providers(tmp_path: Path) -> None:
    write_config(tmp_path, "PROVIDERS = []\n")
    with pytest.raises(AuthConfigError) as info:
        load_auth_config(tmp_path)
    assert info.value.message.startswith("auth_config.py must define `providers = [...]`")


def test_a_file_that_fails_names_the_line(tmp_path: Path) -> None:
    write_config(tmp_path, 'import os\nproviders = [{"domain": os.environ["NO_SUCH_VAR_X"]}]\n')
    with pytest.raises(AuthConfigError) as info:
        load_auth_config(tmp_path)
    path = tmp_path.resolve() / "auth_config.py"
    assert info.value.message == (
        f"auth_config.py: could not be run: {path}:2: KeyError: 'NO_SUCH_VAR_X'"
    )
    write_config(tmp_path, "providers = [\n")
    with pytest.raises(AuthConfigError) as info:
        load_auth_config(tmp_path)
    assert info.value.message.startswith(f"auth_config.py: could not be run: {path}:1: ")
    assert "SyntaxError" in info.value.message
