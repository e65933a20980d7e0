"""Index keys: which bytes a document contributes to each index.

An index over fields ``(f1, …, fn)`` stores, for every document, the key
``encode_key([doc.f1, …, doc.fn, doc._creationTime])`` next to the document id.
A field that is absent is encoded as ``MISSING``, which sorts below ``null``.
Dotted paths (``"author.name"``) reach into nested objects.
"""

from __future__ import annotations

from typing import Any

from basalt.values.keys import MISSING, encode_key

from .base import Document, IndexInfo


def field_value(document: Document, path: str) -> Any:
    """The value at a dotted ``path`` of ``document``, or ``MISSING``."""
    if "." not in path:
        return document.get(path, MISSING)
    value: Any = document
    for part in path.split("."):
        if type(value) is not dict:
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def index_key(document: Document, index: IndexInfo) -> bytes:
    """The key ``document`` has in ``index``."""
    fields = index.fields
    if not fields:
        return encode_key((document["_creationTime"],))
    values = [field_value(document, f) for f in fields]
    values.append(document["_creationTime"])
    return encode_key(values)
