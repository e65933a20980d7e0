"""The data a command works on, found, never conjured up.

``basalt run`` and ``basalt export`` work on an existing deployment: a data
folder (or ``BASALT_DATABASE_URL``) that names no database is a mistake — a
typo in ``--data``, the wrong folder — and is refused naming where they looked,
with nothing created. (``basalt serve``/``dev`` make a new deployment, and so
does ``basalt import``, which loads a snapshot into a new or existing one.)

On SQLite the database is the file ``<data>/basalt.sqlite3`` (or the
``sqlite:`` URL's file); on PostgreSQL it is the schema
(``BASALT_DATABASE_SCHEMA``) of the database the URL names, and the data folder
only holds the admin key and local files: a missing folder is no error there,
and is not created to be locked (no server on this machine uses it).
"""

from __future__ import annotations

import asyncio

from basalt.server.config import ConfigError, ServerConfig
from basalt.server.data_lock import DataFolderLock


def data_exists(config: ServerConfig) -> bool:
    """Whether the deployment's database exists (asks PostgreSQL, creates nothing).
    Raises :class:`~basalt.errors.StorageError` when PostgreSQL cannot be reached."""
    return asyncio.run(config.open_storage().exists())


def require_data(config: ServerConfig) -> None:
    """Raise :class:`ConfigError` naming where the data was looked for, if it is not there."""
    if data_exists(config):
        return
    folder = str(config.data_dir)
    if config.uses_postgres:
        where = (
            f"no Basalt data in the {config.database} (check BASALT_DATABASE_URL and "
            "BASALT_DATABASE_SCHEMA)"
        )
    elif config.database_url is not None:
        where = f"no SQLite database at {config.sqlite_file} (BASALT_DATABASE_URL)"
    elif config.data_dir.is_dir():
        where = f"the data folder {folder} has no database ({config.sqlite_file})"
    else:
        where = f"no data folder {folder} (pass --data DIR if the data is elsewhere)"
    raise ConfigError(
        f"{where}: the first `basalt dev` or `basalt serve` creates it, or `basalt import` "
        "loads a snapshot into it",
        code="NoData",
    )


def lock_folder(
    config: ServerConfig, command: str, *, exclusive: bool = False
) -> DataFolderLock | None:
    """The data folder's lock for ``command`` (see :mod:`basalt.server.data_lock`);
    None on PostgreSQL when the folder does not exist (it is not made for this)."""
    if config.uses_postgres and not config.data_dir.exists():
        return None
    return config.lock_data_folder(command, exclusive=exclusive)
