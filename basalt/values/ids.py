"""Convex document ids ("id v6"), see protocol.md §4.2.

Binary layout::

    VInt(table_number) ‖ internal_id (16 bytes) ‖ footer (2 bytes, little-endian)

* VInt: 7 bits per byte, least significant group first, high bit = "more follows";
  at most 5 bytes; the table number is a u32 ≥ 1.
* footer: ``fletcher16(all preceding bytes) ^ 0`` (0 is the format version), where
  ``c0 = Σ bytes mod 256``, ``c1 = Σ running c0 mod 256``, footer = ``c1 << 8 | c0``.
* text: base32 in RFC-4648 bit order (most significant 5 bits first, zero bits
  padding the last character, no ``=``) over the lowercase Crockford alphabet.

A 1..5-byte VInt gives 19..23 bytes, so 31, 32, 34, 36 or 37 characters; tables
numbered 128..16383 give 32. Decoding is canonical: a text is accepted only if
re-encoding the decoded id reproduces it exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from itertools import accumulate

from basalt.errors import InvalidValue

__all__ = [
    "decode_id",
    "encode_id",
    "is_valid_id",
    "new_id",
    "new_internal_id",
    "table_number_of",
]

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
INTERNAL_ID_LENGTH = 16
ID_LENGTHS = frozenset((31, 32, 34, 36, 37))
_MAX_TABLE_NUMBER = (1 << 32) - 1
_VERSION = 0
_MS_PER_DAY = 86_400_000

# Python's int(text, 32) reads the digits "0-9a-v"; map the Crockford alphabet onto
# them and delete every other ASCII character, so a bad character shortens the text.
_TO_INT32_DIGITS: dict[int, str | None] = dict.fromkeys(range(128))
_TO_INT32_DIGITS.update(
    {ord(c): "0123456789abcdefghijklmnopqrstuv"[i] for i, c in enumerate(ALPHABET)}
)
# 10 bits → two characters, for encoding two characters per step.
_PAIRS = [ALPHABET[i >> 5] + ALPHABET[i & 31] for i in range(1024)]


def _fletcher16(data: bytes) -> int:
    running = list(accumulate(data))
    return ((sum(running) & 0xFF) << 8) | (running[-1] & 0xFF)


@lru_cache(maxsize=1024)
def _vint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _base32(data: bytes) -> str:
    if len(data) == 20:  # the ids of tables 128..16383 (every user table): unrolled
        n = int.from_bytes(data, "big")
        p = _PAIRS
        return "".join(
            (
                p[n >> 150], p[(n >> 140) & 1023], p[(n >> 130) & 1023], p[(n >> 120) & 1023],
                p[(n >> 110) & 1023], p[(n >> 100) & 1023], p[(n >> 90) & 1023],
                p[(n >> 80) & 1023], p[(n >> 70) & 1023], p[(n >> 60) & 1023],
                p[(n >> 50) & 1023], p[(n >> 40) & 1023], p[(n >> 30) & 1023],
                p[(n >> 20) & 1023], p[(n >> 10) & 1023], p[n & 1023],
            )
        )  # fmt: skip
    bits = len(data) * 8
    chars = -(-bits // 5)
    n = int.from_bytes(data, "big") << (chars * 5 - bits)
    pairs = _PAIRS
    out = [pairs[(n >> shift) & 1023] for shift in range((chars >> 1) * 10 - 10, -1, -10)]
    if chars & 1:
        out.insert(0, ALPHABET[n >> ((chars - 1) * 5)])
    return "".join(out)


def _check_table_number(table_number: int) -> None:
    if type(table_number) is not int or not 1 <= table_number <= _MAX_TABLE_NUMBER:
        raise InvalidValue(
            f"Invalid id: table number must be an int in 1..{_MAX_TABLE_NUMBER}, "
            f"not {table_number!r}"
        )


def _text(table_number: int, internal_id: bytes) -> str:
    """The id text, from arguments already checked."""
    body = _vint(table_number) + internal_id
    footer = _fletcher16(body) ^ _VERSION
    return _base32(body + footer.to_bytes(2, "little"))


def encode_id(table_number: int, internal_id: bytes) -> str:
    """The id text of the document ``internal_id`` (16 bytes) in table ``table_number``."""
    _check_table_number(table_number)
    if type(internal_id) is not bytes or len(internal_id) != INTERNAL_ID_LENGTH:
        raise InvalidValue(f"Invalid id: the internal id must be {INTERNAL_ID_LENGTH} bytes")
    return _text(table_number, internal_id)


def _decode(text: str) -> tuple[int, bytes] | str:
    """The decoded id, or the reason ``text`` is not a valid id."""
    length = len(text)
    if length not in ID_LENGTHS:
        return f"an id has 31, 32, 34, 36 or 37 characters, not {length}"
    digits = text.translate(_TO_INT32_DIGITS) if text.isascii() else ""
    if len(digits) != length:
        return "it contains a character outside the id alphabet"
    nbytes = length * 5 // 8
    pad = length * 5 - nbytes * 8
    n = int(digits, 32)
    if n & ((1 << pad) - 1):
        return "it is not canonical (nonzero padding bits)"
    data = (n >> pad).to_bytes(nbytes, "big")
    vint_len = nbytes - INTERNAL_ID_LENGTH - 2
    table_number = 0
    for i in range(vint_len):
        byte = data[i]
        more = byte & 0x80
        if more != (0x80 if i < vint_len - 1 else 0):
            return "its table number is malformed"
        table_number |= (byte & 0x7F) << (7 * i)
    if vint_len > 1 and data[vint_len - 1] == 0:
        return "it is not canonical (overlong table number)"
    if table_number == 0 or table_number > _MAX_TABLE_NUMBER:
        return f"table number {table_number} is out of range"
    footer = data[-2] | (data[-1] << 8)
    if _fletcher16(data[:-2]) ^ _VERSION != footer:
        return "its checksum does not match"
    return table_number, data[vint_len:-2]


# Only texts of a valid length reach the cache, so junk cannot fill it with big strings.
_decode_cached = lru_cache(maxsize=1 << 14)(_decode)


def decode_id(text: str) -> tuple[int, bytes]:
    """``(table_number, internal_id)`` of an id; raises :class:`InvalidValue` if invalid."""
    if type(text) is not str:
        raise InvalidValue(f"Invalid id {text!r}: an id must be a string")
    result = _decode_cached(text) if len(text) in ID_LENGTHS else _decode(text)
    if isinstance(result, str):
        shown = text if len(text) <= 64 else text[:61] + "..."
        raise InvalidValue(f"Invalid id {shown!r}: {result}")
    return result


def is_valid_id(text: object) -> bool:
    """Whether ``text`` is a well-formed id (any table)."""
    return type(text) is str and len(text) in ID_LENGTHS and type(_decode_cached(text)) is tuple


def table_number_of(text: object) -> int | None:
    """The table number of the id ``text``, or ``None`` if it is not a valid id.

    Results are cached, so checking the same id repeatedly is a dict lookup.
    """
    if type(text) is not str or len(text) not in ID_LENGTHS:
        return None
    result = _decode_cached(text)
    return result[0] if type(result) is tuple else None


class _RandomPool:
    """Bytes from ``os.urandom``, fetched 4 KiB at a time.

    One ``getrandom`` system call per id costs more than the rest of making
    it; the pool makes one call per 512 ids. A forked child starts with an
    empty pool, so parent and child never hand out the same bytes.
    """

    __slots__ = ("_buffer", "_position")

    SIZE = 4096

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0

    def reset(self) -> None:
        self._buffer = b""
        self._position = 0

    def take(self, n: int) -> bytes:
        position = self._position
        if position + n > len(self._buffer):
            self._buffer = os.urandom(max(self.SIZE, n))
            position = 0
        self._position = position + n
        return self._buffer[position : position + n]


_pool = _RandomPool()
os.register_at_fork(after_in_child=_pool.reset)


def new_internal_id(now_ms: float, rand: Callable[[int], bytes] = _pool.take) -> bytes:
    """A fresh internal id: 6 bytes of the big-endian millisecond time, 8
    random bytes, then the big-endian u16 day number.

    Convex fills the first 14 bytes with random bytes; clients treat ids as
    opaque, so Basalt leads with the time instead: new ids of a table sort
    after older ones, which keeps inserts at the end of the storage B-trees
    (fewer pages written per commit). 64 random bits keep ids unguessable
    enough to be unique. The day number (days since the Unix epoch of
    ``now_ms``) wraps at 2**16, as the real server's ``u16`` cast does.
    """
    random_part = rand(8)
    if len(random_part) != 8:
        raise ValueError(f"rand(8) returned {len(random_part)} bytes")
    return _internal_id(now_ms, random_part)


def _internal_id(now_ms: float, random_part: bytes) -> bytes:
    ms = int(now_ms) & 0xFFFF_FFFF_FFFF
    day = int(now_ms // _MS_PER_DAY) & 0xFFFF
    return ms.to_bytes(6, "big") + random_part + day.to_bytes(2, "big")


def new_id(table_number: int, now_ms: float) -> str:
    """The text of a fresh id in table ``table_number``: what
    ``encode_id(table_number, new_internal_id(now_ms))`` gives, without
    checking again what it made itself (every insert makes one)."""
    _check_table_number(table_number)
    return _text(table_number, _internal_id(now_ms, _pool.take(8)))
