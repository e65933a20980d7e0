"""Server configuration: command-line values and environment variables.

- ``BASALT_DATABASE_URL``: ``postgresql://…`` for PostgreSQL; default: a SQLite
  file in the data folder.
- ``BASALT_ADMIN_KEY``: the admin key, at least :data:`MIN_ADMIN_KEY_LENGTH`
  characters; default: generated once and kept in ``<data>/admin_key``.
- ``BASALT_PUBLIC_URL``: the origin that storage URLs (``get_url``,
  ``generate_upload_url``) start with; default: the server's own URL.
- ``BASALT_S3_BUCKET``: keep file blobs in this S3-compatible bucket (needs
  ``basalt-backend[s3]``), with ``BASALT_S3_PREFIX``, ``BASALT_S3_ENDPOINT_URL``,
  ``BASALT_S3_REGION``, ``BASALT_S3_ADDRESSING_STYLE`` and the standard AWS
  credential variables; default: files in ``<data>/blobs``.
- ``BASALT_MAX_UPLOAD_MB``: the largest file an upload (or ``ctx.storage.store``)
  may store, in MiB (default 1024); ``BASALT_MAX_CONCURRENT_UPLOADS``: uploads
  one server process receives at once (default 16, more are refused with 503);
  ``BASALT_MIN_FREE_DISK_MB``: MiB of the blob folder's disk that files never
  take (default 1024; local disk only).
- ``BASALT_DATABASE_SCHEMA``: the PostgreSQL schema of the deployment
  (default ``basalt``).
- ``BASALT_DURABILITY``: ``process`` (survive a crash of the process, the
  default) or ``power`` (survive power loss: fsync every commit).
- ``BASALT_FUNCTION_TIMEOUT``: seconds of event-loop time a query or mutation
  may take (default 1, as in Convex; ``0`` turns the limit off).
- ``BASALT_ACTION_THREADS``: how many ``def`` actions may run at once (default 64).
- ``BASALT_STOP_TIMEOUT``: seconds a graceful stop (SIGINT, SIGTERM) may take
  before the process exits anyway (default 10).
- ``BASALT_MAX_HEADER_BYTES``, ``BASALT_HEADER_TIMEOUT``, ``BASALT_BODY_TIMEOUT``,
  ``BASALT_MAX_CONNECTIONS``, ``BASALT_REQUEST_BODIES_MB``: limits on HTTP
  clients, read by :mod:`basalt.server.connections`.

Every setting is checked as it is read (:mod:`.settings`): a bad one is a
:class:`ConfigError` naming it and what it accepts.

A running server records its URL, process id, where its admin key comes from
(never the key itself) and its database (:attr:`ServerConfig.database`, which
``basalt run`` compares with the one its environment names) in
``<data>/server.json`` (readable by its owner only), so that ``basalt run``
finds it, and holds the data folder's lock
(:mod:`.data_lock`) while it runs.

Everything in the data folder is private to its owner: the folder is ``0700``
(an existing one with a looser mode is tightened when a server starts), its
files ``0600``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from basalt.files import blob_store_from_env
from basalt.runtime.files import (
    MAX_CONCURRENT_UPLOADS,
    MAX_UPLOAD_BYTES,
    MIN_FREE_BYTES,
    FileService,
)
from basalt.storage.base import Persistence
from basalt.storage.postgres_url import DEFAULT_SCHEMA, URL_PREFIXES, location

from .data_lock import DataFolderLock
from .settings import (
    DURABILITIES,
    check_blob_settings,
    check_database_schema,
    check_database_url,
    check_ports,
    check_public_url,
    choice,
    env_text,
    sqlite_path,
)
from .settings import ConfigError as ConfigError  # where it was defined before

DEFAULT_PORT = 3210
DEFAULT_APP_DIR = "functions"
DEFAULT_DATA_DIR = ".basalt"
SQLITE_FILE = "basalt.sqlite3"
ADMIN_KEY_FILE = "admin_key"
ADMIN_KEY_ENV = "BASALT_ADMIN_KEY"
#: The shortest admin key a server accepts (generated keys have 71 characters).
MIN_ADMIN_KEY_LENGTH = 32
SERVER_FILE = "server.json"


@dataclass
class ServerConfig:
    """Where the app and the data are, and where to listen."""

    app_dir: Path = field(default_factory=lambda: Path(DEFAULT_APP_DIR))
    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR))
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    site_port: int | None = None
    database_url: str | None = None
    #: the PostgreSQL schema (``BASALT_DATABASE_SCHEMA``; None: ``basalt``)
    database_schema: str | None = None
    admin_key: str | None = None
    durability: str = "process"
    public_url: str | None = None
    #: seconds a query or mutation may hold the event loop (None: no limit)
    function_timeout: float | None = 1.0
    #: how many ``def`` actions may run at once
    action_threads: int = 64
    #: seconds a graceful stop may take before the process exits anyway
    stop_timeout: float = 10.0
    #: the largest file an upload may store (MiB)
    max_upload_mb: float = MAX_UPLOAD_BYTES / (1 << 20)
    #: how many uploads this process receives at once
    max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS
    #: MiB of the local blob folder's disk that files never take
    min_free_disk_mb: float = MIN_FREE_BYTES / (1 << 20)
    #: True once :meth:`ensure_admin_key` has generated (and stored) a new key
    admin_key_generated: bool = False
    #: where :meth:`ensure_admin_key` found the key: :data:`ADMIN_KEY_ENV` (the
    #: environment, or a value given) or :data:`ADMIN_KEY_FILE` (the data folder)
    admin_key_source: str | None = None

    @classmethod
    def from_env(cls, **values: object) -> ServerConfig:
        """A config from keyword values, with environment variables filled in."""
        config = cls(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
        config.app_dir = Path(config.app_dir)
        config.data_dir = Path(config.data_dir)
        url = config.database_url or env_text("BASALT_DATABASE_URL")
        config.database_url = check_database_url(url) if url else None
        schema = config.database_schema or env_text("BASALT_DATABASE_SCHEMA")
        config.database_schema = check_database_schema(schema) if schema else None
        config.admin_key = config.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
        durability = env_text("BASALT_DURABILITY") or config.durability
        config.durability = choice("BASALT_DURABILITY", durability, DURABILITIES)
        public_url = config.public_url or env_text("BASALT_PUBLIC_URL")
        config.public_url = check_public_url(public_url) if public_url else None
        check_blob_settings()
        timeout = _env_number("BASALT_FUNCTION_TIMEOUT", config.function_timeout or 0.0)
        config.function_timeout = timeout or None
        config.action_threads = int(
            _env_number("BASALT_ACTION_THREADS", config.action_threads, minimum=1, integer=True)
        )
        config.stop_timeout = _env_number("BASALT_STOP_TIMEOUT", config.stop_timeout)
        config.max_upload_mb = _env_number("BASALT_MAX_UPLOAD_MB", config.max_upload_mb, unit="MiB")
        config.max_concurrent_uploads = int(
            _env_number(
                "BASALT_MAX_CONCURRENT_UPLOADS",
                config.max_concurrent_uploads,
                minimum=1,
                integer=True,
            )
        )
        config.min_free_disk_mb = _env_number(
            "BASALT_MIN_FREE_DISK_MB", config.min_free_disk_mb, unit="MiB"
        )
        config.site_port = check_ports(config.port, config.site_port)
        return config

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def site_url(self) -> str:
        """The URL of the HTTP actions (the site origin)."""
        return self.url.rsplit(":", 1)[0] + f":{self.site_port}"

    def stored_admin_key(self) -> str | None:
        """The admin key from config/env or the data folder, without generating one."""
        return self.admin_key or self._admin_key_file()

    def _admin_key_file(self) -> str | None:
        try:
            return (self.data_dir / ADMIN_KEY_FILE).read_text().strip() or None
        except OSError:
            return None

    def admin_key_for(self, server: RunningServer) -> str | None:
        """The admin key to call ``server`` with, taken where the server takes
        its own: this process's ``BASALT_ADMIN_KEY``, or the data folder's
        file (None: not there)."""
        if server.admin_key_source == ADMIN_KEY_FILE:
            return self._admin_key_file()
        if server.admin_key_source == ADMIN_KEY_ENV:
            return self.admin_key
        return self.stored_admin_key()

    def ensure_admin_key(self) -> str:
        """The admin key: from config/env, else the one kept in the data folder
        (generated on first start). Raises :class:`ConfigError` for a key
        shorter than :data:`MIN_ADMIN_KEY_LENGTH` characters."""
        if self.admin_key:
            generated = self.data_dir / ADMIN_KEY_FILE
            _check_admin_key(
                self.admin_key,
                f"{ADMIN_KEY_ENV} is",
                f"or unset {ADMIN_KEY_ENV} to have one generated in {generated}",
            )
            self.admin_key_source = ADMIN_KEY_ENV
            return self.admin_key
        stored = self.stored_admin_key()
        if stored:
            path = self.data_dir / ADMIN_KEY_FILE
            _check_admin_key(
                stored,
                f"the admin key in {path} is",
                "or delete that file to have a new key generated there",
            )
            self.admin_key = stored
            self.admin_key_source = ADMIN_KEY_FILE
            return stored
        path = self.data_dir / ADMIN_KEY_FILE
        self.prepare_data_dir()
        key = f"basalt|{secrets.token_hex(32)}"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.replace(tmp, path)
        self.admin_key = key
        self.admin_key_generated = True
        self.admin_key_source = ADMIN_KEY_FILE
        return key

    @property
    def uses_postgres(self) -> bool:
        url = self.database_url
        return bool(url and url.startswith(URL_PREFIXES))

    @property
    def sqlite_file(self) -> Path:
        """The SQLite database file (on SQLite)."""
        url = self.database_url
        return Path(sqlite_path(url)) if url else self.data_dir / SQLITE_FILE

    @property
    def database(self) -> str:
        """Where the data is, for messages and ``server.json`` (no password):
        ``SQLite database /abs/path`` or ``PostgreSQL database at
        host:port/db, schema s``."""
        if self.uses_postgres:
            assert self.database_url is not None
            schema = self.database_schema or DEFAULT_SCHEMA
            return f"PostgreSQL database at {location(self.database_url)}, schema {schema}"
        return f"SQLite database {self.sqlite_file.resolve()}"

    @property
    def database_named(self) -> bool:
        """Whether the database was chosen explicitly (``BASALT_DATABASE_URL`` or
        ``BASALT_DATABASE_SCHEMA``), not just by the data folder."""
        return self.database_url is not None or self.database_schema is not None

    def lock_data_folder(self, command: str, *, exclusive: bool = False) -> DataFolderLock:
        """Take the data folder's lock for ``command`` while it uses the folder:
        shared on PostgreSQL (its servers may share a folder, as they share the
        database) unless ``exclusive``, exclusive on SQLite. Raises
        :class:`~.data_lock.DataFolderBusy` naming the holder."""
        shared = self.uses_postgres and not exclusive
        return DataFolderLock.acquire(self.data_dir, command, shared=shared)

    def prepare_data_dir(self) -> None:
        """Create the data folder readable by its owner only (``0700``), or
        tighten an existing one to that (without touching the process umask)."""
        data = self.data_dir
        if not data.exists():
            data.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(data.stat().st_mode)
            if mode & 0o077:
                data.chmod(mode & 0o700)
        except OSError as exc:
            raise ConfigError(
                f"the data folder {str(data)!r} cannot be made private to its owner: {exc}"
            ) from None

    def open_storage(self) -> Persistence:
        """The storage engine this config selects (not yet opened)."""
        url = self.database_url
        if url and self.uses_postgres:
            try:
                from basalt.storage.postgres import PostgresEngine
            except ImportError as exc:
                raise ConfigError(
                    f"BASALT_DATABASE_URL points at PostgreSQL, but its driver is missing ({exc}): "
                    "pip install 'basalt-backend[postgres]'"
                ) from exc
            return PostgresEngine(url, schema=self.database_schema)
        from basalt.storage.sqlite import SqliteEngine

        return SqliteEngine(self.sqlite_file, durability=self.durability)

    def open_files(self) -> FileService:
        """The file service: blobs in S3 if ``BASALT_S3_BUCKET`` is set, else in
        ``<data>/blobs``; URLs start with ``BASALT_PUBLIC_URL`` or the server URL
        (call after the port is known)."""
        blobs = blob_store_from_env(self.data_dir / "blobs")
        return FileService(
            blobs,
            origin=self.public_url or self.url,
            max_upload_bytes=int(self.max_upload_mb * (1 << 20)),
            max_concurrent_uploads=self.max_concurrent_uploads,
            min_free_bytes=int(self.min_free_disk_mb * (1 << 20)),
        )

    # -- the running-server marker used by `basalt run` ------------------------
    def write_server_file(self) -> None:
        """Record this process as the server of the data folder (URL, pid, and
        where its admin key comes from, so that ``basalt run`` can call it).
        Readable by the owner only. The key itself is not recorded: a key kept
        off disk (``BASALT_ADMIN_KEY``) stays off disk.

        On PostgreSQL, whose servers may share a data folder, another live
        server's marker is left alone: ``basalt run`` keeps calling that one,
        and this process will not remove it when it stops. (On SQLite this
        process holds the folder's lock: any other marker is stale.)"""
        self.prepare_data_dir()
        if self.uses_postgres:
            other = running_server(self.data_dir)
            if other is not None and other.pid != os.getpid():
                return
        path = self.data_dir / SERVER_FILE
        info = {
            "url": self.url,
            "siteUrl": self.site_url,
            "pid": os.getpid(),
            "adminKeySource": self.admin_key_source,
            "database": self.database,
        }
        tmp = path.with_name(f"{SERVER_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        os.replace(tmp, path)

    def remove_server_file(self) -> None:
        """Remove the marker if this process wrote it (never another's)."""
        path = self.data_dir / SERVER_FILE
        try:
            info = json.loads(path.read_text())
            if info.get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass


def _env_number(
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    integer: bool = False,
    unit: str = "seconds",
) -> float:
    """The number in environment variable ``name`` (``default`` if unset)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else f"a number of {unit}"
        raise ConfigError(f"{name} must be {kind}, got {text!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number of at least {minimum:g}, got {text!r}")
    return value


def _check_admin_key(key: str, what: str, otherwise: str) -> None:
    if len(key) < MIN_ADMIN_KEY_LENGTH:
        raise ConfigError(
            f"{what} too short: an admin key needs at least {MIN_ADMIN_KEY_LENGTH} characters "
            f"(it has {len(key)}), as anyone who reaches the server may guess at it; use a "
            'long random one (python -c "import secrets; print(secrets.token_hex(32))"), '
            + otherwise,
            code="AdminKeyTooShort",
        )


@dataclass(frozen=True)
class RunningServer:
    """A live server of a data folder, as its ``server.json`` marker describes it."""

    url: str
    pid: int
    #: where its admin key comes from: ``BASALT_ADMIN_KEY`` (the server's
    #: environment) or ``admin_key`` (the data folder's file); None: unknown
    admin_key_source: str | None
    #: where its data is (:attr:`ServerConfig.database`); None if its marker does not say
    database: str | None = None


def running_server(data_dir: Path) -> RunningServer | None:
    """The live server using ``data_dir``, if there is one."""
    try:
        info = json.loads((data_dir / SERVER_FILE).read_text())
        pid = int(info["pid"])
        os.kill(pid, 0)
        source, database = info.get("adminKeySource"), info.get("database")
        return RunningServer(
            str(info["url"]),
            pid,
            source if isinstance(source, str) else None,
            database if isinstance(database, str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def running_server_url(data_dir: Path) -> str | None:
    """The URL of a live server using ``data_dir``, if there is one."""
    server = running_server(data_dir)
    return server.url if server is not None else None
