"""The file service a runtime holds: blob store, upload tokens, URLs, and the
system transactions that record files."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from basalt.errors import BasaltError, WriteConflict
from basalt.files import (
    DEFAULT_TTL_S,
    BlobReader,
    BlobStore,
    InsufficientStorage,
    InvalidUploadToken,
    StoredBlob,
    TooManyUploads,
    UploadToken,
    UploadTokenSigner,
    UrlKeyCodec,
    blob_key,
    canonical_content_type,
    internal_id_of_key,
)
from basalt.storage.base import Commit, Document, Persistence, ReadTransaction
from basalt.values.ids import decode_id, encode_id, new_internal_id

from ..clock import Clock, CreationTimes
from ..conflicts import MAX_CONFLICT_RETRIES, retry_conflicts
from ..query import Query
from ..transaction import Limits, TxState
from .ctx import (
    STORAGE_TABLE,
    StorageActions,
    StorageReader,
    StorageWriter,
    key_of,
)

T = TypeVar("T")
log = logging.getLogger("basalt.files")

UPLOAD_TOKENS_TABLE: Final = "_upload_tokens"
SECRET_META_KEY: Final = "files.secret"
#: The default limit on one upload (and on one ``ctx.storage.store``).
MAX_UPLOAD_BYTES: Final = 1 << 30
#: How many uploads one server process takes at once by default.
MAX_CONCURRENT_UPLOADS: Final = 16
#: The free disk space below which a local blob store takes no more bytes.
MIN_FREE_BYTES: Final = 1 << 30
#: Bytes a store or upload receives between two looks at the free disk space.
_FREE_CHECK_EVERY = 16 << 20
#: Seconds between two log records about uploads refused for lack of disk.
_LOW_DISK_LOG_EVERY_S = 60.0
#: How long a deletion waits for its mutation's commit before it is forgotten.
_PENDING_DELETE_TTL_S = 600.0
#: How many spent-token records one pruning transaction looks at.
_PRUNE_PAGE = 1000
#: Blobs younger than this are never swept as orphans: their upload may not
#: have recorded its file yet (on another server process, say).
ORPHAN_MIN_AGE_S: Final = 3600.0
#: How often uploads start a sweep of orphan blobs.
_SWEEP_EVERY_MS = 86_400_000.0


class RuntimeParts(Protocol):
    """What the service needs from the runtime it serves."""

    @property
    def storage(self) -> Persistence: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def creation_times(self) -> CreationTimes: ...
    @property
    def limits(self) -> Limits: ...
    async def read(self, body: Callable[[ReadTransaction], Awaitable[T]]) -> T: ...


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file as the server serves it (``sha256`` in base64)."""

    storage_id: str
    key: str
    size: int
    sha256: str
    content_type: str | None


def _not_started() -> BasaltError:
    return BasaltError("the file service is not started", code="ServiceUnavailable")


def _token_used() -> InvalidUploadToken:
    return InvalidUploadToken(
        "this upload URL was already used: generate a new one for each upload",
        code="UploadTokenUsed",
    )


def _token_in_use() -> InvalidUploadToken:
    return InvalidUploadToken(
        "this upload URL is in use by an upload under way: generate a new one for each upload",
        code="UploadTokenInUse",
    )


