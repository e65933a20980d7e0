"""Order-preserving binary keys for Convex values (index keys).

The Convex total order, lowest first::

    (missing) < null < int64 < float64 < boolean < string < bytes < array < object

* int64 by number; float64 by IEEE-754 totalOrder (-NaN < -inf < … < -0.0 < 0.0
  < … < inf < NaN, NaNs ordered by their bits); false < true;
* strings by their UTF-8 bytes (the same as code point order); bytes
  lexicographically;
* arrays element by element, a shorter array first when it is a prefix;
* objects as their ``(name, value)`` pairs in sorted name order, compared pair by
  pair (name first), a shorter object first when it is a prefix.

Encoding (every value starts with a tag byte in 0x01..0x0F)::

    MISSING  01                 string   07 escaped-utf8 00 00
    null     02                 bytes    08 escaped-bytes 00 00
    int64    03 u64-be(v + 2**63)         array    09 element* 00
    float64  04 u64-be(totalOrder bits)   object   0A (07 escaped-name 00 00, value)* 00
    false    05, true 06

"Escaped" means every 0x00 is written 0x00 0xFF, so 0x00 0x00 ends the string and
sorts below any continuation. Encodings are self-delimiting, so a key (the
concatenation of its parts' encodings) compares like the tuple of its parts and
the encoding of a field prefix is a byte prefix of the whole key. Plain ``bytes``
comparison of two encodings agrees with :func:`compare`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final, final

from basalt.errors import InvalidValue

from .int64 import Int64, int64
from .model import Value, bad_type_reason

__all__ = [
    "MISSING",
    "Missing",
    "compare",
    "decode_key",
    "encode_key",
    "encode_value",
    "key_prefixes",
    "prefix_successor",
]


@final
class Missing:
    """The type of :data:`MISSING`: an absent field in an index key (below null)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


#: An absent field; it sorts below every value (including null).
MISSING: Final = Missing()

_TAG_MISSING = 0x01
_TAG_NULL = 0x02
_TAG_INT = 0x03
_TAG_FLOAT = 0x04
_TAG_FALSE = 0x05
_TAG_TRUE = 0x06
_TAG_STR = 0x07
_TAG_BYTES = 0x08
_TAG_ARRAY = 0x09
_TAG_OBJECT = 0x0A

_pack_tag_u64 = struct.Struct(">BQ").pack
_unpack_u64 = struct.Struct(">Q").unpack
_unpack_u64_from = struct.Struct(">Q").unpack_from
_pack_f64 = struct.Struct(">d").pack
_unpack_f64 = struct.Struct(">d").unpack
_pack_u64 = struct.Struct(">Q").pack

_SIGN = 1 << 63
_ALL = (1 << 64) - 1


def _float_bits(x: float) -> int:
    """The unsigned key of ``x`` under IEEE-754 totalOrder."""
    u: int = _unpack_u64(_pack_f64(x))[0]
    return u ^ _ALL if u & _SIGN else u | _SIGN


def _encode_into(value: Any, out: bytearray) -> None:
    t = type(value)
    if t is str:
        b = value.encode("utf-8")
        if b"\x00" in b:
            b = b.replace(b"\x00", b"\x00\xff")
        out.append(_TAG_STR)
        out += b
        out += b"\x00\x00"
    elif t is int or t is Int64:
        try:
            out += _pack_tag_u64(_TAG_INT, value + _SIGN)
        except struct.error:
            raise InvalidValue(f"Invalid value: int {value} is out of the int64 range") from None
    elif t is float:
        u = _unpack_u64(_pack_f64(value))[0]
        out += _pack_tag_u64(_TAG_FLOAT, u ^ _ALL if u & _SIGN else u | _SIGN)
    elif value is None:
        out.append(_TAG_NULL)
    elif t is bool:
        out.append(_TAG_TRUE if value else _TAG_FALSE)
    elif t is list:
        out.append(_TAG_ARRAY)
        for item in value:
            _encode_into(item, out)
        out.append(0)
    elif t is dict:
        out.append(_TAG_OBJECT)
        try:
            names = sorted(value)
        except TypeError:
            names = list(value)  # mixed key types: the check below reports one
        for key in names:
            if type(key) is not str:
                raise InvalidValue(f"Invalid value: field name {key!r} must be a string")
            b = key.encode("utf-8")
            if b"\x00" in b:
                b = b.replace(b"\x00", b"\x00\xff")
            out.append(_TAG_STR)
            out += b
            out += b"\x00\x00"
            _encode_into(value[key], out)
        out.append(0)
    elif t is bytes:
        out.append(_TAG_BYTES)
        out += value.replace(b"\x00", b"\x00\xff") if b"\x00" in value else value
        out += b"\x00\x00"
    elif value is MISSING:
        out.append(_TAG_MISSING)
    else:
        raise InvalidValue(f"Invalid value: {bad_type_reason(value)}")


