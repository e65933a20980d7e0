"""Blobs as files on local disk.

Layout under ``root``::

    root/.tmp/<random>.part       uploads in progress (same filesystem as the blobs)
    root/3f/3f2a…-…-…             complete blobs, fanned out by the key's first two characters

A blob is written to a temporary file, flushed and fsynced, checked (size
limit, digest), then renamed into place with :func:`os.replace` and the folder
fsynced: the rename is atomic, so a reader sees either no file or the whole
file, and after a crash either the blob or an orphaned ``.part`` file, which
:meth:`LocalBlobStore.open` removes once it is older than a day. Disk work runs
on a small thread pool of the store's own, so the event loop never waits for
the disk; the bytes are hashed on that pool too, a few megabytes at a time, while
the next megabyte arrives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from .base import (
    READ_CHUNK,
    BlobNotFound,
    DigestMismatch,
    StoredBlob,
    UploadTooLarge,
)
from .keys import check_key, is_uuid_text

log = logging.getLogger("basalt.files")

T = TypeVar("T")

#: Bytes gathered before one write to disk (an upload holds at most three such buffers).
WRITE_BUFFER = 4 << 20
#: ``.part`` files older than this (seconds) are left over from a crash.
STALE_TEMP_AGE_S = 86_400.0
_TMP = ".tmp"
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _settle(future: concurrent.futures.Future[Any] | None) -> None:
    """Wait for a job already running on the pool (at most one buffer's work)
    before its file descriptor is closed: closing it under a running write
    could let the number be reused by another file."""
    if future is not None:
        concurrent.futures.wait([future])


class LocalBlobStore:
    """A :class:`~basalt.files.base.BlobStore` in a folder on local disk.

    ``fsync=False`` skips the fsyncs (faster, but a power loss may then lose
    blobs whose upload was acknowledged).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        read_chunk: int = READ_CHUNK,
        threads: int = 4,
    ) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        self.read_chunk = read_chunk
        self._threads = threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._prepare)

    def _prepare(self) -> None:
        # Blobs are private to their owner: folders 0700 (an existing root with
        # a looser mode is tightened), files 0600 (mkstemp's mode, kept by the
        # rename). The process umask is left alone.
        root = self.root
        if not root.exists():
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(root.stat().st_mode)
        if mode & 0o077:
            try:
                root.chmod(mode & 0o700)
            except OSError as exc:
                log.warning("could not make %s private to its owner: %s", root, exc)
        tmp = root / _TMP
        tmp.mkdir(mode=0o700, exist_ok=True)
        cutoff = time.time() - STALE_TEMP_AGE_S
        for entry in os.scandir(tmp):
            with contextlib.suppress(OSError):
                if entry.name.endswith(".part") and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="basalt-blobs"
            )
        return self._executor.submit(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def path_of(self, key: str) -> Path:
        """The file of a blob (the key is validated first)."""
        key = check_key(key)
        return self.root / key[:2] / key

    # -- writing -------------------------------------------------------------
    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        expected_sha256: bytes | None = None,
    ) -> StoredBlob:
        final = self.path_of(key)
        tmp_dir = self.root / _TMP
        try:
            fd, tmp_name = tempfile.mkstemp(suffix=".part", dir=tmp_dir)
        except FileNotFoundError:
            await self.open()
            fd, tmp_name = tempfile.mkstemp(suffix=".part", dir=tmp_dir)
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray()
        # Hashing and writing run as two lanes on the pool (hashlib and os.write
        # release the GIL), each with at most one buffer in flight, while the
        # event loop gathers the next buffer.
        hashing: concurrent.futures.Future[None] | None = None
        writing: concurrent.futures.Future[None] | None = None
        committing = False  # once True, the commit job owns (and closes) fd
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise UploadTooLarge(f"the file is larger than the limit of {max_size} bytes")
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    hashing, writing = await self._flush(fd, hasher, buffer, hashing, writing)
                    buffer = bytearray()
            hashing, writing = await self._flush(fd, hasher, buffer, hashing, writing)
            await asyncio.wrap_future(hashing)
            await asyncio.wrap_future(writing)
            digest = hasher.digest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise DigestMismatch(
                    "the uploaded bytes do not match the sha-256 digest sent with them"
                )
            writing = self._submit(self._commit, fd, tmp_name, final)
            committing = True
            await asyncio.wrap_future(writing)
        except BaseException:
            _settle(hashing)
            _settle(writing)
            if committing and writing is not None and not writing.cancelled():
                if writing.exception() is None:
                    # cancelled while the rename completed: take the blob back
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(final)
            else:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return StoredBlob(key, size, digest)

    async def _flush(
        self,
        fd: int,
        hasher: Any,
        data: bytearray,
        hashing: concurrent.futures.Future[None] | None,
        writing: concurrent.futures.Future[None] | None,
    ) -> tuple[concurrent.futures.Future[None], concurrent.futures.Future[None]]:
        """Hand ``data`` to both lanes once each has finished its previous buffer."""
        if hashing is not None:
            await asyncio.wrap_future(hashing)
        if writing is not None:
            await asyncio.wrap_future(writing)
        return self._submit(hasher.update, data), self._submit(_write_all, fd, data)

    def _commit(self, fd: int, tmp_name: str, final: Path) -> None:
        try:
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        folder = final.parent
        created = not folder.is_dir()
        if created:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.replace(tmp_name, final)
        if self.fsync:
            _fsync_dir(folder)
            if created:
                _fsync_dir(folder.parent)

    # -- reading -------------------------------------------------------------
    async def read(self, key: str, start: int = 0, end: int | None = None) -> _LocalReader:
        path = self.path_of(key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None
        try:
            size = os.fstat(fd).st_size
            stop = size if end is None else min(end, size)
            if not 0 <= start <= stop:
                raise ValueError(f"bad range {start}..{end} of a {size}-byte blob")
        except BaseException:
            os.close(fd)
            raise
        return _LocalReader(self, fd, start, stop)

    async def exists(self, key: str) -> bool:
        return await self._run(self.path_of(key).is_file)

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        with contextlib.suppress(FileNotFoundError):
            await self._run(os.unlink, path)

    async def keys(self, older_than_s: float) -> AsyncIterator[str]:
        cutoff = time.time() - older_than_s
        folders = await self._run(self._folders)
        for folder in folders:  # one fan-out folder at a time, read on the pool
            for key in await self._run(self._old_keys, folder, cutoff):
                yield key

    async def free_bytes(self) -> int:
        """Bytes free for an unprivileged writer on the store's file system."""
        return await self._run(self._free_bytes)

    def _free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _folders(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(e.path for e in os.scandir(self.root) if len(e.name) == 2 and e.is_dir())
        return []

    @staticmethod
    def _old_keys(folder: str, cutoff: float) -> list[str]:
        keys = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                with contextlib.suppress(OSError):
                    if is_uuid_text(entry.name) and entry.stat().st_mtime < cutoff:
                        keys.append(entry.name)
        return keys


class _LocalReader:
    """Reads ``[position, stop)`` of an open file, a chunk at a time."""

    __slots__ = ("_fd", "_pending", "_position", "_stop", "_store")

    def __init__(self, store: LocalBlobStore, fd: int, start: int, stop: int) -> None:
        self._store = store
        self._fd = fd
        self._position = start
        self._stop = stop
        self._pending: concurrent.futures.Future[bytes] | None = None

    def __aiter__(self) -> _LocalReader:
        return self

    async def __anext__(self) -> bytes:
        if self._fd < 0 or self._position >= self._stop:
            await self.aclose()
            raise StopAsyncIteration
        n = min(self._store.read_chunk, self._stop - self._position)
        self._pending = self._store._submit(os.pread, self._fd, n, self._position)
        data = await asyncio.wrap_future(self._pending)
        self._pending = None
        if not data:  # the file is shorter than it was: end here
            await self.aclose()
            raise StopAsyncIteration
        self._position += len(data)
        return data

    async def aclose(self) -> None:
        if self._fd >= 0:
            _settle(self._pending)
            os.close(self._fd)
            self._fd = -1

    async def __aenter__(self) -> _LocalReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