class FileService:
    """File storage for one runtime (see the package docstring).

    ``origin`` is the public URL of the deployment, which ``get_url`` and
    ``generate_upload_url`` start with. ``secret`` signs upload tokens and keys
    URLs; when None, one is generated on first start and kept in the database
    (meta key ``files.secret``), so all server processes on a database share it.

    What uploads may take: ``max_upload_bytes`` per file (also per
    ``ctx.storage.store``), ``max_concurrent_uploads`` uploads at once in this
    process, and never the last ``min_free_bytes`` of the blob store's disk
    (a store that knows its free space: local disk). Each is checked before
    any byte of an upload is read, the disk again as the bytes arrive.
    """

    def __init__(
        self,
        blobs: BlobStore,
        *,
        origin: str = "http://127.0.0.1:3210",
        secret: bytes | None = None,
        token_ttl_s: float = DEFAULT_TTL_S,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS,
        min_free_bytes: int = MIN_FREE_BYTES,
        orphan_min_age_s: float = ORPHAN_MIN_AGE_S,
    ) -> None:
        self.blobs = blobs
        #: blobs younger than this are never swept as orphans
        self.orphan_min_age_s = orphan_min_age_s
        self.origin = origin
        self.max_upload_bytes = max_upload_bytes
        self.max_concurrent_uploads = max_concurrent_uploads
        self.min_free_bytes = min_free_bytes
        #: the ids of the tokens of the uploads under way in this process
        self._claimed: set[bytes] = set()
        self._low_disk_logged_at = -math.inf
        self._secret = secret
        self._token_ttl_s = token_ttl_s
        self._runtime: RuntimeParts | None = None
        self._tokens: UploadTokenSigner | None = None
        self._urls: UrlKeyCodec | None = None
        self._unlisten: Callable[[], None] | None = None
        self._pending_deletes: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: when (runtime clock, ms) spent tokens were last pruned, and orphans swept
        self._tokens_pruned_at = -math.inf
        self._swept_at = -math.inf

    # -- lifecycle -----------------------------------------------------------
    async def start(self, runtime: RuntimeParts) -> None:
        """Load the secret and open the blob store (the runtime's storage must
        be open already)."""
        self._runtime = runtime
        secret = self._secret if self._secret is not None else await self._load_secret()
        self._tokens = UploadTokenSigner(
            secret, ttl_s=self._token_ttl_s, now_ms=runtime.clock.now_ms
        )
        self._urls = UrlKeyCodec(secret)
        await self.blobs.open()
        self._unlisten = runtime.storage.on_commit(self._on_commit)
        # A crash between storing an upload's bytes and recording the file
        # leaves a blob no row names: look for such blobs now and then.
        self._swept_at = runtime.clock.now_ms()
        self._spawn(self._sweep_quietly())

    async def stop(self) -> None:
        """Finish the blob deletions under way and close the blob store."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.blobs.close()

    async def _load_secret(self) -> bytes:
        storage = self.runtime.storage
        stored = await storage.get_meta(SECRET_META_KEY)
        if stored is None:
            async with storage.write() as tx:
                # Look again under the write lock: another process may have won.
                stored = await storage.get_meta(SECRET_META_KEY)
                if stored is None:
                    stored = secrets.token_hex(32)
                    await tx.set_meta(SECRET_META_KEY, stored)
                    await tx.commit()
        return bytes.fromhex(stored)

    @property
    def runtime(self) -> RuntimeParts:
        if self._runtime is None:
            raise _not_started()
        return self._runtime

    @property
    def tokens(self) -> UploadTokenSigner:
        if self._tokens is None:
            raise _not_started()
        return self._tokens

    # -- ctx.storage (the runtime's Services protocol) -----------------------
    def for_query(self, state: TxState) -> StorageReader:
        return StorageReader(self, state)

    def for_mutation(self, state: TxState) -> StorageWriter:
        return StorageWriter(self, state)

    def for_action(self, runtime: Any = None) -> StorageActions:
        return StorageActions(self)

    # -- names ---------------------------------------------------------------
    def url_of(self, storage_id: str) -> str:
        """The download URL of a stored file."""
        if self._urls is None:
            raise _not_started()
        uuid_text = self._urls.encode(decode_id(storage_id)[1])
        return f"{self.origin.rstrip('/')}/api/storage/{uuid_text}"

    def upload_url(self) -> str:
        """A fresh upload URL (valid for ``token_ttl_s`` seconds, for one upload)."""
        text, _ = self.tokens.issue()
        return f"{self.origin.rstrip('/')}/api/storage/upload?token={text}"

    # -- Basalt's own transactions -------------------------------------------
    def _state(self, tx: ReadTransaction) -> TxState:
        runtime = self.runtime
        return TxState(
            tx,
            schema=None,
            limits=runtime.limits,
            creation_times=runtime.creation_times,
            system=True,
        )

    async def read(self, body: Callable[[TxState], Awaitable[T]]) -> T:
        """Run ``body`` in a read transaction that may read system tables."""
        return await self.runtime.read(lambda tx: body(self._state(tx)))

    async def write(self, body: Callable[[TxState], Awaitable[T]]) -> T:
        """Run ``body`` in a write transaction that may write system tables, and
        commit it (tried ``MAX_CONFLICT_RETRIES`` times in all on write conflicts)."""

        async def once() -> T:
            async with self.runtime.storage.write() as tx:
                result = await body(self._state(tx))
                await tx.commit()
            return result

        try:
            return await retry_conflicts(once, retries=MAX_CONFLICT_RETRIES - 1)
        except WriteConflict:
            raise BasaltError(
                f"a file-storage transaction kept conflicting with other writes and was given "
                f"up after {MAX_CONFLICT_RETRIES} retries",
                code="OptimisticConcurrencyControlFailure",
            ) from None

    # -- storing -------------------------------------------------------------
    @property
    def uploads_under_way(self) -> int:
        """How many uploads this process is receiving now."""
        return len(self._claimed)

    async def upload(
        self,
        token_text: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        expected_sha256: bytes | None = None,
        declared_size: int | None = None,
    ) -> str:
        """Accept one upload: check the token, store the bytes, then record the
        file and spend the token in one transaction; returns the storage id.

        Everything that can refuse the upload is checked before ``chunks`` is
        read: the token (genuine, unexpired, not spent, not claimed by an
        upload under way in this process), the content type, the number of
        uploads under way, and the free disk space (``declared_size``: the
        bytes the client announced). The token is claimed for as long as its
        upload runs, so a concurrent second use is refused at once; across
        server processes, the transaction that spends it still lets one win.
        """
        token = self.tokens.verify(token_text)
        if content_type is not None:
            content_type = canonical_content_type(content_type, "the Content-Type header")
        # Checked and claimed with no await in between.
        if token.token_id in self._claimed:
            raise _token_in_use()
        if len(self._claimed) >= self.max_concurrent_uploads:
            raise TooManyUploads(
                f"the server is receiving {len(self._claimed)} uploads, as many as it takes "
                "at once: try again shortly"
            )
        self._claimed.add(token.token_id)
        try:
            if await self.read(lambda state: _token_recorded(state.tx, token)):
                raise _token_used()  # refused before any byte is stored
            await self._check_free_space(declared_size or 0)

            async def spend(state: TxState) -> None:
                tx = state.writer
                if await _token_recorded(tx, token):
                    raise _token_used()
                table = await tx.ensure_table(UPLOAD_TOKENS_TABLE)
                doc = {
                    "_id": encode_id(table.number, token.token_id),
                    "_creationTime": state.creation_times.next(),
                    "expiresAt": float(token.expires_at_ms),
                }
                await tx.insert(table, doc)

            storage_id = await self.store(
                chunks, content_type, expected_sha256=expected_sha256, before_insert=spend
            )
        finally:
            self._claimed.discard(token.token_id)
        self._after_upload()
        return storage_id

    async def _check_free_space(self, needed: int) -> None:
        """Raise :class:`InsufficientStorage` if storing ``needed`` more bytes
        would leave the blob store's disk with less than ``min_free_bytes``."""
        free = await self.blobs.free_bytes()
        if free is None or free - needed >= self.min_free_bytes:
            return
        now = time.monotonic()
        if now - self._low_disk_logged_at >= _LOW_DISK_LOG_EVERY_S:
            self._low_disk_logged_at = now
            log.warning(
                "refusing to store files: %d MiB free for %r, and %d MiB must stay free "
                "(BASALT_MIN_FREE_DISK_MB)",
                free >> 20,
                self.blobs,
                self.min_free_bytes >> 20,
            )
        raise InsufficientStorage(
            "the server is short of disk space and stores no more files for now"
        )

    async def _watched(self, chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """``chunks``, with a look at the free disk space every few megabytes."""
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received >= _FREE_CHECK_EVERY:
                received = 0
                await self._check_free_space(0)
            yield chunk

    def _after_upload(self) -> None:
        """Uploads make spent-token records and blobs; in the background they
        also forget the expired records (at most once per token lifetime) and
        sweep orphan blobs (at most once a day)."""
        now = self.runtime.clock.now_ms()
        if now - self._tokens_pruned_at >= self._token_ttl_s * 1000:
            self._tokens_pruned_at = now
            self._spawn(self._prune_tokens())
        if now - self._swept_at >= _SWEEP_EVERY_MS:
            self._swept_at = now
            self._spawn(self._sweep_quietly())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_quietly(self) -> None:
        try:
            swept = await self.sweep_orphans()
        except Exception:
            log.exception("sweeping orphan blobs failed (tried again later)")
            return
        if swept:
            log.warning("deleted %d orphan blob(s) that no _storage row named", swept)

    async def sweep_orphans(self, older_than_s: float | None = None) -> int:
        """Delete the blobs stored more than ``older_than_s`` seconds ago
        (default: ``orphan_min_age_s``) that no ``_storage`` row names, left by a
        crash between storing the bytes and recording the file, or by a deletion
        that failed; returns how many."""
        if older_than_s is None:
            older_than_s = self.orphan_min_age_s
        swept = 0
        keys: list[str] = []
        async for key in self.blobs.keys(older_than_s):
            keys.append(key)
            if len(keys) == 100:
                swept += await self._sweep(keys)
                keys = []
        if keys:
            swept += await self._sweep(keys)
        return swept

    async def _sweep(self, keys: list[str]) -> int:
        async def unnamed(state: TxState) -> list[str]:
            table = state.tx.catalog.table_by_name(STORAGE_TABLE)
            if table is None:
                return keys
            found = []
            for key in keys:
                doc_id = encode_id(table.number, internal_id_of_key(key))
                if await state.tx.get(doc_id) is None:
                    found.append(key)
            return found

        orphans = await self.read(unnamed)
        for key in orphans:
            await self.blobs.delete(key)
        return len(orphans)

    async def _prune_tokens(self) -> None:
        try:
            while await self.prune_spent_tokens(_PRUNE_PAGE) == _PRUNE_PAGE:
                pass
        except Exception:
            log.exception("pruning spent upload tokens failed (tried again later)")

    async def store(
        self,
        chunks: AsyncIterable[bytes],
        content_type: str | None = None,
        *,
        expected_sha256: bytes | None = None,
        before_insert: Callable[[TxState], Awaitable[None]] | None = None,
    ) -> str:
        """Store a file and return its storage id. ``before_insert`` runs in the
        transaction that records the file (and can veto it by raising).

        The content type is stored in its canonical spelling, and refused with
        :class:`~basalt.files.InvalidContentType` unless it is one media type;
        the bytes are refused once the blob store's disk is short of space."""
        if content_type is not None:
            content_type = canonical_content_type(
                content_type, "the content_type argument of storage.store"
            )
        await self._check_free_space(0)
        internal_id = new_internal_id(self.runtime.clock.now_ms())
        key = blob_key(internal_id)
        watched = self._watched(chunks)
        try:
            blob = await self.blobs.put(
                key, watched, max_size=self.max_upload_bytes, expected_sha256=expected_sha256
            )
        finally:
            await watched.aclose()

        async def record(state: TxState) -> str:
            if before_insert is not None:
                await before_insert(state)
            return await _insert_file(state, internal_id, blob, content_type)

        try:
            return await self.write(record)
        except BaseException:
            await asyncio.shield(self.blobs.delete(key))
            raise

    # -- serving -------------------------------------------------------------
    async def lookup(self, url_uuid: str) -> StoredFile | None:
        """The file a download URL names, or None (also for any malformed uuid)."""
        internal_id = None if self._urls is None else self._urls.decode(url_uuid)
        if internal_id is None:
            return None

        async def find(state: TxState) -> Document | None:
            table = state.tx.catalog.table_by_name(STORAGE_TABLE)
            if table is None:
                return None
            return await state.tx.get(encode_id(table.number, internal_id))

        doc = await self.read(find)
        if doc is None:
            return None
        return StoredFile(
            storage_id=doc["_id"],
            key=blob_key(internal_id),
            size=int(doc["size"]),
            sha256=doc["sha256"],
            content_type=doc.get("contentType"),
        )

    async def open(self, file: StoredFile, start: int = 0, end: int | None = None) -> BlobReader:
        """A reader of the file's bytes ``[start, end)`` (close it when done)."""
        return await self.blobs.read(file.key, start, end)

    async def prune_spent_tokens(self, limit: int = _PRUNE_PAGE) -> int:
        """Forget up to ``limit`` spent tokens that have expired (an expired token
        is refused by its signature alone); returns how many. Records are
        scanned oldest first: one made before ``now - ttl`` is for a token issued
        before then, so it has expired. Uploads call it in the background, at
        most once per token lifetime."""
        now = self.runtime.clock.now_ms()
        cutoff = now - self._token_ttl_s * 1000

        async def prune(state: TxState) -> int:
            table = state.tx.catalog.table_by_name(UPLOAD_TOKENS_TABLE)
            if table is None:
                return 0
            old = (
                await Query(state, UPLOAD_TOKENS_TABLE, system=True)
                .with_index("by_creation_time", lambda q: q.lt("_creationTime", cutoff))
                .take(limit)
            )
            expired = [doc for doc in old if doc["expiresAt"] <= now]  # (if the TTL changed)
            for doc in expired:
                await state.writer.delete(table, doc)
            return len(expired)

        return await self.write(prune)

    # -- deleting ------------------------------------------------------------
    def delete_after_commit(self, storage_id: str) -> None:
        """Delete the blob of ``storage_id`` once a commit that wrote that id is
        durable (a mutation deleted the row; if it rolls back, nothing happens)."""
        now = time.monotonic()
        pending = self._pending_deletes
        if len(pending) >= 1000:
            for stale in [k for k, t in pending.items() if now - t > _PENDING_DELETE_TTL_S]:
                del pending[stale]
        pending[storage_id] = now

    def _on_commit(self, commit: Commit) -> None:
        pending = self._pending_deletes
        if not pending:
            return
        for doc_id in commit.doc_ids:
            if pending.pop(doc_id, None) is not None:
                task = asyncio.get_running_loop().create_task(self._collect(doc_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _collect(self, storage_id: str) -> None:
        """Delete the blob of a file whose row is gone (checked again: the commit
        that named it might have been another write)."""

        async def exists(state: TxState) -> bool:
            return await state.tx.get(storage_id) is not None

        try:
            gone = not await self.read(exists)
        except Exception:
            log.exception("could not check whether the file %s is deleted", storage_id)
            return
        if gone:
            await self.delete_blob(storage_id)

    async def delete_blob(self, storage_id: str) -> None:
        """Delete the blob of a file whose ``_storage`` row is gone. A failure is
        logged, not raised: the file is gone for users either way, and the blob
        is left orphaned (never served)."""
        try:
            await self.blobs.delete(key_of(storage_id))
        except Exception:
            log.exception("could not delete the blob of the deleted file %s", storage_id)


async def _token_recorded(tx: ReadTransaction, token: UploadToken) -> bool:
    table = tx.catalog.table_by_name(UPLOAD_TOKENS_TABLE)
    return table is not None and await tx.get(encode_id(table.number, token.token_id)) is not None


async def _insert_file(
    state: TxState, internal_id: bytes, blob: StoredBlob, content_type: str | None
) -> str:
    tx = state.writer
    table = await tx.ensure_table(STORAGE_TABLE)
    doc_id = encode_id(table.number, internal_id)
    doc: Document = {
        "_id": doc_id,
        "_creationTime": state.creation_times.next(),
        "sha256": base64.b64encode(blob.sha256).decode("ascii"),
        "size": float(blob.size),
    }
    if content_type is not None:
        doc["contentType"] = content_type
    await tx.insert(table, doc)
    state.count_write(0)
    return doc_id
