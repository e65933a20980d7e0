"""What a PostgreSQL deployment is named by: its connection URL and schema.

Kept apart from :mod:`basalt.storage.postgres` (which needs psycopg) so that
the server's settings can be checked, and a deployment described, without the
driver installed.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qs, urlsplit

#: What ``BASALT_DATABASE_SCHEMA`` may be: a lowercase SQL identifier (no quoting needed).
SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_SCHEMA: Final = "basalt"
URL_PREFIXES: Final = ("postgresql://", "postgres://")


def schema_problem(schema: str) -> str | None:
    """Why ``schema`` cannot name a deployment's schema, or None."""
    if SCHEMA_NAME.fullmatch(schema):
        return None
    return (
        "must be a lowercase identifier of at most 63 characters (letters a-z, digits "
        f"and _, not starting with a digit), got {schema!r}"
    )


def location(url: str) -> str:
    """``host:port/database`` of a connection URL, for messages: never the
    user name or the password."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["localhost"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
    except ValueError:
        return "(a malformed URL)"
    database = parts.path.lstrip("/") or query.get("dbname", [""])[0]
    where = f"[{host}]" if ":" in host else host
    return f"{where}:{port}/{database}" if database else f"{where}:{port}"
