"""An upload sent by hand over a socket, so that a test decides when each byte
of the body goes out (and can read the answer before sending them all)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import httpx

#: Seconds an answer the server owes may take (a healthy server answers in ms).
PATIENCE = 15.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawUpload:
    """``POST url`` with a ``Content-Length`` of ``length`` bytes, or chunked
    (``length`` None), whose body the test sends piece by piece."""

    def __init__(self, url: str, length: int | None, headers: dict[str, str] | None = None):
        self.url = httpx.URL(url)
        self.length = length
        self.headers = headers or {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> RawUpload:
        """Connect and send the request line and headers (no body yet)."""
        url = self.url
        self._reader, self._writer = await asyncio.open_connection(url.host, url.port)
        framing = (
            f"Content-Length: {self.length}"
            if self.length is not None
            else "Transfer-Encoding: chunked"
        )
        head = f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\n{framing}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        self._writer.write(f"{head}\r\n".encode())
        await self._writer.drain()
        return self

    async def send(self, data: bytes) -> None:
        assert self._writer is not None
        if self.length is None:
            self._writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self._writer.write(data)
        await self._writer.drain()

    async def finish(self) -> None:
        """End a chunked body (a counted one ends with its last byte)."""
        if self.length is None:
            assert self._writer is not None
            self._writer.write(b"0\r\n\r\n")
            await self._writer.drain()

    async def answer(self, timeout: float = PATIENCE) -> Answer:
        """The server's answer; fails if none comes within ``timeout`` seconds."""
        return await asyncio.wait_for(self._read_answer(), timeout)

    async def _read_answer(self) -> Answer:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(status_line.split()[1]), headers, body)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
