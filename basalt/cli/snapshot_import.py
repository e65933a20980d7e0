"""``basalt import``: load a snapshot ZIP (the format is in :mod:`basalt.cli.snapshot`).

Two passes over the ZIP, so that a refused import writes nothing:

1. **check** (reads only): the manifest; whether every table can get its
   snapshot number (tried in a write transaction that is rolled back); every
   line of every ``documents.jsonl`` (JSON, a legal Convex value, an ``_id``
   of the table of its folder, the app's schema unless ``--no-validate``, and
   with ``--append`` that the id does not exist yet); the bytes of every file
   against its ``_storage`` document (size and sha256). ``zipfile`` checks each
   entry's CRC-32 as it is read to its end, so a damaged entry is caught here;
   a truncated ZIP fails at once (its directory is at the end).
2. **write**: create the missing tables, with ``--replace`` empty the
   snapshot's tables (and delete the blobs of their files), store the blobs,
   then insert the documents in transactions of at most 1000 documents or
   4 MiB.

A failure during pass 2 (a full disk, a lost database connection) leaves what
was committed; the error says how far it got, and running the import again
with ``--replace`` starts over cleanly.

**Table numbers.** A document id encodes its table's number, so every table
keeps the number it had in the snapshot. A table the database already has must
have that number; a missing one is created, and so that the engine hands out
the wanted number (the next free one of its range), the snapshot's tables
numbered before it are created first (empty; e.g. ``_upload_tokens``). If the
numbers are taken (the database was used by another app), the import is
refused before anything is written: import into a fresh database, before the
first ``basalt serve``. Ids are never re-mapped: ids of other tables can be
stored anywhere in a document (and outside the database), so rewriting them
all cannot be done safely.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TextIO

from basalt.errors import BasaltError, WriteConflict
from basalt.files import blob_key
from basalt.runtime.files import STORAGE_TABLE, FileService
from basalt.runtime.schema_apply import SCHEMA_META_KEY, schema_text
from basalt.schema import SchemaDefinition
from basalt.server.config import ServerConfig
from basalt.storage.base import BY_CREATION_TIME, Document, Persistence, WriteTransaction
from basalt.values.ids import decode_id

from .progress import Progress
from .snapshot import Manifest, SnapshotError, Summary, read_manifest
from .snapshot_check import Checked, Mode, check_snapshot, read_documents

BATCH_DOCUMENTS = 1000
BATCH_BYTES = 4 << 20
_CHUNK = 1 << 20
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


async def import_snapshot(
    storage: Persistence,
    files: FileService,
    path: Path,
    *,
    mode: Mode,
    schema: SchemaDefinition | None = None,
    validate: bool = True,
    progress: TextIO | None = None,
    warn: Callable[[str], None] | None = None,
) -> Summary:
    """Import the snapshot at ``path`` into ``storage`` (opened) and the blob
    store of ``files`` (opened). ``schema``: the app's schema, to validate the
    documents against (unless ``validate`` is false)."""
    started = time.monotonic()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SnapshotError(
            f"cannot read {path} as a ZIP ({exc}): it is truncated or not a snapshot; nothing "
            "was imported"
        ) from None
    with zf:
        try:
            manifest = read_manifest(zf)
            await _warn_schema(storage, manifest, schema, validate, warn or (lambda _: None))
            await _create_tables(storage, manifest, commit=False)  # refused now, or it will work
            checked = await check_snapshot(
                zf, storage, manifest, mode, schema if validate else None, progress
            )
        except _DAMAGED as exc:
            raise SnapshotError(f"the snapshot is damaged ({exc}); nothing was imported") from None
        summary = Summary(tables=sum(t.exported for t in manifest.tables))
        try:
            await _write(zf, storage, files, manifest, checked, mode, progress, summary)
        except (Exception, WriteConflict) as exc:
            detail = exc.message if isinstance(exc, BasaltError) else str(exc)
            raise SnapshotError(
                f"the import failed while writing ({type(exc).__name__}: {detail}) after "
                f"{summary.documents:,} documents and {summary.files:,} files were written: "
                "the database holds a partial import; fix the cause and import again with "
                "--replace"
            ) from exc
    summary.seconds = time.monotonic() - started
    return summary


async def _warn_schema(
    storage: Persistence,
    manifest: Manifest,
    schema: SchemaDefinition | None,
    validate: bool,
    warn: Callable[[str], None],
) -> None:
    if schema is not None:
        if schema_text(schema) != manifest.schema:
            how = "every document is checked against the app's" if validate else "--no-validate"
            warn(f"the app's schema differs from the one the snapshot was exported with ({how})")
        return
    stored = await storage.get_meta(SCHEMA_META_KEY) or ""
    if stored and stored != manifest.schema:
        warn(
            "the schema applied to this database differs from the one the snapshot was "
            "exported with; pass --app to check the documents against the app's schema"
        )


# --------------------------------------------------------------------------- tables


def _numbers_taken(detail: str) -> SnapshotError:
    return SnapshotError(
        f"{detail}. Document ids encode their table's number, so the snapshot's ids would "
        "not name the right table; nothing was imported. Import into a database where these "
        "numbers are free (a fresh one, before the first `basalt serve`)"
    )


async def _create_tables(storage: Persistence, manifest: Manifest, *, commit: bool) -> None:
    """Give every exported table its snapshot number (see the module docstring);
    with ``commit`` false this only checks that it can be done."""
    async with storage.write() as tx:
        for t in manifest.tables:
            if not t.exported:
                continue
            have, holder = tx.catalog.table_by_name(t.name), tx.catalog.table_by_number(t.number)
            if have is not None and have.number != t.number:
                raise _numbers_taken(
                    f"table {t.name!r} has number {have.number} in this database but "
                    f"{t.number} in the snapshot"
                )
            if holder is not None and holder.name != t.name:
                raise _numbers_taken(
                    f"table number {t.number} ({t.name!r} in the snapshot) belongs to table "
                    f"{holder.name!r} in this database"
                )
        created = False
        for system in (True, False):
            in_range = sorted(
                (t for t in manifest.tables if t.name.startswith("_") == system),
                key=lambda t: t.number,
            )
            last = max((t.number for t in in_range if t.exported), default=0)
            for t in in_range:
                catalog = tx.catalog
                if t.number > last:
                    break
                if catalog.table_by_number(t.number) or catalog.table_by_name(t.name):
                    continue
                info = await tx.ensure_table(t.name)
                created = True
                if t.exported and info.number != t.number:
                    raise _numbers_taken(
                        f"table {t.name!r} would get number {info.number} in this database, "
                        f"not {t.number} as in the snapshot"
                    )
        if created and commit:
            await tx.commit()


# --------------------------------------------------------------------------- pass 2


async def _write(
    zf: zipfile.ZipFile,
    storage: Persistence,
    files: FileService,
    manifest: Manifest,
    checked: Checked,
    mode: Mode,
    progress: TextIO | None,
    summary: Summary,
) -> None:
    await _create_tables(storage, manifest, commit=True)
    exported = [t for t in manifest.tables if t.exported]
    if mode == "replace":
        for table in exported:
            await _clear(storage, files, table.name)
    # The blobs first: no _storage document is ever visible without its bytes.
    total = sum(f.size for f in checked.files.values())
    bar = Progress(progress, "importing files", total, in_bytes=True)
    for storage_id, file in checked.files.items():
        key = blob_key(decode_id(storage_id)[1])
        sha = base64.b64decode(file.sha256)
        await files.blobs.put(key, _chunks(zf, file.entry, bar), expected_sha256=sha)
        summary.files += 1
        summary.bytes += file.size
    if checked.files:
        bar.close()
    bar = Progress(progress, "importing documents", sum(t.documents for t in exported))
    for table in exported:
        batch: list[Document] = []
        size = 0
        for _, n, doc in read_documents(zf, table.entry):
            batch.append(doc)
            size += n
            if len(batch) >= BATCH_DOCUMENTS or size >= BATCH_BYTES:
                await _insert(storage, table.name, batch, summary, size)
                bar.advance(len(batch), label=f"importing {table.name}")
                batch, size = [], 0
        if batch:
            await _insert(storage, table.name, batch, summary, size)
            bar.advance(len(batch), label=f"importing {table.name}")
    bar.close()


async def _chunks(zf: zipfile.ZipFile, entry: str, bar: Progress) -> AsyncIterator[bytes]:
    with zf.open(entry) as stream:
        while data := stream.read(_CHUNK):
            bar.advance(len(data))
            yield data


async def _insert(
    storage: Persistence, name: str, docs: list[Document], summary: Summary, size: int
) -> None:
    async with storage.write() as tx:
        table = tx.catalog.table_by_name(name)
        assert table is not None, f"table {name!r} was created first"
        for doc in docs:
            await tx.insert(table, doc)
        await tx.commit()
    summary.documents += len(docs)
    summary.bytes += size


async def _first(tx: WriteTransaction, number: int, n: int) -> list[Document]:
    """The first ``n`` documents of a table, in ``_creationTime`` order."""
    index = tx.catalog.index(number, BY_CREATION_TIME)
    assert index is not None
    scan = tx.scan(index, b"", None, batch_size=n)
    docs: list[Document] = []
    try:
        async for _, doc in scan:
            docs.append(doc)
            if len(docs) >= n:
                break
    finally:
        close = getattr(scan, "aclose", None)
        if close is not None:
            await close()
    return docs


async def _clear(storage: Persistence, files: FileService, name: str) -> None:
    """Delete every document of a table (and, for ``_storage``, the blobs)."""
    while True:
        async with storage.write() as tx:
            table = tx.catalog.table_by_name(name)
            if table is None:
                return
            docs = await _first(tx, table.number, BATCH_DOCUMENTS)
            if not docs:
                return
            for doc in docs:
                await tx.delete(table, doc)
            await tx.commit()
        if name == STORAGE_TABLE:
            for doc in docs:
                await files.blobs.delete(blob_key(decode_id(doc["_id"])[1]))


# --------------------------------------------------------------------------- CLI


async def import_cli(config: ServerConfig, args: argparse.Namespace) -> int:
    """``basalt import`` once the arguments are checked."""
    schema = None
    if args.app is not None:
        from basalt.runtime import load_app

        schema = load_app(config.app_dir).schema
    storage, files = config.open_storage(), config.open_files()
    await storage.open()
    try:
        await files.blobs.open()
        try:
            summary = await import_snapshot(
                storage,
                files,
                Path(args.snapshot),
                mode="replace" if args.replace else "append",
                schema=schema,
                validate=not args.no_validate,
                progress=sys.stderr,
                warn=lambda text: print(f"warning: {text}", file=sys.stderr),
            )
        finally:
            await files.blobs.close()
    finally:
        await storage.close()
    print(summary.describe("imported"))
    return 0
