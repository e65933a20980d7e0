"""SubscriptionIndex: which filed read sets a commit's write set falls into,
found without scanning every subscription."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from basalt.runtime.transaction import KeyRange, ReadSet
from basalt.storage.base import CATALOG_INDEX_ID, Commit, KeyWrite
from basalt.sync import SubscriptionIndex
from basalt.values.keys import encode_key, prefix_successor

INDEX = 7
OTHER_INDEX = 8


def key(*values: Any) -> bytes:
    return encode_key(values)


def eq_range(*prefix: Any, index_id: int = INDEX) -> KeyRange:
    """What ``with_index(..., q.eq(...)...)`` records when it read the whole range."""
    p = encode_key(prefix)
    return KeyRange(index_id, p, p, prefix_successor(p) if prefix else None)


def bounded(prefix: tuple[Any, ...], lo: Any, hi: Any, index_id: int = INDEX) -> KeyRange:
    """``q.eq(*prefix).gte(lo).lt(hi)``."""
    p = encode_key(prefix)
    return KeyRange(index_id, p, encode_key([*prefix, lo]), encode_key([*prefix, hi]))


def read_set(*ranges: KeyRange, ids: set[str] | None = None) -> ReadSet:
    return ReadSet(ranges=list(ranges), ids=set(ids or ()))


def commit(*writes: tuple[int, bytes], doc_ids: list[str] | None = None) -> Commit:
    return Commit(ts=1, doc_ids=list(doc_ids or []), keys=[KeyWrite(i, k) for i, k in writes])


@pytest.fixture
def contains_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts KeyRange.contains calls (the exact check after the prefix lookup)."""
    calls = [0]
    original = KeyRange.contains

    def counting(self: KeyRange, k: bytes) -> bool:
        calls[0] += 1
        return original(self, k)

    monkeypatch.setattr(KeyRange, "contains", counting)
    yield calls


def test_eq_prefix_ranges() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("group a", read_set(eq_range("a")))
    index.add("group b", read_set(eq_range("b")))
    index.add("a, n in [2, 5)", read_set(bounded(("a",), 2.0, 5.0)))
    index.add("everything", read_set(eq_range()))
    index.add("other index", read_set(eq_range("a", index_id=OTHER_INDEX)))
    assert len(index) == 5

    def hits(*values: Any, index_id: int = INDEX) -> set[str]:
        return index.matches(commit((index_id, key(*values))))

    assert hits("a", 1.0, 10.0) == {"group a", "everything"}
    assert hits("a", 2.0, 10.0) == {"group a", "everything", "a, n in [2, 5)"}  # inclusive
    assert hits("a", 4.5, 10.0) == {"group a", "everything", "a, n in [2, 5)"}
    assert hits("a", 5.0, 10.0) == {"group a", "everything"}  # exclusive
    assert hits("b", 3.0, 10.0) == {"group b", "everything"}
    assert hits("ab", 3.0, 10.0) == {"everything"}  # a string prefix is not a value prefix
    assert hits("", 3.0, 10.0) == {"everything"}
    assert hits(None, 3.0, 10.0) == {"everything"}
    assert hits("a", 3.0, 10.0, index_id=OTHER_INDEX) == {"other index"}
    assert hits("a", 3.0, 10.0, index_id=99) == set()


def test_take_that_stopped_early_reads_up_to_its_last_key() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    p = key("a")
    last = key("a", 2.0, 100.0)
    index.add("first two", read_set(KeyRange(INDEX, p, p, last + b"\x00")))
    assert index.matches(commit((INDEX, key("a", 1.0, 5.0)))) == {"first two"}
    assert index.matches(commit((INDEX, last))) == {"first two"}
    assert index.matches(commit((INDEX, key("a", 2.0, 101.0)))) == set()
    assert index.matches(commit((INDEX, key("a", 3.0, 1.0)))) == set()


def test_ids_and_missing_tables() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("doc 1", read_set(ids={"id1"}))
    index.add("docs 1 and 2", read_set(ids={"id1", "id2"}))
    missing = ReadSet()
    missing.add_missing_table("later")
    index.add("table later", missing)
    other = ReadSet()
    other.add_missing_table("late")
    index.add("table late", other)
    assert index.matches(commit(doc_ids=["id1"])) == {"doc 1", "docs 1 and 2"}
    assert index.matches(commit(doc_ids=["id2", "id3"])) == {"docs 1 and 2"}
    assert index.matches(commit(doc_ids=["id3"])) == set()
    assert index.matches(commit((CATALOG_INDEX_ID, b"later"))) == {"table later"}
    assert index.matches(commit((CATALOG_INDEX_ID, b"late"))) == {"table late"}
    assert index.matches(commit((CATALOG_INDEX_ID, b"lat"))) == set()


def test_add_replaces_and_remove_forgets() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("q", read_set(eq_range("a"), ids={"id1"}))
    index.add("q", read_set(eq_range("b")))  # re-run: read something else
    assert len(index) == 1
    assert index.matches(commit((INDEX, key("a", 1.0)), doc_ids=["id1"])) == set()
    assert index.matches(commit((INDEX, key("b", 1.0)))) == {"q"}
    index.add("r", read_set(eq_range("b"), ids={"id1"}))
    index.remove("q")
    index.remove("q")  # twice is harmless
    index.remove("never filed")
    assert index.matches(commit((INDEX, key("b", 1.0)))) == {"r"}
    index.remove("r")
    assert len(index) == 0
    assert list(index) == []
    assert index.matches(commit((INDEX, key("b", 1.0)), doc_ids=["id1"])) == set()
    assert index._by_index == {} and index._by_id == {}, "nothing left behind"


