"""JSON encodings of Convex values: the client wire formats and the storage codec.

* ``convex_encoded_json`` (:func:`to_convex_json`, :func:`from_convex_json`,
  :func:`dumps`, :func:`loads`): the typed format the official clients speak
  (protocol.md §2). An :class:`~basalt.values.int64.Int64` becomes
  ``{"$integer": base64}``; a plain ``int`` becomes a float64 number (written
  ``3.0``), as the official Python client sends one, and must lie within ±2**53
  where float64 is exact; NaN, ±inf and -0.0 become ``{"$float": base64}``;
  bytes become ``{"$bytes": base64}``. Read back, every JSON number is a float64
  and every ``$integer`` an ``Int64``.
* clean ``json`` (:func:`to_clean_json`): lossy, for humans and ``/api/run``.
* the storage codec (:func:`dumps_stored`, :func:`loads_stored`): how Basalt keeps
  documents. It is plain JSON (which already keeps ``5`` and ``5.0`` apart and,
  in Python, writes NaN/Infinity/-0.0 exactly) plus ``{"$bytes": base64}``, which
  cannot clash with user data because field names never start with ``$``. Every
  stored int is an int64 and reads back as an ``Int64``.
"""

from __future__ import annotations

import binascii
import json
import json.encoder
import math
import struct
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from basalt.errors import InvalidValue

from .int64 import MAX_SAFE_INTEGER, Int64, int64
from .model import (
    MAX_VALUE_DEPTH,
    JSONValue,
    Value,
    _BadValue,
    _invalid,
    bad_type_reason,
    quote_text,
)

__all__ = [
    "dumps",
    "dumps_stored",
    "from_convex_json",
    "loads",
    "loads_stored",
    "parse_json",
    "to_clean_json",
    "to_convex_json",
]

_b64encode = binascii.b2a_base64
_pack_q = struct.Struct("<q").pack
_pack_d = struct.Struct("<d").pack
_unpack_q = struct.Struct("<q").unpack
_unpack_d = struct.Struct("<d").unpack
_isfinite = math.isfinite
_copysign = math.copysign


def _b64(data: bytes) -> str:
    return _b64encode(data, newline=False).decode("ascii")


def _b64decode(text: object, what: str) -> bytes:
    if type(text) is not str:
        raise _BadValue(f"{what} must hold a base64 string, not {type(text).__name__}")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadValue(f"{what} holds invalid base64 {text[:40]!r}: {exc}") from None


def _is_plain_float(x: float) -> bool:
    """Finite and not -0.0: written as a JSON number rather than ``$float``."""
    return _isfinite(x) and (x != 0.0 or _copysign(1.0, x) > 0.0)


# --------------------------------------------------------------------------- convex_encoded_json


def _encode_int(v: int) -> JSONValue:
    try:
        return {"$integer": _b64(_pack_q(v))}
    except struct.error:
        raise _BadValue(f"int {v} is out of the int64 range") from None


def _int_number(v: int) -> float:
    """A plain ``int`` as the float64 number clients receive."""
    if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
        return float(v)
    if -(1 << 63) <= v < 1 << 63:
        raise _BadValue(
            f"int {v} is beyond ±2**53, so the float64 number a Python int crosses to "
            f"clients as cannot hold it exactly: send an int64 instead, Int64({v}) "
            "(from basalt import Int64) or a v.int64() validator"
        )
    raise _BadValue(f"int {v} is out of the int64 range")


def _encode(value: Any) -> JSONValue:
    t = type(value)
    if t is str or t is bool or value is None:
        return value  # type: ignore[no-any-return]
    if t is float:
        if _is_plain_float(value):
            return value  # type: ignore[no-any-return]
        return {"$float": _b64(_pack_d(value))}
    if t is int:
        return _int_number(value)
    if t is Int64:
        return _encode_int(value)
    if t is dict:
        key: Any = None
        try:
            out: dict[str, JSONValue] = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise _BadValue(
                        f"field name {key!r} ({type(key).__name__}) must be a string", skip_key=True
                    )
                out[key] = _encode(item)
            return out
        except _BadValue as err:
            err.add_key(key)
            raise
    if t is list:
        i = 0
        try:
            items: list[JSONValue] = []
            for item in value:
                items.append(_encode(item))
                i += 1
            return items
        except _BadValue as err:
            err.path.append(i)
            raise
    if t is bytes:
        return {"$bytes": _b64(value)}
    raise _BadValue(bad_type_reason(value))


def to_convex_json(value: object) -> JSONValue:
    """Encode a Convex value as ``convex_encoded_json`` (a ``json.dumps``-able object),
    as clients receive it: an ``Int64`` as an int64, a plain ``int`` as a float64
    number (an :class:`InvalidValue` naming the path when it is beyond ±2**53).

    Only the types are checked here (and the number ranges); field names and
    limits are :func:`~basalt.values.model.check_value`'s job.
    """
    try:
        return _encode(value)
    except _BadValue as err:
        raise _invalid("value", err) from None
    except RecursionError:
        raise InvalidValue("Invalid value: value is nested too deeply") from None


