"""The auth providers of an app: ``auth_config.py`` in the app folder.

Convex's ``auth.config.ts``, spelled in Python::

    # auth_config.py
    import os

    providers = [
        # an OpenID Connect provider (Clerk, Auth0, …): keys from its discovery document
        {"domain": os.environ["CLERK_JWT_ISSUER_DOMAIN"], "applicationID": "convex"},
        # any issuer of signed JWTs, with its key set at a URL, in a file or inline
        {
            "type": "customJwt",
            "issuer": "https://auth.example.com",
            "jwks": "https://auth.example.com/.well-known/jwks.json",
            "algorithm": "RS256",
            "applicationID": "my-app",  # optional; without it any audience is accepted
        },
    ]

``default = {"providers": [...]}`` (the shape of Convex's default export) works too.

How the file is read: :func:`load_auth_config` executes it on its own with
:func:`runpy.run_path`, independently of the app loader (which also imports it as
an app module, harmlessly: it defines no functions). So keep it declarative; it
runs once more than the app's other modules. A ``jwks`` file path is relative to
the app folder.
"""

from __future__ import annotations

import difflib
import runpy
import traceback
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from basalt.errors import AppLoadError

from .fetch import FetchError, check_jwks, load_document, url_to_path

CONFIG_FILE = "auth_config.py"

#: The algorithms a ``customJwt`` provider may name (as in Convex).
CUSTOM_JWT_ALGORITHMS = ("RS256", "ES256")

#: The algorithms accepted from an OIDC provider's keys: asymmetric ones only.
OIDC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)

_OIDC_FIELDS = ("domain", "applicationID")
_CUSTOM_FIELDS = ("type", "issuer", "jwks", "algorithm", "applicationID")


class AuthConfigError(AppLoadError):
    """``auth_config.py`` is missing something or has a wrong value; the message
    names the provider index and the field."""

    code = "AuthConfigError"


def same_issuer(a: str, b: str) -> bool:
    """Whether two issuers are the same, a trailing slash aside."""
    return a.rstrip("/") == b.rstrip("/")


@dataclass(frozen=True, slots=True)
class JwksSource:
    """Where a provider's keys come from.

    ``kind``: ``"url"`` (http or https), ``"file"`` (a local file, re-read like a
    URL is refetched) or ``"data"`` (inline, a ``data:`` URL).
    ``location``: the URL, the absolute file path, or the ``data:`` URL.
    """

    kind: Literal["url", "file", "data"]
    location: str
    document: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """How error messages that reach clients name the key set: a URL as it
        is (it is public), a file by its name only (never the server's path)."""
        if self.kind == "data":
            return "the inline data: URL"
        if self.kind == "file":
            return f'the key file "{Path(self.location).name}"'
        return self.location


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """An OpenID Connect provider: issuer ``domain``, keys from its discovery
    document, tokens must be for ``application_id``."""

    domain: str
    application_id: str

    @property
    def issuer(self) -> str:
        return self.domain

    @property
    def algorithms(self) -> tuple[str, ...]:
        return OIDC_ALGORITHMS

    @property
    def discovery_url(self) -> str:
        return self.domain.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class CustomJwtProvider:
    """Any issuer of signed JWTs with a known key set and one algorithm."""

    issuer: str
    jwks: JwksSource
    algorithm: str
    application_id: str | None = None

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (self.algorithm,)


