"""Encoding of a commit's write set in the commit log (shared by the engines).

The write set is stored with :mod:`marshal` (format version 4, which every
CPython since 3.4 reads): it holds only ints, bytes and strings, and is the
fastest encoding the standard library offers for them.
"""

from __future__ import annotations

import marshal

from .base import Commit, KeyWrite

_VERSION = 4


def encode_writes(commit: Commit) -> bytes:
    """The bytes stored for a commit's write set."""
    return marshal.dumps((commit.doc_ids, [(k.index_id, k.key) for k in commit.keys]), _VERSION)


def decode_commit(ts: int, data: bytes) -> Commit:
    """The commit stored at ``ts`` with write-set bytes ``data``."""
    doc_ids, keys = marshal.loads(data)
    return Commit(ts=ts, doc_ids=list(doc_ids), keys=[KeyWrite(i, k) for i, k in keys])
