"""Which subscriptions a commit invalidates, found without scanning them all.

Every range a query read lies inside the keys that start with its ``eq``
prefix (``with_index("by_channel", lambda q: q.eq("channel", c))`` → the
encoding of ``c``). Ranges are filed per index under that prefix. For a key a
commit wrote, the candidates are the ranges filed under the key's
value-boundary prefixes (a handful of dictionary lookups), each then checked
exactly. Document ids read with ``db.get`` are filed by id. A commit that
touches none of 10,000 subscriptions therefore costs a few lookups per written
key, whatever the number of subscriptions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from basalt.runtime.transaction import KeyRange, ReadSet
from basalt.storage.base import CATALOG_INDEX_ID, Commit
from basalt.values.keys import key_prefixes

E = TypeVar("E", bound=Hashable)


class SubscriptionIndex(Generic[E]):
    """Read sets of entries ``E``, searchable by a commit's write set.

    Adding, replacing and removing an entry costs time in proportion to its own
    read set, not to how many other entries share its prefixes.
    """

    __slots__ = ("_by_id", "_by_index", "_filed")

    def __init__(self) -> None:
        # index id → prefix → entry → its ranges under that prefix
        self._by_index: dict[int, dict[bytes, dict[E, list[KeyRange]]]] = {}
        self._by_id: dict[str, set[E]] = {}
        self._filed: dict[E, ReadSet] = {}

    def __len__(self) -> int:
        return len(self._filed)

    def __iter__(self) -> Iterator[E]:
        """The entries filed."""
        return iter(list(self._filed))

    def add(self, entry: E, read_set: ReadSet) -> None:
        """File ``entry`` under what it read (replacing what it read before)."""
        if entry in self._filed:
            self.remove(entry)
        self._filed[entry] = read_set
        for r in read_set.ranges:
            by_prefix = self._by_index.setdefault(r.index_id, {})
            by_prefix.setdefault(r.prefix, {}).setdefault(entry, []).append(r)
        for doc_id in read_set.ids:
            self._by_id.setdefault(doc_id, set()).add(entry)

    def remove(self, entry: E) -> None:
        read_set = self._filed.pop(entry, None)
        if read_set is None:
            return
        for r in read_set.ranges:
            by_prefix = self._by_index.get(r.index_id)
            if by_prefix is None:
                continue
            filed = by_prefix.get(r.prefix)
            if filed is None:
                continue
            filed.pop(entry, None)
            if not filed:
                del by_prefix[r.prefix]
                if not by_prefix:
                    del self._by_index[r.index_id]
        for doc_id in read_set.ids:
            entries = self._by_id.get(doc_id)
            if entries is not None:
                entries.discard(entry)
                if not entries:
                    del self._by_id[doc_id]

    def matches(self, commit: Commit) -> set[E]:
        """The entries whose read set ``commit`` wrote into."""
        hits: set[E] = set()
        by_id = self._by_id
        if by_id:
            for doc_id in commit.doc_ids:
                found = by_id.get(doc_id)
                if found:
                    hits.update(found)
        by_index = self._by_index
        if not by_index:
            return hits
        for write in commit.keys:
            by_prefix = by_index.get(write.index_id)
            if not by_prefix:
                continue
            key = write.key
            if write.index_id == CATALOG_INDEX_ID:
                prefixes = [key]
            elif len(by_prefix) == 1 and b"" in by_prefix:
                prefixes = [b""]
            else:
                prefixes = key_prefixes(key)
            for prefix in prefixes:
                filed = by_prefix.get(prefix)
                if filed:
                    for entry, ranges in filed.items():
                        if entry not in hits:
                            for r in ranges:
                                if r.contains(key):
                                    hits.add(entry)
                                    break
        return hits
