"""Pass 1 of ``basalt import``: read the whole snapshot and refuse it before
anything is written (see :mod:`basalt.cli.snapshot_import`).

Checked: every line of every ``documents.jsonl`` (JSON, a legal Convex value,
an ``_id`` of the table of its folder, the app's schema when one is given, and
with ``--append`` that the id does not exist yet), the line counts against the
manifest, and the bytes of every file against its ``_storage`` document (size
and sha256). ``zipfile`` checks each entry's CRC-32 as it is read to its end,
so the callers also catch its errors (a damaged entry).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from basalt.errors import InvalidValue, SchemaValidationError
from basalt.runtime.files import STORAGE_TABLE
from basalt.schema import SchemaDefinition
from basalt.storage.base import Document, Persistence
from basalt.values.ids import table_number_of
from basalt.values.model import check_value
from basalt.values.wire import loads

from .progress import Progress
from .snapshot import DOCUMENTS, Manifest, SnapshotError, TableEntry

Mode = Literal["append", "replace"]
#: How many schema violations are listed before the check stops validating.
MAX_VIOLATIONS = 10
_CHUNK = 1 << 20


@dataclass(slots=True)
class CheckedFile:
    entry: str
    sha256: str
    size: int


@dataclass(slots=True)
class Checked:
    """What pass 1 learned: the files to store, by storage id."""

    files: dict[str, CheckedFile] = field(default_factory=dict)


def read_documents(zf: zipfile.ZipFile, entry: str) -> Iterator[tuple[int, int, Any]]:
    """``(line number, line size, document)`` for each line of a JSONL entry."""
    try:
        stream = zf.open(entry)
    except KeyError:
        raise SnapshotError(
            f"the snapshot has no {entry}, yet its manifest lists the table; nothing was imported"
        ) from None
    with stream:
        for line_no, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            try:
                doc = loads(raw)
            except InvalidValue as exc:
                raise SnapshotError(
                    f"{entry} line {line_no}: {exc.message}; nothing was imported"
                ) from None
            yield line_no, len(raw), doc


def _check_document(doc: Any, table: TableEntry, where: str) -> str:
    """The id of a well-formed document of ``table``; raises otherwise."""
    if not isinstance(doc, dict):
        raise SnapshotError(f"{where}: a document must be a JSON object; nothing was imported")
    doc_id = doc.get("_id")
    number = table_number_of(doc_id)
    if number is None:
        raise SnapshotError(f"{where}: _id {doc_id!r} is not a document id; nothing was imported")
    if number != table.number:
        raise SnapshotError(
            f"{where}: document {doc_id} belongs to table number {number}, not to "
            f"{table.name!r} (number {table.number}); nothing was imported"
        )
    if type(doc.get("_creationTime")) is not float:
        raise SnapshotError(f"{where}: document {doc_id} has no _creationTime (a float)")
    try:
        check_value(doc, what=f"document {doc_id}")
    except InvalidValue as exc:
        raise SnapshotError(f"{where}: {exc.message}; nothing was imported") from None
    return str(doc_id)


def _file_facts(doc: Document, where: str) -> tuple[str, int]:
    sha, size = doc.get("sha256"), doc.get("size")
    try:
        ok = type(sha) is str and len(base64.b64decode(sha, validate=True)) == 32
    except ValueError:
        ok = False
    if not ok or type(size) is not float or size < 0 or size != int(size):
        raise SnapshotError(f"{where}: file {doc['_id']} needs a base64 sha256 and a size")
    return str(sha), int(size)


async def check_snapshot(
    zf: zipfile.ZipFile,
    storage: Persistence,
    manifest: Manifest,
    mode: Mode,
    schema: SchemaDefinition | None,
    progress: TextIO | None,
) -> Checked:
    names = {t.number: t.name for t in manifest.tables}

    def id_table(doc_id: str) -> str | None:
        number = table_number_of(doc_id)
        return None if number is None else names.get(number)

    violations: list[str] = []
    facts: dict[str, tuple[str, int]] = {}
    exported = [t for t in manifest.tables if t.exported]
    bar = Progress(progress, "checking documents", sum(t.documents for t in exported))
    for table in exported:
        count = 0
        async with storage.read() as tx:
            for line_no, _, doc in read_documents(zf, table.entry):
                where = f"{table.entry} line {line_no}"
                doc_id = _check_document(doc, table, where)
                if schema is not None and len(violations) < MAX_VIOLATIONS:
                    try:
                        schema.validate_document(
                            table.name, doc, document_id=doc_id, id_table=id_table
                        )
                    except SchemaValidationError as exc:
                        violations.append(f"{where}: {exc.message}")
                if mode == "append" and await tx.get(doc_id) is not None:
                    raise SnapshotError(
                        f"document {doc_id} (table {table.name!r}) already exists in this "
                        "database: --append never overwrites; nothing was imported (--replace "
                        "empties the snapshot's tables first)"
                    )
                if table.name == STORAGE_TABLE:
                    facts[doc_id] = _file_facts(doc, where)
                count += 1
                bar.advance(label=f"checking {table.name}")
        if count != table.documents:
            raise SnapshotError(
                f"{table.entry} holds {count} documents but the manifest says "
                f"{table.documents}: the snapshot is damaged; nothing was imported"
            )
    bar.close()
    if violations:
        more = " (and maybe more)" if len(violations) >= MAX_VIOLATIONS else ""
        raise SnapshotError(
            f"documents of the snapshot do not match the app's schema{more}; nothing was "
            "imported (--no-validate imports them anyway):\n  " + "\n  ".join(violations)
        )
    return Checked(_check_files(zf, facts, progress))


def _check_files(
    zf: zipfile.ZipFile, facts: dict[str, tuple[str, int]], progress: TextIO | None
) -> dict[str, CheckedFile]:
    """Hash every file entry and match it with its ``_storage`` document."""
    found: dict[str, CheckedFile] = {}
    prefix = f"{STORAGE_TABLE}/"
    total = sum(s for _, s in facts.values())
    bar = Progress(progress if facts else None, "checking files", total, in_bytes=True)
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name == prefix + DOCUMENTS or info.is_dir():
            continue
        storage_id = name[len(prefix) :].split(".", 1)[0]
        if storage_id not in facts:
            raise SnapshotError(f"{name}: no _storage document has this id; nothing was imported")
        if storage_id in found:
            raise SnapshotError(f"{name}: a second entry for file {storage_id}")
        sha, size = facts[storage_id]
        digest, seen = hashlib.sha256(), 0
        with zf.open(info) as stream:
            while data := stream.read(_CHUNK):
                digest.update(data)
                seen += len(data)
                bar.advance(len(data))
        if seen != size or base64.b64encode(digest.digest()).decode() != sha:
            raise SnapshotError(
                f"{name}: the bytes do not match the size and sha256 of file {storage_id}; "
                "nothing was imported"
            )
        found[storage_id] = CheckedFile(name, sha, size)
    bar.close()
    missing = sorted(set(facts) - set(found))
    if missing:
        others = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SnapshotError(
            f"the bytes of file {missing[0]}{others} are missing from the snapshot; nothing "
            "was imported"
        )
    return found