def _decode_special(key: str, payload: object) -> Value:
    if key == "$integer":
        data = _b64decode(payload, "$integer")
        if len(data) != 8:
            raise _BadValue(f"$integer must encode 8 bytes, not {len(data)}")
        return int64(_unpack_q(data)[0])
    if key == "$float":
        data = _b64decode(payload, "$float")
        if len(data) != 8:
            raise _BadValue(f"$float must encode 8 bytes, not {len(data)}")
        x = float(_unpack_d(data)[0])
        if _is_plain_float(x):
            raise _BadValue(
                f"$float is only for NaN, Infinity, -Infinity and -0.0, not {x!r}; "
                "write ordinary numbers as JSON numbers"
            )
        return x
    if key == "$bytes":
        return _b64decode(payload, "$bytes")
    raise _BadValue(f'field name {quote_text(key)} must not start with "$"')


def _decode(obj: Any, depth: int) -> Value:
    t = type(obj)
    if t is float:
        if not _isfinite(obj):  # parse_json refuses the literals: this number overflowed
            raise _BadValue(_OVERFLOW)
        return obj  # type: ignore[no-any-return]
    if t is str or t is bool or obj is None:
        return obj  # type: ignore[no-any-return]
    if t is int:
        try:
            return float(obj)
        except OverflowError:
            raise _BadValue(_OVERFLOW) from None
    if t is dict:
        if len(obj) == 1:  # maybe {"$integer": …}, {"$float": …} or {"$bytes": …}: a scalar
            for key, payload in obj.items():
                if type(key) is str and key.startswith("$"):
                    return _decode_special(key, payload)
        if depth <= 0:
            raise _BadValue(f"value is nested more than {MAX_VALUE_DEPTH} levels deep")
        out: dict[str, Value] = {}
        depth -= 1
        key = None
        try:
            for key, item in obj.items():
                if type(key) is not str:
                    raise _BadValue(
                        f"field name {key!r} ({type(key).__name__}) must be a string", skip_key=True
                    )
                if key.startswith("$"):
                    raise _BadValue(
                        f'field name {quote_text(key)} must not start with "$"', skip_key=True
                    )
                out[key] = _decode(item, depth)
        except _BadValue as err:
            err.add_key(key)
            raise
        return out
    if t is list:
        if depth <= 0:
            raise _BadValue(f"value is nested more than {MAX_VALUE_DEPTH} levels deep")
        depth -= 1
        i = 0
        try:
            items: list[Value] = []
            for item in obj:
                items.append(_decode(item, depth))
                i += 1
        except _BadValue as err:
            err.path.append(i)
            raise
        return items
    raise _BadValue(f"type {t.__name__} is not JSON")


def from_convex_json(obj: object) -> Value:
    """Decode a :func:`parse_json` result in ``convex_encoded_json`` into a Convex value.

    JSON integers (Python ``int``) become float64, ``$integer`` an ``Int64``.
    Raises :class:`InvalidValue` with the path for bad ``$integer``/``$float``/
    ``$bytes`` payloads, any other ``$`` field name, a plain number that is not
    finite (a JSON number beyond the float64 range, such as ``1e400``, reads as
    infinity: only ``$float`` spells NaN and ±Infinity), or nesting deeper than
    ``MAX_VALUE_DEPTH``. Field names are not otherwise checked (see ``check_value``).
    """
    try:
        return _decode(obj, MAX_VALUE_DEPTH)
    except _BadValue as err:
        raise _invalid("value", err) from None


# -- the JSON number rule, one for every client JSON (HTTP bodies, WebSocket frames) --
#
# Every JSON number is a float64 (protocol.md §2). NaN and ±Infinity exist only
# as {"$float": …}: the literals NaN/Infinity/-Infinity, which Python's json
# module would accept, are refused here, and a number too large for a float64
# (1e400, or 400 digits), which would silently become infinity, is refused by
# from_convex_json (checking there costs nothing on the path every value takes).

_FLOAT_HINT = 'write NaN and ±Infinity as {"$float": ...}'
_OVERFLOW = f"a number is outside the float64 range (it would read as ±Infinity; {_FLOAT_HINT})"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON ({_FLOAT_HINT})")


def parse_json(text: str | bytes) -> Any:
    """Parse JSON text from a client under the wire's number rule.

    Every number becomes a float64; the literals ``NaN``, ``Infinity`` and
    ``-Infinity`` are refused. Raises :class:`InvalidValue` whose message says
    what is wrong (without a prefix: the caller says what was being read).
    """
    try:
        return json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError included
        raise InvalidValue(str(exc)) from None
    except RecursionError:
        raise InvalidValue("it is nested too deeply") from None