Provider = OidcProvider | CustomJwtProvider


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The validated auth providers of an app (possibly none)."""

    providers: tuple[Provider, ...] = ()

    @classmethod
    def from_providers(
        cls,
        providers: Sequence[Mapping[str, Any]],
        *,
        base_dir: str | Path | None = None,
        source: str = "auth config",
    ) -> AuthConfig:
        """Validate providers given in Convex's shapes.

        ``base_dir``: what relative ``jwks`` file paths are relative to (default:
        the working directory). ``source`` starts every error message.
        """
        if isinstance(providers, str | bytes | Mapping) or not isinstance(providers, Sequence):
            raise AuthConfigError(
                f"{source}: providers must be a list of provider dicts, "
                f"got {type(providers).__name__}"
            )
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return cls(
            tuple(
                _provider(raw, f"{source} providers[{i}]", base) for i, raw in enumerate(providers)
            )
        )

    @property
    def issuers(self) -> list[str]:
        return [p.issuer for p in self.providers]

    def matching(self, issuer: str) -> list[Provider]:
        """The providers whose issuer is ``issuer`` (a trailing slash aside)."""
        return [p for p in self.providers if same_issuer(p.issuer, issuer)]


def load_auth_config(folder: str | Path) -> AuthConfig:
    """The providers of the app in ``folder`` (none when it has no ``auth_config.py``).

    Raises :class:`AuthConfigError` naming the file, the provider and the field.
    """
    root = Path(folder).resolve()
    path = root / CONFIG_FILE
    if not path.is_file():
        return AuthConfig()
    try:
        namespace = runpy.run_path(str(path), run_name="auth_config")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise AuthConfigError(f"{CONFIG_FILE}: could not be run: {_where(exc, path)}") from exc
    if "providers" in namespace:
        providers = namespace["providers"]
    elif isinstance(namespace.get("default"), Mapping) and "providers" in namespace["default"]:
        providers = namespace["default"]["providers"]
    else:
        raise AuthConfigError(
            f"{CONFIG_FILE} must define `providers = [...]` (a list of provider dicts; "
            "an empty list for none)"
        )
    return AuthConfig.from_providers(providers, base_dir=root, source=CONFIG_FILE)


def _where(exc: BaseException, path: Path) -> str:
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{path}:{exc.lineno}: {detail}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename).resolve() == path:
            return f"{path}:{frame.lineno}: {detail}"
    return detail


# --------------------------------------------------------------------------- validation


def _provider(raw: object, where: str, base: Path) -> Provider:
    if not isinstance(raw, Mapping):
        raise AuthConfigError(f"{where}: must be a dict, got {type(raw).__name__}")
    for key in raw:
        if not isinstance(key, str):
            raise AuthConfigError(f"{where}: field names must be strings, got {key!r}")
    kind = raw.get("type")
    if kind is None:
        _no_unknown_fields(raw, _OIDC_FIELDS, where, hint=' (set "type": "customJwt" for those)')
        domain = _url(raw, "domain", where, required=True)
        assert domain is not None
        application_id = _string(raw, "applicationID", where, required=True)
        assert application_id is not None
        return OidcProvider(domain=domain, application_id=application_id)
    if kind != "customJwt":
        raise AuthConfigError(
            f'{where}: "type" must be "customJwt" (or left out for an OIDC provider), '
            f"got {_show(kind)}"
        )
    _no_unknown_fields(raw, _CUSTOM_FIELDS, where)
    issuer = _string(raw, "issuer", where, required=True)
    assert issuer is not None
    algorithm = raw.get("algorithm")
    if algorithm not in CUSTOM_JWT_ALGORITHMS:
        allowed = " or ".join(f'"{a}"' for a in CUSTOM_JWT_ALGORITHMS)
        got = "nothing" if algorithm is None else _show(algorithm)
        raise AuthConfigError(f'{where}: "algorithm" must be {allowed}, got {got}')
    assert isinstance(algorithm, str)
    return CustomJwtProvider(
        issuer=issuer,
        jwks=_jwks(raw, where, base),
        algorithm=algorithm,
        application_id=_string(raw, "applicationID", where, required=False),
    )


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _no_unknown_fields(
    raw: Mapping[str, Any], known: Sequence[str], where: str, hint: str = ""
) -> None:
    for key in raw:
        if key in known:
            continue
        close = difflib.get_close_matches(key.lower(), [k.lower() for k in known], n=1)
        if close:
            suggestion = next(k for k in known if k.lower() == close[0])
            raise AuthConfigError(f'{where}: unknown field "{key}" (did you mean "{suggestion}"?)')
        listed = ", ".join(f'"{k}"' for k in known)
        raise AuthConfigError(f'{where}: unknown field "{key}"; expected {listed}{hint}')


def _string(raw: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise AuthConfigError(f'{where}: "{name}" is required')
        return None
    if not isinstance(value, str):
        raise AuthConfigError(f'{where}: "{name}" must be a string, got {type(value).__name__}')
    if not value.strip():
        raise AuthConfigError(f'{where}: "{name}" must not be empty')
    if value != value.strip():
        raise AuthConfigError(f'{where}: "{name}" has leading or trailing spaces: {value!r}')
    return value


def _url(raw: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = _string(raw, name, where, required=required)
    if value is None:
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise AuthConfigError(
            f'{where}: "{name}" must be the issuer\'s https:// (or http://) URL, got {_show(value)}'
        )
    if parts.query or parts.fragment:
        raise AuthConfigError(
            f'{where}: "{name}" must not have a query or fragment, got {_show(value)}'
        )
    return value


def _jwks(raw: Mapping[str, Any], where: str, base: Path) -> JwksSource:
    value = _string(raw, "jwks", where, required=True)
    assert value is not None
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if value.startswith("data:"):
        try:
            document = check_jwks(load_document(value), "the data: URL")
        except FetchError as exc:
            raise AuthConfigError(f'{where}: "jwks": {exc}') from None
        return JwksSource("data", value, document)
    if scheme in ("http", "https"):
        if not urllib.parse.urlsplit(value).netloc:
            raise AuthConfigError(f'{where}: "jwks" URL has no host: {_show(value)}')
        return JwksSource("url", value)
    if scheme == "file":
        try:
            path = url_to_path(value)
        except FetchError as exc:
            raise AuthConfigError(f'{where}: "jwks": {exc}') from None
    elif len(scheme) > 1:  # "c:" in a Windows path is a drive, not a scheme
        raise AuthConfigError(
            f'{where}: "jwks" must be an https:// URL, a file path, a file:// URL or a '
            f"data: URL, got a {scheme}: URL"
        )
    else:
        path = Path(value)
    path = (base / path).resolve() if not path.is_absolute() else path
    try:
        check_jwks(load_document(str(path)), str(path))
    except FetchError as exc:
        raise AuthConfigError(f'{where}: "jwks": {exc}') from None
    return JwksSource("file", str(path))