def encode_value(value: object) -> bytes:
    """The order-preserving encoding of one value (or :data:`MISSING`).

    Raises :class:`InvalidValue` for something that is not a Convex value (only
    types and the int64 range are checked).
    """
    out = bytearray()
    try:
        _encode_into(value, out)
    except (UnicodeEncodeError, RecursionError) as exc:
        raise _not_encodable(exc) from None
    return bytes(out)


def encode_key(values: Sequence[Any]) -> bytes:
    """The key of a tuple of values: the concatenation of their encodings."""
    out = bytearray()
    try:
        for value in values:
            # The common index fields inline (the same bytes as _encode_into).
            t = type(value)
            if t is float:
                u = _unpack_u64(_pack_f64(value))[0]
                out += _pack_tag_u64(_TAG_FLOAT, u ^ _ALL if u & _SIGN else u | _SIGN)
            elif t is str and value.isascii() and "\x00" not in value:
                out.append(_TAG_STR)
                out += value.encode("ascii")
                out += b"\x00\x00"
            else:
                _encode_into(value, out)
    except (UnicodeEncodeError, RecursionError) as exc:
        raise _not_encodable(exc) from None
    return bytes(out)


def _not_encodable(exc: Exception) -> InvalidValue:
    if isinstance(exc, RecursionError):
        return InvalidValue("Invalid value: value is nested too deeply")
    return InvalidValue("Invalid value: string contains a lone surrogate and is not valid UTF-8")


# --------------------------------------------------------------------------- decoding


def _read_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read escaped bytes starting at ``pos``; return them and the position after 00 00."""
    end = data.find(b"\x00", pos)
    if end < 0 or end + 1 >= len(data):
        raise InvalidValue("Invalid key: unterminated string or bytes")
    if data[end + 1] == 0:
        return data[pos:end], end + 2
    parts = []
    while True:
        if end < 0 or end + 1 >= len(data):
            raise InvalidValue("Invalid key: unterminated string or bytes")
        parts.append(data[pos:end])
        nxt = data[end + 1]
        if nxt == 0:
            return b"".join(parts), end + 2
        if nxt != 0xFF:
            raise InvalidValue(f"Invalid key: bad escape 00 {nxt:02x} at offset {end}")
        parts.append(b"\x00")
        pos = end + 2
        end = data.find(b"\x00", pos)


def _decode_at(data: bytes, pos: int) -> tuple[Value | Missing, int]:
    try:
        tag = data[pos]
    except IndexError:
        raise InvalidValue("Invalid key: truncated") from None
    pos += 1
    if tag == _TAG_STR:
        raw, pos = _read_escaped(data, pos)
        try:
            return raw.decode("utf-8"), pos
        except UnicodeDecodeError:
            raise InvalidValue("Invalid key: string is not UTF-8") from None
    if tag in (_TAG_INT, _TAG_FLOAT):
        if pos + 8 > len(data):
            raise InvalidValue("Invalid key: truncated number")
        u: int = _unpack_u64_from(data, pos)[0]
        if tag == _TAG_INT:
            return int64(u - _SIGN), pos + 8
        u = u ^ _SIGN if u & _SIGN else u ^ _ALL
        return float(_unpack_f64(_pack_u64(u))[0]), pos + 8
    if tag == _TAG_NULL:
        return None, pos
    if tag in (_TAG_FALSE, _TAG_TRUE):
        return tag == _TAG_TRUE, pos
    if tag == _TAG_BYTES:
        return _read_escaped(data, pos)
    if tag == _TAG_ARRAY:
        items: list[Value] = []
        while pos < len(data) and data[pos] != 0:
            item, pos = _decode_at(data, pos)
            if isinstance(item, Missing):
                raise InvalidValue("Invalid key: MISSING inside an array")
            items.append(item)
        if pos >= len(data):
            raise InvalidValue("Invalid key: unterminated array")
        return items, pos + 1
    if tag == _TAG_OBJECT:
        obj: dict[str, Value] = {}
        while pos < len(data) and data[pos] != 0:
            if data[pos] != _TAG_STR:
                raise InvalidValue("Invalid key: object field name is not a string")
            raw, pos = _read_escaped(data, pos + 1)
            item, pos = _decode_at(data, pos)
            if isinstance(item, Missing):
                raise InvalidValue("Invalid key: MISSING inside an object")
            try:
                obj[raw.decode("utf-8")] = item
            except UnicodeDecodeError:
                raise InvalidValue("Invalid key: field name is not UTF-8") from None
        if pos >= len(data):
            raise InvalidValue("Invalid key: unterminated object")
        return obj, pos + 1
    if tag == _TAG_MISSING:
        return MISSING, pos
    raise InvalidValue(f"Invalid key: unknown tag {tag:#04x} at offset {pos - 1}")


def decode_key(data: bytes) -> list[Value | Missing]:
    """Inverse of :func:`encode_key`: the list of values (``MISSING`` for absent ones)."""
    if type(data) is not bytes:
        data = bytes(data)  # bytearray or memoryview from a storage driver
    out: list[Value | Missing] = []
    pos = 0
    n = len(data)
    while pos < n:
        value, pos = _decode_at(data, pos)
        out.append(value)
    return out


def _skip_escaped(data: bytes, pos: int) -> int:
    while True:
        pos = data.index(0, pos)
        if data[pos + 1] != 0xFF:
            return pos + 2
        pos += 2


def _skip_at(data: bytes, pos: int) -> int:
    """The position just after the value encoded at ``pos`` (no decoding)."""
    tag = data[pos]
    pos += 1
    if tag in (_TAG_INT, _TAG_FLOAT):
        return pos + 8
    if tag in (_TAG_STR, _TAG_BYTES):
        return _skip_escaped(data, pos)
    if tag == _TAG_ARRAY:
        while data[pos] != 0:
            pos = _skip_at(data, pos)
        return pos + 1
    if tag == _TAG_OBJECT:
        while data[pos] != 0:
            pos = _skip_at(data, _skip_at(data, pos))
        return pos + 1
    return pos  # MISSING, null, false, true: the tag alone


def key_prefixes(key: bytes) -> list[bytes]:
    """Every prefix of ``key`` that ends on a value boundary, shortest first:
    ``b""``, the first value's encoding, the first two values', …, the whole key.

    A range read through ``with_index(…, q.eq(a).eq(b)…)`` lies inside the keys
    starting with ``encode_key([a, b, …])``; the subscription index files ranges
    under that prefix and finds the ones a written key may fall into by looking
    up these prefixes.
    """
    out = [b""]
    pos, n = 0, len(key)
    try:
        while pos < n:
            pos = _skip_at(key, pos)
            out.append(key[:pos])
    except (IndexError, ValueError):
        raise InvalidValue(f"Invalid key: malformed at byte {pos}") from None
    return out


def prefix_successor(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix``: ``prefix + b"\\xff"``.

    ``prefix`` must be a whole key (a concatenation of complete value encodings,
    possibly empty). Any longer key with that prefix continues with a tag byte,
    which is at most 0x0F < 0xFF, so it sorts below ``prefix + b"\\xff"``; and a
    key that does not start with ``prefix`` differs from it at some byte before
    the end of ``prefix``, so it is on the same side of both. Hence the range
    ``[prefix, prefix_successor(prefix))`` holds exactly the keys with that prefix.
    (This is not true for a prefix cut in the middle of a string, where 0x00 0xFF
    escapes occur.)
    """
    return prefix + b"\xff"


