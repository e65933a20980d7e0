"""Differential test: SQLite and PostgreSQL give the same answers.

The same seeded random sequence of mutations (insert, patch, replace, delete and a
mutation that writes and then fails) runs against one runtime on each engine; every
few operations a set of queries (full scans, index ranges on a single-field and on a
compound index, ``take``, filters, pagination, ``db.get``) must return the same
documents in the same order on both. Generated fields (``_id``, ``_creationTime``)
differ between engines, so documents are compared without them; each document
carries a logical id (``lid``) and ``db.get`` goes through a map from logical ids to
each engine's ids. A Python model of the table checks both engines' contents too.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from basalt import UNSET, ConvexError, define_schema, define_table, mutation, query, v
from basalt.runtime import App, Runtime
from basalt.testing.engines import drop_test_databases, engine_for_tests

SEEDS = range(8)
OPERATIONS = 120
CHECK_EVERY = 10

schema = define_schema(
    {
        "things": define_table(
            {
                "lid": v.int64(),
                "cat": v.string(),
                "n": v.int64(),
                "x": v.float64(),
                "tag": v.optional(v.string()),
            }
        )
        .index("by_n", ["n"])
        .index("by_cat_x", ["cat", "x"])
        .index("by_tag_n", ["tag", "n"]),
    }
)

CATS = ["a", "b", "B", "é", "ab", "", "a\x00b"]
INTS = [-(2**63), -7, -1, 0, 1, 2, 3, 5, 2**53 + 1, 2**63 - 1]
FLOATS = [
    -math.inf, -1e300, -2.5, -1.0, -0.0, 0.0, 5e-324, 0.1, 1.0, 2.5, 1e300, math.inf, math.nan,
]  # fmt: skip
TAGS = [None, "t0", "t1", "t2", "ü", "t1 ", "\x00"]


# --- the app ---------------------------------------------------------------------


@mutation
async def insert(ctx: Any, doc: dict[str, Any]) -> str:
    return await ctx.db.insert("things", doc)


@mutation
async def patch(ctx: Any, id: str, fields: dict[str, Any], drop: list[str]) -> None:
    await ctx.db.patch(id, {**fields, **dict.fromkeys(drop, UNSET)})


@mutation
async def replace(ctx: Any, id: str, doc: dict[str, Any]) -> None:
    await ctx.db.replace(id, doc)


@mutation
async def delete(ctx: Any, id: str) -> None:
    await ctx.db.delete(id)


@mutation
async def write_then_fail(
    ctx: Any, docs: list[dict[str, Any]], patch_id: str | None, delete_id: str | None
) -> None:
    for doc in docs:
        await ctx.db.insert("things", doc)
    if patch_id is not None:
        await ctx.db.patch(patch_id, {"cat": "doomed", "n": 99, "tag": UNSET})
    if delete_id is not None:
        await ctx.db.delete(delete_id)
    raise ConvexError({"code": "BOOM"})


def _range(steps: list[list[Any]]) -> Any:
    def build(q: Any) -> Any:
        for op, field, value in steps:
            q = getattr(q, op)(field, value)
        return q

    return build


def _filter(kind: str, a: Any, b: Any) -> Any:
    if kind == "n_gt_and_tag":
        return lambda q: q.and_(q.gt(q.field("n"), a), q.eq(q.field("tag"), b))
    if kind == "cat_or_x_lt":
        return lambda q: (q["cat"] == a) | (q["x"] < b)
    if kind == "not_tag":
        return lambda q: ~(q["tag"] == a)
    if kind == "tag_missing":
        return lambda q: q.eq(q.field("tag"), None)
    if kind == "x_times_2_gte":
        return lambda q: q.gte(q.mul(q.field("x"), 2), a)
    if kind == "n_mod_eq":
        return lambda q: q.eq(q.mod(q.field("n"), 3), a)
    raise AssertionError(kind)


def _build(ctx: Any, spec: dict[str, Any]) -> Any:
    q = ctx.db.query("things")
    if spec.get("index") is not None:
        q = q.with_index(spec["index"], _range(spec["range"]))
    q = q.order(spec["order"])
    if spec.get("filter") is not None:
        q = q.filter(_filter(*spec["filter"]))
    return q


@query
async def view(ctx: Any, spec: dict[str, Any]) -> Any:
    q = _build(ctx, spec)
    if spec.get("take") is not None:
        return await q.take(spec["take"])
    if spec.get("first"):
        return await q.first()
    return await q.collect()


@query
async def page(ctx: Any, spec: dict[str, Any], cursor: str | None) -> Any:
    return await _build(ctx, spec).paginate({"numItems": 3.0, "cursor": cursor})


@query
async def get_many(ctx: Any, ids: list[str]) -> Any:
    return [await ctx.db.get(id) for id in ids]


MODULES = {
    "things": {
        "insert": insert,
        "patch": patch,
        "replace": replace,
        "delete": delete,
        "write_then_fail": write_then_fail,
        "view": view,
        "page": page,
        "get_many": get_many,
    }
}


# --- comparing -------------------------------------------------------------------


def normal(value: Any) -> Any:
    """A comparable form: ``_id``/``_creationTime`` dropped, floats by their bits
    (so -0.0 ≠ 0.0 and NaN = NaN), ints and floats told apart."""
    if isinstance(value, dict):
        return {k: normal(item) for k, item in value.items() if k not in ("_id", "_creationTime")}
    if isinstance(value, list):
        return [normal(item) for item in value]
    if isinstance(value, tuple):  # an outcome
        return tuple(normal(item) for item in value)
    if isinstance(value, float):
        return ("float", struct.pack(">d", value).hex())
    if isinstance(value, int) and not isinstance(value, bool):
        return ("int", value)
    return value


async def outcome(rt: Runtime, path: str, args: dict[str, Any]) -> Any:
    try:
        return ("ok", await rt.query(path, args))
    except Exception as exc:  # the same failure on both engines is agreement
        return ("error", type(exc).__name__, str(exc))


async def all_pages(rt: Runtime, spec: dict[str, Any]) -> Any:
    pages: list[Any] = []
    cursor = None
    for _ in range(200):
        result = await outcome(rt, "things:page", {"spec": spec, "cursor": cursor})
        if result[0] != "ok":
            pages.append(result)
            break
        body = result[1]
        pages.append((normal(body["page"]), body["isDone"]))
        if body["isDone"]:
            break
        cursor = body["continueCursor"]
    else:
        raise AssertionError(f"pagination of {spec} never finished")
    return pages


# --- random operations -----------------------------------------------------------


class Sequence:
    """One seeded run: the random choices, the model, and the id maps."""

    def __init__(self, seed: int, runtimes: dict[str, Runtime]) -> None:
        self.rng = random.Random(seed)
        self.runtimes = runtimes
        self.model: dict[int, dict[str, Any]] = {}  # lid → user fields
        self.ids: dict[int, dict[str, str]] = {}  # lid → engine → _id (deleted ones too)
        self.next_lid = 0
        self.log: list[str] = []

    def doc(self, lid: int) -> dict[str, Any]:
        r = self.rng
        doc: dict[str, Any] = {
            "lid": lid,
            "cat": r.choice(CATS),
            "n": r.choice(INTS),
            "x": r.choice(FLOATS),
        }
        tag = r.choice(TAGS)
        if tag is not None:
            doc["tag"] = tag
        return doc

    async def each(self, path: str, args_for: Any) -> dict[str, Any]:
        results = {}
        for name, rt in self.runtimes.items():
            try:
                results[name] = ("ok", await rt.mutation(path, args_for(name)))
            except Exception as exc:
                results[name] = ("error", type(exc).__name__, str(exc))
        return results

    async def step(self) -> None:
        r = self.rng
        live = sorted(self.model)
        kind = r.choices(
            ["insert", "patch", "replace", "delete", "fail"], weights=[35, 25, 12, 15, 8]
        )[0]
        if not live and kind != "fail":
            kind = "insert"
        if kind == "insert":
            lid = self.next_lid
            self.next_lid += 1
            doc = self.doc(lid)
            self.log.append(f"insert {doc}")
            res = await self.each("things:insert", lambda _: {"doc": doc})
            assert all(o[0] == "ok" for o in res.values()), res
            self.ids[lid] = {name: o[1] for name, o in res.items()}
            self.model[lid] = doc
        elif kind in ("patch", "replace"):
            lid = r.choice(live)
            new = self.doc(lid)
            if kind == "patch":
                fields = {k: val for k, val in new.items() if k != "lid" and r.random() < 0.5}
                drop = ["tag"] if "tag" not in new and r.random() < 0.5 else []
                self.log.append(f"patch lid={lid} {fields} drop={drop}")
                res = await self.each(
                    "things:patch",
                    lambda name: {"id": self.ids[lid][name], "fields": fields, "drop": drop},
                )
                updated = {**self.model[lid], **fields}
                for k in drop:
                    updated.pop(k, None)
            else:
                self.log.append(f"replace lid={lid} {new}")
                res = await self.each(
                    "things:replace", lambda name: {"id": self.ids[lid][name], "doc": new}
                )
                updated = new
            assert all(o[0] == "ok" for o in res.values()), res
            self.model[lid] = updated
        elif kind == "delete":
            lid = r.choice(live)
            self.log.append(f"delete lid={lid}")
            res = await self.each("things:delete", lambda name: {"id": self.ids[lid][name]})
            assert all(o[0] == "ok" for o in res.values()), res
            del self.model[lid]
        else:
            docs = [self.doc(-1) for _ in range(r.randint(1, 3))]
            patch_lid = r.choice(live) if live and r.random() < 0.7 else None
            delete_lid = r.choice(live) if live and r.random() < 0.7 else None
            self.log.append(f"fail docs={docs} patch={patch_lid} delete={delete_lid}")

            def args(name: str) -> dict[str, Any]:
                return {
                    "docs": docs,
                    "patch_id": None if patch_lid is None else self.ids[patch_lid][name],
                    "delete_id": None if delete_lid is None else self.ids[delete_lid][name],
                }

            res = await self.each("things:write_then_fail", args)
            assert all(o[:2] == ("error", "ConvexError") for o in res.values()), res

    def specs(self) -> list[dict[str, Any]]:
        r = self.rng
        specs: list[dict[str, Any]] = []
        for order in ("asc", "desc"):
            specs.append({"order": order})
        k, lo, hi = r.choice(INTS), *sorted(r.sample(INTS, 2))
        for order in ("asc", "desc"):
            specs += [
                {"index": "by_n", "range": [["eq", "n", k]], "order": order},
                {"index": "by_n", "range": [["gt", "n", k]], "order": order},
                {"index": "by_n", "range": [["lte", "n", k]], "order": order},
                {"index": "by_n", "range": [["gt", "n", lo], ["lte", "n", hi]], "order": order},
            ]
        cat, x1, x2 = r.choice(CATS), r.choice(FLOATS), r.choice(FLOATS)
        for order in ("asc", "desc"):
            specs += [
                {"index": "by_cat_x", "range": [], "order": order},
                {"index": "by_cat_x", "range": [["eq", "cat", cat]], "order": order},
                {"index": "by_cat_x", "range": [["gt", "cat", cat]], "order": order},
                {
                    "index": "by_cat_x",
                    "range": [["eq", "cat", cat], ["eq", "x", x1]],
                    "order": order,
                },
                {
                    "index": "by_cat_x",
                    "range": [["eq", "cat", cat], ["gt", "x", x1]],
                    "order": order,
                },
                {
                    "index": "by_cat_x",
                    "range": [["eq", "cat", cat], ["gt", "x", x1], ["lte", "x", x2]],
                    "order": order,
                },
                {"index": "by_tag_n", "range": [["eq", "tag", r.choice(TAGS)]], "order": order},
                {"index": "by_tag_n", "range": [["lte", "tag", "t1"]], "order": order},
            ]
        take = r.randint(0, 6)
        specs += [
            {"order": "desc", "take": take},
            {"index": "by_n", "range": [], "order": "desc", "take": take},
            {"index": "by_cat_x", "range": [["lte", "cat", cat]], "order": "desc", "take": take},
            {"index": "by_cat_x", "range": [], "order": "desc", "first": True},
        ]
        filters = [
            ("n_gt_and_tag", r.choice(INTS), r.choice(TAGS)),
            ("cat_or_x_lt", r.choice(CATS), r.choice(FLOATS)),
            ("not_tag", r.choice(TAGS), None),
            ("tag_missing", None, None),
            ("x_times_2_gte", r.choice(FLOATS), None),
            ("n_mod_eq", r.choice([0, 1, 2, -1]), None),
        ]
        for f in filters:
            specs.append({"order": r.choice(["asc", "desc"]), "filter": list(f)})
        specs.append(
            {"index": "by_n", "range": [["gt", "n", lo]], "order": "desc", "filter": list(f)}
        )
        return specs

    async def compare(self, when: str) -> None:
        names = list(self.runtimes)
        where = f"{when}; operations so far:\n" + "\n".join(self.log)
        # Both engines hold exactly the model's documents.
        for name, rt in self.runtimes.items():
            docs = await rt.query("things:view", {"spec": {"order": "asc"}})
            got = sorted((normal(d) for d in docs), key=lambda d: d["lid"][1])
            want = [normal(self.model[lid]) for lid in sorted(self.model)]
            assert got == want, f"{name} differs from the model at {where}"
        specs = self.specs()
        for spec in specs:
            results = [normal(await outcome(rt, "things:view", {"spec": spec})) for rt in
                       self.runtimes.values()]  # fmt: skip
            assert results[0] == results[1], f"view {spec} differs ({names}) at {where}"
        for spec in (specs[0], specs[1], specs[10], specs[19], specs[-1]):
            paged = [await all_pages(rt, spec) for rt in self.runtimes.values()]
            assert paged[0] == paged[1], f"pages of {spec} differ ({names}) at {where}"
            if paged[0] and paged[0][-1][0] != "error":
                flat = [d for p in paged[0] for d in p[0]]
                whole = normal(await self.runtimes[names[0]].query("things:view", {"spec": spec}))
                assert flat == whole, f"pages of {spec} are not the whole query at {where}"
        lids = sorted(self.ids)
        picked = self.rng.sample(lids, min(len(lids), 8))
        got = [
            normal(await rt.query("things:get_many", {"ids": [self.ids[lid][n] for lid in picked]}))
            for n, rt in self.runtimes.items()
        ]
        want = [normal(self.model[lid]) if lid in self.model else None for lid in picked]
        assert got[0] == got[1] == want, f"get {picked} differs at {where}"


# --- the test --------------------------------------------------------------------


@pytest.fixture
async def runtimes(tmp_path: Path) -> AsyncIterator[dict[str, Runtime]]:
    started: list[Runtime] = []
    try:
        made = {}
        for backend in ("sqlite", "postgres"):
            rt = Runtime(
                App.from_modules(MODULES, schema=schema),
                engine_for_tests(tmp_path, "diff", backend=backend),
            )
            await rt.start()
            started.append(rt)
            made[backend] = rt
        yield made
    finally:
        for rt in started:
            await rt.stop()
        await drop_test_databases(tmp_path)


@pytest.mark.parametrize("seed", SEEDS)
async def test_same_mutations_give_same_queries(runtimes: dict[str, Runtime], seed: int) -> None:
    seq = Sequence(seed, runtimes)
    for i in range(OPERATIONS):
        await seq.step()
        if (i + 1) % CHECK_EVERY == 0:
            await seq.compare(f"seed {seed}, after operation {i + 1}")
