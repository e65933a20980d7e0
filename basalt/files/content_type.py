"""The content type of a stored file: one media type, parsed strictly.

A stored file is served from the API origin with the type it was stored with,
so that type must mean exactly one thing to every browser. Browsers read a
``Content-Type`` header leniently (a comma-separated list counts by its last
entry, so ``text/plain;,text/html`` is HTML to them while a naive parser sees
``text/plain``). Basalt therefore accepts only the grammar of RFC 9110
§8.3.1::

    media-type = type "/" subtype *( OWS ";" OWS parameter )
    parameter  = token "=" ( token / quoted-string )

and stores the canonical spelling (:func:`canonical_content_type`): type,
subtype and parameter names in lowercase, ``; `` between parts, a value
quoted only when it must be. Anything else (a list, a missing subtype, a
parameter without a value, control or non-ASCII characters) is refused with
:class:`~basalt.files.base.InvalidContentType` naming what is wrong, before
any byte of the file is stored.
"""

from __future__ import annotations

import re
from typing import Final

from .base import InvalidContentType

#: The longest content type kept (a longer one is refused).
MAX_CONTENT_TYPE_LENGTH: Final = 1024

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN_RE = re.compile(_TOKEN)
# A quoted-string without escapes: visible ASCII and spaces, no '"' nor '\'.
_QUOTED = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_MEDIA = re.compile(rf"({_TOKEN})/({_TOKEN})")
_PARAMETER = re.compile(rf"({_TOKEN})=({_TOKEN}|{_QUOTED})")
_OWS = " \t"


def _refuse(text: str, what: str, why: str) -> InvalidContentType:
    shown = text if len(text) <= 100 else text[:100] + "…"
    return InvalidContentType(
        f"{what} {shown!r} is not one media type ({why}): expected "
        '"type/subtype", optionally followed by "; name=value" parameters, '
        'e.g. "image/png" or "text/plain; charset=utf-8"'
    )


def canonical_content_type(text: str, what: str = "the content type") -> str:
    """The canonical spelling of the media type ``text``; raises
    :class:`~basalt.files.base.InvalidContentType` if it is not exactly one,
    with a message that names it as ``what`` (the header or argument it came in)."""
    if len(text) > MAX_CONTENT_TYPE_LENGTH:
        raise InvalidContentType(f"{what} is longer than {MAX_CONTENT_TYPE_LENGTH} characters")
    if not text.isascii() or any((c < " " and c != "\t") or c == "\x7f" for c in text):
        raise _refuse(text, what, "it has control or non-ASCII characters")
    if "," in text and '"' not in text:
        raise _refuse(text, what, "a comma separates several types, and browsers use the last one")
    head = text.split(";", 1)[0]
    media = _MEDIA.fullmatch(head.strip(_OWS))
    if media is None:
        raise _refuse(text, what, f"{head.strip(_OWS)!r} is not type/subtype")
    parts = [f"{media.group(1).lower()}/{media.group(2).lower()}"]
    rest = text[len(head) :]  # empty, or parameters each after a ';'
    while rest:
        rest = rest[1:].lstrip(_OWS)
        if not rest or rest.startswith(";"):
            continue  # an empty parameter, which RFC 9110 allows
        # One parameter at a time: a quoted value may hold ';' or ','.
        match = _PARAMETER.match(rest)
        if match is None:
            shown = rest.split(";", 1)[0].strip(_OWS)
            raise _refuse(text, what, f"{shown!r} is not a name=value parameter")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"') and _TOKEN_RE.fullmatch(value[1:-1]):
            value = value[1:-1]  # quoted without need
        parts.append(f"{name}={value}")
        rest = rest[match.end() :].lstrip(_OWS)
        if rest and not rest.startswith(";"):
            raise _refuse(text, what, f"{rest!r} follows the parameter {name}")
    return "; ".join(parts)


def media_type(canonical: str) -> str:
    """The ``type/subtype`` of a canonical content type (without parameters)."""
    return canonical.split(";", 1)[0]