def test_one_entry_with_several_ranges_is_reported_once(contains_calls: list[int]) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("q", read_set(eq_range("a"), eq_range("a"), bounded(("a",), 0.0, 9.0)))
    hits = index.matches(commit((INDEX, key("a", 1.0)), (INDEX, key("a", 2.0))))
    assert hits == {"q"}
    assert contains_calls[0] == 1, "an entry already hit is not checked again"


def test_entries_removed_by_identity_not_equality() -> None:
    """Entries are objects (QueryEntry); two equal read sets of two entries stay apart."""

    class Entry:
        pass

    a, b = Entry(), Entry()
    index: SubscriptionIndex[Entry] = SubscriptionIndex()
    index.add(a, read_set(eq_range("x")))
    index.add(b, read_set(eq_range("x")))
    index.remove(a)
    assert index.matches(commit((INDEX, key("x", 1.0)))) == {b}


def test_many_subscriptions_cost_a_few_lookups(contains_calls: list[int]) -> None:
    """10,000 subscriptions on distinct eq prefixes: a commit matching none finds
    nothing and checks (almost) no ranges; one matching a single subscription
    checks only that one."""
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for i in range(10_000):
        index.add(i, read_set(eq_range(f"user{i}"), ids={f"doc{i}"}))
    # A few range subscriptions on another field value shape (numbers) too.
    for i in range(100):
        index.add(10_000 + i, read_set(bounded((float(i),), 0.0, 10.0)))
    contains_calls[0] = 0

    nothing = commit(
        (INDEX, key("stranger", 1.0, 2.0)),
        (INDEX, key("user", 1.0, 2.0)),
        (INDEX, key(12345.0, 3.0, 4.0)),
        (OTHER_INDEX, key("user5", 1.0)),
        doc_ids=["doc-none"],
    )
    assert index.matches(nothing) == set()
    assert contains_calls[0] == 0

    one = commit((INDEX, key("user4321", 7.0, 1.0)), doc_ids=["doc99"])
    assert index.matches(one) == {4321, 99}
    assert contains_calls[0] == 1
    contains_calls[0] = 0
    assert index.matches(commit((INDEX, key(42.0, 5.0, 1.0)))) == {10_042}
    assert index.matches(commit((INDEX, key(42.0, 10.0, 1.0)))) == set()
    assert contains_calls[0] == 2


def test_removing_entries_that_share_a_prefix_is_not_quadratic() -> None:
    """Thousands of subscribers to the same range (everyone watching one channel)
    come and go; each add or remove costs the same as for distinct ranges."""

    class Entry:
        pass

    def churn(ranges: list[KeyRange]) -> float:
        index: SubscriptionIndex[Entry] = SubscriptionIndex()
        entries = [Entry() for _ in ranges]
        start = time.perf_counter()
        for entry, r in zip(entries, ranges, strict=True):
            index.add(entry, read_set(r))
        for entry, r in zip(entries, ranges, strict=True):
            index.add(entry, read_set(r))  # a re-run files it again
        for entry in entries:
            index.remove(entry)
        return time.perf_counter() - start

    n = 5_000
    distinct = [eq_range(f"channel{i}") for i in range(n)]
    shared = [eq_range("channel0")] * n
    churn(distinct)  # warm up
    baseline = min(churn(distinct) for _ in range(3))
    assert min(churn(shared) for _ in range(3)) < 10 * baseline


def test_matches_agree_with_a_scan_of_every_read_set() -> None:
    """Random read sets and writes: the index finds exactly the entries whose
    read set ``ReadSet.overlaps`` the commit (the definition)."""
    rng = random.Random(1234)
    values: list[Any] = [None, 0.0, 1.5, -2.0, "", "a", "ab", "b", True, 3]

    def random_range() -> KeyRange:
        prefix = tuple(rng.choice(values) for _ in range(rng.randint(0, 2)))
        index_id = rng.choice([INDEX, OTHER_INDEX])
        shape = rng.random()
        if shape < 0.4:
            return eq_range(*prefix, index_id=index_id)
        lo, hi = sorted([rng.uniform(-3, 3), rng.uniform(-3, 3)])
        if shape < 0.8:
            return bounded(prefix, lo, hi, index_id=index_id)
        p = encode_key(prefix)
        last = encode_key([*prefix, lo, rng.uniform(0, 100)])
        return KeyRange(index_id, p, p, last + b"\x00")  # stopped early

    index: SubscriptionIndex[int] = SubscriptionIndex()
    sets: dict[int, ReadSet] = {}
    for i in range(300):
        rs = read_set(
            *(random_range() for _ in range(rng.randint(0, 3))),
            ids={f"d{rng.randint(0, 50)}" for _ in range(rng.randint(0, 2))},
        )
        sets[i] = rs
        index.add(i, rs)
    for i in range(0, 300, 7):
        index.remove(i)
        del sets[i]
    for _ in range(300):
        writes = []
        for _ in range(rng.randint(1, 3)):
            depth = rng.randint(0, 3)
            vals = [rng.choice(values) for _ in range(depth)]
            vals.append(rng.uniform(-3, 3))
            writes.append((rng.choice([INDEX, OTHER_INDEX]), encode_key(vals)))
        c = commit(*writes, doc_ids=[f"d{rng.randint(0, 60)}"])
        expected = {i for i, rs in sets.items() if rs.overlaps(c)}
        assert index.matches(c) == expected
