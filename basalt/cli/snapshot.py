"""Snapshot ZIPs: ``basalt export`` and the format ``basalt import`` reads.

The layout follows Convex's snapshot export (a ZIP, one folder per table)::

    README.md                    what this file is (for a human opening it)
    _tables/documents.jsonl      every table of the database: {"name", "id"}
                                 (id = the table number that document ids encode)
    <table>/documents.jsonl      one document per line, system fields included,
                                 in _creationTime order, Convex-JSON-encoded
                                 (int64 {"$integer"}, bytes {"$bytes"}, NaN,
                                 ±inf and -0.0 {"$float"}): nothing is lost
    _storage/documents.jsonl     the _storage documents (sha256, size, contentType)
    _storage/<storage id>        the bytes of each file (stored uncompressed),
                                 named by its storage id (no extension; an
                                 importer also accepts ``<storage id>.<ext>``,
                                 as Convex adds one)
    _basalt/manifest.json        written last: format version, every table with
                                 its number, document count and whether it was
                                 exported, file count and bytes, and the schema
                                 applied to the database (JSON text)

Exported: every user table (empty ones too, so table numbers survive),
``_storage`` (files) and ``_scheduled_functions`` (pending jobs must survive a
move). Not exported: ``_upload_tokens`` (spent upload tokens, checkable only
with the source's signing secret, which a snapshot must not carry: in the new
deployment every old token is invalid anyway) and ``_cron_jobs`` (derived from
``crons.py``; the scheduler rebuilds it at start). Other system tables are
Basalt's bookkeeping and are skipped too; all of them are still listed in
``_tables`` so an import can give every table its original number.

The export reads one snapshot of the database (one read transaction), streams
each table through ``zipfile`` (ZIP64, never the whole table in memory) into
``<output>.partial``, and renames it when complete.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TextIO

from basalt import __version__
from basalt.errors import BasaltError
from basalt.files import blob_key
from basalt.runtime.files import STORAGE_TABLE, FileService
from basalt.runtime.scheduling import JOBS_TABLE
from basalt.runtime.schema_apply import SCHEMA_META_KEY
from basalt.server.config import SERVER_FILE, ServerConfig, running_server
from basalt.server.data_lock import DataFolderBusy
from basalt.storage.base import BY_CREATION_TIME, Document, Persistence, ReadTransaction
from basalt.values.ids import decode_id
from basalt.values.wire import dumps

from .data_folder import data_exists, lock_folder, require_data
from .progress import Progress, human_bytes

FORMAT: Final = "basalt-snapshot"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "_basalt/manifest.json"
TABLES_ENTRY: Final = "_tables/documents.jsonl"
DOCUMENTS: Final = "documents.jsonl"
#: The system tables a snapshot carries (see the module docstring for the others).
EXPORTED_SYSTEM_TABLES: Final = frozenset({STORAGE_TABLE, JOBS_TABLE})
_CHUNK = 1 << 20

README = """\
# Basalt snapshot