# --------------------------------------------------------------------------- compare

_RANK: dict[type, int] = {
    Missing: 0,
    type(None): 1,
    int: 2,
    Int64: 2,
    float: 3,
    bool: 4,
    str: 5,
    bytes: 6,
    list: 7,
    dict: 8,
}


def _cmp(a: Any, b: Any) -> int:
    ta = type(a)
    tb = type(b)
    if ta is not tb:
        ra = _RANK.get(ta)
        rb = _RANK.get(tb)
        if ra is None or rb is None:
            bad = b if ra is not None else a
            raise InvalidValue(f"Invalid value: {bad_type_reason(bad)}")
        if ra != rb:
            return -1 if ra < rb else 1
        # an int and an Int64: both int64
        return -1 if a < b else (1 if a > b else 0)
    if ta is float:
        if a < b:
            return -1
        if a > b:
            return 1
        if a == b and a != 0.0:
            return 0
        # zeros of either sign, or NaN on either side: use totalOrder bits
        ka = _float_bits(a)
        kb = _float_bits(b)
        return -1 if ka < kb else (1 if ka > kb else 0)
    if ta is str or ta is int or ta is bytes or ta is bool or ta is Int64:
        return -1 if a < b else (1 if a > b else 0)
    if ta is list:
        for x, y in zip(a, b, strict=False):
            c = _cmp(x, y)
            if c:
                return c
        la = len(a)
        lb = len(b)
        return -1 if la < lb else (1 if la > lb else 0)
    if ta is dict:
        names_a = sorted(a)
        names_b = sorted(b)
        for x, y in zip(names_a, names_b, strict=False):
            if x != y:
                return -1 if x < y else 1
            c = _cmp(a[x], b[y])
            if c:
                return c
        la = len(names_a)
        lb = len(names_b)
        return -1 if la < lb else (1 if la > lb else 0)
    if ta is Missing or a is None:
        return 0
    raise InvalidValue(f"Invalid value: {bad_type_reason(a)}")


def compare(a: object, b: object) -> int:
    """Compare two values (or :data:`MISSING`) in the Convex order: -1, 0 or 1.

    Agrees with comparing :func:`encode_value` results as bytes.
    """
    return _cmp(a, b)
