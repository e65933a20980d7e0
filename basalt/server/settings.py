"""The settings a deployment reads from its command line and environment,
checked as they are read: a bad one is a :class:`ConfigError` of one line that
names the setting and what it accepts, before anything starts or is created.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from basalt.errors import BasaltError
from basalt.storage.postgres_url import URL_PREFIXES, schema_problem

DURABILITIES = ("process", "power")
S3_ADDRESSING_STYLES = ("auto", "path", "virtual")
MAX_PORT = 65535


class ConfigError(BasaltError):
    code = "ConfigError"


def env_text(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of environment variable ``name``, None when unset or blank."""
    text = (os.environ if env is None else env).get(name, "").strip()
    return text or None


def choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        accepted = ", ".join(choices[:-1]) + f" or {choices[-1]}"
        raise ConfigError(f"{name} must be {accepted}, got {value!r}")
    return value


def check_database_url(url: str) -> str:
    """``BASALT_DATABASE_URL``: a PostgreSQL URL or ``sqlite:…``."""
    if url.startswith(URL_PREFIXES):
        if not urlsplit(url).netloc and "host=" not in url:
            raise ConfigError(
                "BASALT_DATABASE_URL must name the PostgreSQL server, like "
                "postgresql://user@host:5432/database"
            )
        return url
    if url.startswith("sqlite:") and sqlite_path(url):
        return url
    shown = url if len(url) < 40 and "@" not in url else url.split(":", 1)[0] + ":…"
    raise ConfigError(
        "BASALT_DATABASE_URL must be postgresql://user@host:5432/database or "
        f"sqlite:///path/to/file.sqlite3, got {shown!r}"
    )


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:`` URL names (``sqlite:///abs/path``, ``sqlite:rel/path``)."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite://") :]
    return url[len("sqlite:") :].lstrip("/")


def check_database_schema(schema: str) -> str:
    """``BASALT_DATABASE_SCHEMA``: the PostgreSQL schema of the deployment."""
    problem = schema_problem(schema)
    if problem is not None:
        raise ConfigError(f"BASALT_DATABASE_SCHEMA {problem}")
    return schema


def check_public_url(url: str) -> str:
    """``BASALT_PUBLIC_URL``: an http(s) origin, maybe with a path prefix."""
    example = "like https://api.example.com or http://203.0.113.5:3210/basalt"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"BASALT_PUBLIC_URL has a bad port, {example}: got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"BASALT_PUBLIC_URL must be an http:// or https:// URL with a host, {example}: "
            f"got {url!r}"
        )
    if parts.query or parts.fragment or parts.username is not None:
        raise ConfigError(
            "BASALT_PUBLIC_URL must be an origin with an optional path (no user, query or "
            f"#fragment), {example}: got {url!r}"
        )
    return url


def check_blob_settings(env: Mapping[str, str] | None = None) -> None:
    """The ``BASALT_S3_*`` variables that have a fixed form (the bucket and
    credentials are checked by S3 when the store opens)."""
    style = env_text("BASALT_S3_ADDRESSING_STYLE", env)
    if style is not None:
        choice("BASALT_S3_ADDRESSING_STYLE", style, S3_ADDRESSING_STYLES)
    endpoint = env_text("BASALT_S3_ENDPOINT_URL", env)
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                "BASALT_S3_ENDPOINT_URL must be an http:// or https:// URL, like "
                f"http://127.0.0.1:9000, got {endpoint!r}"
            )
    for name in ("BASALT_S3_PREFIX", "BASALT_S3_ENDPOINT_URL", "BASALT_S3_REGION"):
        if env_text(name, env) is not None and env_text("BASALT_S3_BUCKET", env) is None:
            raise ConfigError(f"{name} is set but BASALT_S3_BUCKET is not: set the bucket too")


def check_port(option: str, port: int) -> int:
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(
            f"{option} must be a port number from 0 to {MAX_PORT} (0: any free port), got {port}"
        )
    return port


def check_ports(port: int, site_port: int | None) -> int:
    """Check ``--port`` and ``--site-port``; returns the HTTP actions port
    (default: the API port + 1, or any free port when the API's is 0)."""
    check_port("--port", port)
    if site_port is None:
        if port == MAX_PORT:
            raise ConfigError(
                f"--port {port} leaves no port + 1 for HTTP actions: pass --site-port too"
            )
        return port + 1 if port else 0
    check_port("--site-port", site_port)
    if site_port == port != 0:
        raise ConfigError(
            f"--port and --site-port are both {port}: the API and the HTTP actions need a "
            "port each (--site-port defaults to --port + 1)"
        )
    return site_port