def dumps(value: object) -> str:
    """``convex_encoded_json`` text of ``value`` (compact, UTF-8 kept as is)."""
    return json.dumps(
        to_convex_json(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def loads(text: str | bytes) -> Value:
    """Parse ``convex_encoded_json`` text; raises :class:`InvalidValue` on bad JSON."""
    try:
        obj = parse_json(text)
    except InvalidValue as exc:
        raise InvalidValue(f"Invalid JSON: {exc.message}") from None
    return from_convex_json(obj)


# --------------------------------------------------------------------------- clean json


def _clean(value: Any) -> JSONValue:
    t = type(value)
    if t is str or t is bool or value is None:
        return value  # type: ignore[no-any-return]
    if t is float:
        if _isfinite(value):
            return value  # type: ignore[no-any-return]
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if t is int:
        return _int_number(value)
    if t is Int64:
        return str(value)
    if t is dict:
        return {k: _clean(v) for k, v in value.items()}
    if t is list:
        return [_clean(v) for v in value]
    if t is bytes:
        return _b64(value)
    raise _BadValue(bad_type_reason(value))


def to_clean_json(value: object) -> JSONValue:
    """The lossy clean ``json`` form: int64 (an ``Int64``) → decimal string, a
    plain ``int`` → a number (as in :func:`to_convex_json`), NaN/±inf → "NaN",
    "Infinity", "-Infinity", bytes → base64 string; -0.0 stays a float."""
    try:
        return _clean(value)
    except _BadValue as err:
        raise _invalid("value", err) from None


# --------------------------------------------------------------------------- storage codec

# The one NaN that JSON's ``NaN`` literal reads back as. Others (-NaN, which is
# what ``inf - inf`` gives on x86, or NaNs with a payload) are stored as
# ``{"$float": base64}`` so that their bits, and so their index keys, survive.
_CANONICAL_NAN = _pack_d(math.nan)


def _stored_default(obj: object) -> JSONValue:
    if type(obj) is bytes:
        return {"$bytes": _b64(obj)}
    raise TypeError(f"type {type(obj).__name__} is not a Convex value")


def _make_stored_encoder() -> Callable[[object, int], Iterable[str]]:
    """Compact JSON, NaN/Infinity literals allowed, bytes through the default hook:
    ``encoder(value, 0)`` gives the text in pieces.

    ``JSONEncoder.encode`` builds its C encoder on every call; one built once
    and reused gives the same text, which matters on the write path.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or quote is None:  # no C accelerator: the pure-Python encoder
        encode = json.JSONEncoder(
            separators=(",", ":"),
            ensure_ascii=False,
            check_circular=False,
            allow_nan=True,
            default=_stored_default,
        ).encode
        return lambda value, _: (encode(value),)
    return make(None, _stored_default, quote, None, ":", ",", False, False, True)  # type: ignore[no-any-return]


_stored_encoder = _make_stored_encoder()


def _wrap_odd_nans(value: Any) -> Any:
    t = type(value)
    if t is float:
        if value != value:
            bits = _pack_d(value)
            if bits != _CANONICAL_NAN:
                return {"$float": _b64(bits)}
        return value
    if t is dict:
        return {k: _wrap_odd_nans(v) for k, v in value.items()}
    if t is list:
        return [_wrap_odd_nans(v) for v in value]
    return value


def _stored_hook(d: dict[str, Any]) -> Any:
    if len(d) == 1:
        payload = d.get("$bytes")
        if type(payload) is str:
            return binascii.a2b_base64(payload)
        payload = d.get("$float")
        if type(payload) is str:
            return _unpack_d(binascii.a2b_base64(payload))[0]
    return d


# Every stored int is an int64: it reads back as an Int64 (made without a range
# check: the text was written from a checked value).
_stored_int = partial(int.__new__, Int64)
_plain_decode = json.JSONDecoder(parse_int=_stored_int).decode
_hooked_decode = json.JSONDecoder(object_hook=_stored_hook, parse_int=_stored_int).decode


def dumps_stored(value: object) -> str:
    """The storage text of ``value``, which must already have passed ``check_value``.

    Exact round trip through :func:`loads_stored`: an int comes back as an
    ``Int64`` (an int that clients receive as int64), a float stays a float bit
    for bit (NaN payloads, ±inf and -0.0 included), bytes stay bytes.
    """
    text = "".join(_stored_encoder(value, 0))
    if "NaN" in text:  # rare: maybe a NaN that the NaN literal cannot represent
        text = "".join(_stored_encoder(_wrap_odd_nans(value), 0))
    return text


def loads_stored(text: str) -> Value:
    """Inverse of :func:`dumps_stored`."""
    if '"$' in text:  # maybe a $bytes/$float wrapper (or just a string starting with $)
        return _hooked_decode(text)  # type: ignore[no-any-return]
    return _plain_decode(text)  # type: ignore[no-any-return]
