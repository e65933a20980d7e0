"""The ``ctx.storage`` objects of queries, mutations and actions."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final

from basalt.errors import BasaltError
from basalt.files import blob_key
from basalt.storage.base import Document, TableInfo
from basalt.values.ids import decode_id, is_valid_id

from .. import misuse
from ..db import SystemReader
from ..transaction import TxState

if TYPE_CHECKING:
    from .service import FileService

STORAGE_TABLE: Final = "_storage"


class StorageArgumentError(BasaltError):
    """A storage call with something that is not an id of ``_storage``."""

    code = "InvalidArgument"
    http_status = 400


class StorageIdNotFound(BasaltError):
    code = "StorageIdNotFound"
    http_status = 404


def check_storage_id(storage_id: Any, state: TxState, what: str) -> str | None:
    """``storage_id`` if it can name a file; None if no file can have it (its
    table does not exist yet); raises :class:`StorageArgumentError` for
    anything else, such as an id of another table."""
    if not isinstance(storage_id, str) or not is_valid_id(storage_id):
        raise StorageArgumentError(
            f"Invalid argument `storageId` for `{what}`: {storage_id!r} is not a storage id"
        )
    table = state.tx.catalog.table_by_number(decode_id(storage_id)[0])
    if table is None:
        return None
    if table.name != STORAGE_TABLE:
        raise StorageArgumentError(
            f"Invalid argument `storageId` for `{what}`: {storage_id!r} is an id of table "
            f"{table.name!r}, not of {STORAGE_TABLE!r}"
        )
    return storage_id


def key_of(storage_id: str) -> str:
    """The blob key of a stored file (its internal id written as a UUID)."""
    return blob_key(decode_id(storage_id)[1])


async def find_file(state: TxState, storage_id: Any, what: str) -> Document | None:
    """The ``_storage`` document of ``storage_id`` (recorded in the read set)."""
    doc_id = check_storage_id(storage_id, state, what)
    return None if doc_id is None else await SystemReader(state).get(doc_id)


async def delete_file_row(state: TxState, storage_id: Any, what: str) -> str:
    """Delete the ``_storage`` document in ``state``'s transaction; returns its id."""
    doc = await find_file(state, storage_id, what)
    if doc is None:
        raise StorageIdNotFound(f"`{what}`: no stored file has the id {storage_id!r}")
    table = state.tx.catalog.table_by_name(STORAGE_TABLE)
    assert isinstance(table, TableInfo)
    await state.writer.delete(table, doc)
    state.count_write(0)
    return str(doc["_id"])


def _metadata(doc: Document) -> dict[str, Any]:
    return {
        "storageId": doc["_id"],
        "sha256": doc["sha256"],
        "size": doc["size"],
        "contentType": doc.get("contentType"),
    }


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class StorageReader:
    """``ctx.storage`` in a query: URLs and metadata of stored files. Reads are
    part of the query's read set, so a subscription sees a file appear or go."""

    __slots__ = ("_service", "_state")
    _missing: ClassVar[dict[str, str]] = misuse.STORAGE_READER

    def __init__(self, service: FileService, state: TxState) -> None:
        self._service = service
        self._state = state

    if not TYPE_CHECKING:  # a hint for what this kind of function lacks

        def __getattr__(self, name: str) -> Any:
            raise misuse.no_attribute(self, name, self._missing)

    async def get_url(self, storage_id: str) -> str | None:
        """The URL that serves the file, or None if there is no such file."""
        doc = await find_file(self._state, storage_id, "storage.get_url")
        return None if doc is None else self._service.url_of(doc["_id"])

    async def get_metadata(self, storage_id: str) -> dict[str, Any] | None:
        """``{storageId, sha256, size, contentType}`` of the file, or None
        (``ctx.db.system.get(storage_id)`` gives the document itself)."""
        doc = await find_file(self._state, storage_id, "storage.get_metadata")
        return None if doc is None else _metadata(doc)


class StorageWriter(StorageReader):
    """``ctx.storage`` in a mutation: also upload URLs and deletion."""

    __slots__ = ()
    _missing = misuse.STORAGE_WRITER

    async def generate_upload_url(self) -> str:
        """A URL to POST one file's bytes to, valid for an hour and for one upload."""
        return self._service.upload_url()

    def delete(self, storage_id: str) -> Coroutine[Any, Any, None]:
        """Delete the file when this mutation commits (its URL then answers 404);
        if the mutation fails, the file stays. Await it."""
        return self._state.track("ctx.storage.delete", self._delete(storage_id))

    async def _delete(self, storage_id: str) -> None:
        doc_id = await delete_file_row(self._state, storage_id, "storage.delete")
        self._service.delete_after_commit(doc_id)


class StorageActions:
    """``ctx.storage`` in an action: each call runs on its own; actions can also
    store and read bytes."""

    __slots__ = ("_service",)

    def __init__(self, service: FileService) -> None:
        self._service = service

    async def generate_upload_url(self) -> str:
        """A URL to POST one file's bytes to, valid for an hour and for one upload."""
        return self._service.upload_url()

    async def get_url(self, storage_id: str) -> str | None:
        """The URL that serves the file, or None if there is no such file."""
        doc = await self._service.read(lambda s: find_file(s, storage_id, "storage.get_url"))
        return None if doc is None else self._service.url_of(doc["_id"])

    async def get_metadata(self, storage_id: str) -> dict[str, Any] | None:
        """``{storageId, sha256, size, contentType}`` of the file, or None."""
        doc = await self._service.read(lambda s: find_file(s, storage_id, "storage.get_metadata"))
        return None if doc is None else _metadata(doc)

    async def delete(self, storage_id: str) -> None:
        """Delete the file now (its URL answers 404 from then on)."""
        service = self._service
        doc_id = await service.write(lambda s: delete_file_row(s, storage_id, "storage.delete"))
        await service.delete_blob(doc_id)

    async def store(
        self,
        data: bytes | bytearray | memoryview | AsyncIterable[bytes],
        content_type: str | None = None,
    ) -> str:
        """Store ``data`` (bytes, or an async iterable of byte chunks, which is
        streamed) as a new file; returns its storage id."""
        if isinstance(data, bytes | bytearray | memoryview):
            chunks: AsyncIterable[bytes] = _one_chunk(bytes(data))
        elif isinstance(data, AsyncIterable):
            chunks = data
        else:
            raise StorageArgumentError(
                "storage.store takes bytes or an async iterable of bytes, "
                f"not {type(data).__name__}"
            )
        if content_type is not None and not isinstance(content_type, str):
            raise StorageArgumentError("storage.store: content_type must be a string or None")
        return await self._service.store(chunks, content_type)

    async def get(self, storage_id: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        service = self._service
        doc = await service.read(lambda s: find_file(s, storage_id, "storage.get"))
        if doc is None:
            return None
        parts: list[bytes] = []
        async with await service.blobs.read(key_of(doc["_id"])) as reader:
            async for chunk in reader:
                parts.append(chunk)
        return b"".join(parts)