Made by `basalt export`; load it with `basalt import FILE --append|--replace`.
One folder per table holds `documents.jsonl` (one document per line, in
creation order, Convex JSON encoding). `_storage/` holds the stored files,
each named by its storage id. `_basalt/manifest.json` lists every table with
its number (document ids encode it), the counts and the schema.
"""


class SnapshotError(BasaltError):
    """A snapshot that cannot be written or read, or an import that is refused."""

    code = "SnapshotError"


def is_exported(table: str) -> bool:
    return not table.startswith("_") or table in EXPORTED_SYSTEM_TABLES


@dataclass(frozen=True, slots=True)
class TableEntry:
    """A table as the manifest lists it."""

    name: str
    number: int
    documents: int
    exported: bool

    @property
    def entry(self) -> str:
        return f"{self.name}/{DOCUMENTS}"


@dataclass(frozen=True, slots=True)
class Manifest:
    tables: list[TableEntry]
    files: int
    file_bytes: int
    schema: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "basaltVersion": __version__,
            "tables": [
                {
                    "name": t.name,
                    "number": t.number,
                    "documents": t.documents,
                    "exported": t.exported,
                }
                for t in self.tables
            ],
            "files": {"count": self.files, "bytes": self.file_bytes},
            "schema": self.schema,
        }


def read_manifest(zf: zipfile.ZipFile) -> Manifest:
    """The manifest of an opened snapshot; raises :class:`SnapshotError` if it is
    missing, of another format version, or malformed."""
    try:
        raw = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise SnapshotError(
            f"this ZIP has no {MANIFEST}: it is not a Basalt snapshot (or its export was cut short)"
        ) from None
    except ValueError as exc:
        raise SnapshotError(f"{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SnapshotError(f"{MANIFEST} does not describe a {FORMAT}")
    if raw.get("version") != FORMAT_VERSION:
        raise SnapshotError(
            f"this snapshot has format version {raw.get('version')!r}; this Basalt "
            f"({__version__}) reads version {FORMAT_VERSION}"
        )
    try:
        tables = [
            TableEntry(str(t["name"]), int(t["number"]), int(t["documents"]), bool(t["exported"]))
            for t in raw["tables"]
        ]
        files = raw["files"]
        return Manifest(tables, int(files["count"]), int(files["bytes"]), str(raw["schema"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{MANIFEST} is malformed: {type(exc).__name__} {exc}") from None


@dataclass(slots=True)
class Summary:
    """What an export or import moved."""

    tables: int = 0
    documents: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def describe(self, verb: str) -> str:
        def count(n: int, what: str) -> str:
            return f"{n:,} {what}" + ("" if n == 1 else "s")

        return (
            f"{verb} {count(self.tables, 'table')}, {count(self.documents, 'document')}, "
            f"{count(self.files, 'file')} ({human_bytes(self.bytes)}) in {self.seconds:.1f} s"
        )


async def scan_table(tx: ReadTransaction, number: int) -> AsyncIterator[Document]:
    """The documents of a table in ``_creationTime`` order."""
    index = tx.catalog.index(number, BY_CREATION_TIME)
    if index is None:
        raise SnapshotError(f"table number {number} has no {BY_CREATION_TIME} index")
    async for _, doc in tx.scan(index, b"", None, batch_size=500):
        yield doc


# --------------------------------------------------------------------------- export


async def export_snapshot(
    storage: Persistence, files: FileService, out: Path, *, progress: TextIO | None = None
) -> Summary:
    """Write a snapshot of ``storage`` (opened) and the blobs of ``files`` (its
    blob store opened) to ``out``."""
    started = time.monotonic()
    summary = Summary()
    schema = await storage.get_meta(SCHEMA_META_KEY) or ""
    partial = out.with_name(out.name + ".partial")
    # The snapshot holds every document: readable by its owner only (0600).
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover .partial may have had another mode
        with (
            os.fdopen(fd, "wb", closefd=False) as raw,
            zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf,
        ):
            zf.writestr("README.md", README)
            async with storage.read() as tx:
                tables = tx.catalog.tables()
                lines = [json.dumps({"name": t.name, "id": t.number}) + "\n" for t in tables]
                zf.writestr(TABLES_ENTRY, "".join(lines))
                exported = [t for t in tables if is_exported(t.name)]
                total = sum([await tx.count(t.number) for t in exported])
                bar = Progress(progress, "exporting documents", total)
                entries: list[TableEntry] = []
                for t in tables:
                    count = 0
                    if is_exported(t.name):
                        count, size = await _export_table(zf, tx, t.number, t.name, bar)
                        summary.tables += 1
                        summary.documents += count
                        summary.bytes += size
                    entries.append(TableEntry(t.name, t.number, count, is_exported(t.name)))
                bar.close()
                file_bytes = 0
                files_entry = next((e for e in entries if e.name == STORAGE_TABLE), None)
                if files_entry is not None:
                    summary.files, file_bytes = await _export_files(
                        zf, tx, files, files_entry, progress
                    )
                    summary.bytes += file_bytes
            manifest = Manifest(entries, summary.files, file_bytes, schema)
            zf.writestr(MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")
        os.close(fd)
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    summary.seconds = time.monotonic() - started
    return summary


async def _export_table(
    zf: zipfile.ZipFile, tx: ReadTransaction, number: int, name: str, bar: Progress
) -> tuple[int, int]:
    count = size = 0
    buffer: list[str] = []
    buffered = 0
    info = zipfile.ZipInfo(f"{name}/{DOCUMENTS}", time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as out:
        async for doc in scan_table(tx, number):
            line = dumps(doc) + "\n"
            buffer.append(line)
            buffered += len(line)
            count += 1
            if buffered >= _CHUNK:
                size += _flush(out, buffer)
                buffered = 0
            bar.advance(label=f"exporting {name}")
        size += _flush(out, buffer)
    return count, size


def _flush(out: IO[bytes], buffer: list[str]) -> int:
    data = "".join(buffer).encode()
    out.write(data)
    buffer.clear()
    return len(data)


async def _export_files(
    zf: zipfile.ZipFile,
    tx: ReadTransaction,
    files: FileService,
    table: TableEntry,
    progress: TextIO | None,
) -> tuple[int, int]:
    total = 0
    async for doc in scan_table(tx, table.number):
        total += int(doc["size"])
    bar = Progress(progress, "exporting files", total, in_bytes=True)
    count = size = 0
    async for doc in scan_table(tx, table.number):
        storage_id = doc["_id"]
        info = zipfile.ZipInfo(f"{STORAGE_TABLE}/{storage_id}", _zip_time(doc["_creationTime"]))
        info.compress_type = zipfile.ZIP_STORED  # uploads are mostly compressed already
        info.file_size = int(doc["size"])
        digest = hashlib.sha256()
        written = 0
        reader = await files.blobs.read(blob_key(decode_id(storage_id)[1]))
        async with reader:
            with zf.open(info, "w") as out:
                async for chunk in reader:
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.advance(len(chunk))
        if written != info.file_size or _b64(digest.digest()) != doc["sha256"]:
            raise SnapshotError(
                f"the stored bytes of file {storage_id} do not match its _storage document "
                f"(size {written} vs {info.file_size}, or a different sha256): the blob store "
                "is damaged; the export was stopped"
            )
        count += 1
        size += written
    bar.close()
    return count, size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _zip_time(ms: float) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(ms / 1000, 315532800))  # ZIP dates start in 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


# --------------------------------------------------------------------------- CLI glue


def add_commands(sub: Any, data_default: str) -> None:
    """Declare ``basalt export`` and ``basalt import`` on the subparsers ``sub``."""
    p = sub.add_parser("export", help="write a snapshot ZIP of the data (tables and files)")
    p.add_argument("--data", default=data_default, help="the data folder (%(default)s)")
    p.add_argument("--app", default=None, help="the app folder (to compare its schema)")
    p.add_argument("-o", "--output", default=None, help="the ZIP to write")
    p.add_argument("--force", action="store_true", help="even if a server uses the data")

    p = sub.add_parser("import", help="load a snapshot ZIP made by basalt export")
    p.add_argument("snapshot", help="the snapshot ZIP")
    p.add_argument("--data", default=data_default, help="the data folder (%(default)s)")
    p.add_argument("--app", default=None, help="validate documents against this app's schema")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--append", action="store_true", help="add the documents (refused if an id exists)"
    )
    mode.add_argument(
        "--replace", action="store_true", help="empty the snapshot's tables first, then load"
    )
    p.add_argument("--no-validate", action="store_true", help="skip schema validation")
    p.add_argument("--force", action="store_true", help="even if a server uses the data")


def run_command(args: argparse.Namespace) -> int:
    """Run ``basalt export`` or ``basalt import`` (parsed ``args``). Nothing is
    created before the snapshot to import was found readable, or for an export
    of a deployment that does not exist (:mod:`.data_folder`)."""
    config = ServerConfig.from_env(data_dir=args.data, app_dir=args.app)
    if args.command == "import":
        check_snapshot_file(Path(args.snapshot))
    server = running_server(config.data_dir)
    if server is not None and not args.force:
        print(
            f"error: a Basalt server (pid {server.pid}, {server.url}) is using the data folder "
            f"{config.data_dir}: stop it first ({args.command} needs the database to itself: "
            f"an export would mix writes made meanwhile, and a server would not see an "
            f"import), or pass --force (if no server runs, delete "
            f"{config.data_dir / SERVER_FILE})",
            file=sys.stderr,
        )
        return 1
    if args.command == "export":
        require_data(config)
    new_data = args.command == "import" and not data_exists(config)
    try:  # the folder to itself, even beside a server that left no server.json
        lock = None if args.force else lock_folder(config, f"basalt {args.command}", exclusive=True)
    except DataFolderBusy as exc:
        print(f"error: {exc.message}: stop it first, or pass --force", file=sys.stderr)
        return 1
    try:
        if args.command == "export":
            return asyncio.run(_export_cli(config, args))
        from .snapshot_import import import_cli

        if new_data:
            print(f"importing into a new deployment: {_where(config)}", file=sys.stderr)
        return asyncio.run(import_cli(config, args))
    finally:
        if lock is not None:
            lock.release()


def _where(config: ServerConfig) -> str:
    return config.database if config.database_named else f"the data folder {config.data_dir}"


def check_snapshot_file(path: Path) -> None:
    """Refuse, before anything is touched, a snapshot that is missing, not a
    ZIP or not a Basalt snapshot (the whole file is checked by the import)."""
    if not path.is_file():
        what = "is a folder, not" if path.is_dir() else "does not exist: no"
        raise SnapshotError(f"{path} {what} snapshot file to import; nothing was imported")
    try:
        with zipfile.ZipFile(path) as zf:
            read_manifest(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SnapshotError(
            f"cannot read {path} as a ZIP ({reason}): it is truncated or not a snapshot; "
            "nothing was imported"
        ) from None


async def _export_cli(config: ServerConfig, args: argparse.Namespace) -> int:
    out = Path(args.output or time.strftime("snapshot-%Y%m%d-%H%M%S.zip"))
    storage, files = config.open_storage(), config.open_files()
    await storage.open()
    try:
        await files.blobs.open()
        try:
            if args.app is not None:
                await _warn_schema_drift(storage, config.app_dir)
            summary = await export_snapshot(storage, files, out, progress=sys.stderr)
        finally:
            await files.blobs.close()
    finally:
        await storage.close()
    print(summary.describe("exported"))
    print(f"wrote {out} ({human_bytes(out.stat().st_size)})")
    return 0


async def _warn_schema_drift(storage: Persistence, app_dir: Path) -> None:
    from basalt.runtime import load_app
    from basalt.runtime.schema_apply import schema_text

    app_schema = schema_text(load_app(app_dir).schema)
    if app_schema != (await storage.get_meta(SCHEMA_META_KEY) or ""):
        print(
            f"warning: the schema of {app_dir} is not the one applied to this database (the "
            "snapshot records the applied one); start the server once to apply it",
            file=sys.stderr,
        )
