"""The PostgreSQL layout and statements of :mod:`basalt.storage.postgres`.

Each Basalt deployment lives in a PostgreSQL schema of its own (created if
missing); every connection of the engine has it as its ``search_path``, so the
statements below name tables without a schema.

- ``documents.value`` is ``text``, not ``jsonb``: it holds Basalt's stored
  encoding (:func:`basalt.values.wire.dumps_stored`), which keeps int64 apart
  from float64, ``NaN``/``Infinity``/``-0.0`` and field order exactly; ``jsonb``
  would reorder keys and reject the non-JSON literals, and nothing queries inside
  documents in SQL (index keys carry everything a scan compares).
- ``index_entries.key`` is ``bytea``, which PostgreSQL compares with ``memcmp``
  and then by length: bytewise, as SQLite compares blobs, so the
  order-preserving key encoding gives the same order on both engines.
- Document ids use the ``"C"`` collation so ties on a key break in byte order, as
  on SQLite.
- ``commit_clock`` hands out commit timestamps; sequences are not transactional,
  so a write transaction reads the newest timestamp outside its snapshot and
  without taking a serializable read lock (see ``basalt_commit``).
- ``catalog_version`` is bumped by every transaction that changes the catalog;
  every write transaction reads it, so a catalog change and a transaction that
  used the older catalog cannot both commit (see :mod:`basalt.storage.postgres`).
"""

from __future__ import annotations

from .scans import scan_queries

LAYOUT = """
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS tables(
    number integer PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS indexes(
    id integer PRIMARY KEY, table_number integer NOT NULL, name text NOT NULL,
    fields text NOT NULL, state text NOT NULL, UNIQUE(table_number, name));
CREATE TABLE IF NOT EXISTS documents(
    id text COLLATE "C" PRIMARY KEY, table_number integer NOT NULL, value text NOT NULL);
CREATE TABLE IF NOT EXISTS index_entries(
    index_id integer NOT NULL, key bytea NOT NULL, doc_id text COLLATE "C" NOT NULL,
    PRIMARY KEY(index_id, key, doc_id));
CREATE TABLE IF NOT EXISTS commits(ts bigint PRIMARY KEY, writes bytea NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_version(
    one boolean PRIMARY KEY DEFAULT true CHECK (one), n bigint NOT NULL);
INSERT INTO catalog_version(one, n) VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE SEQUENCE IF NOT EXISTS commit_clock MINVALUE 0 START WITH 1;
CREATE OR REPLACE FUNCTION basalt_commit(
    writes bytea, lock_key bigint, channel text, OUT prev bigint, OUT ts bigint)
LANGUAGE plpgsql AS $$
DECLARE
    next bigint;
BEGIN
    -- Held until this transaction has committed and become visible: the next
    -- committer takes a larger timestamp and becomes visible after this one.
    PERFORM pg_advisory_xact_lock(lock_key);
    next := nextval('commit_clock');
    prev := next - 1;
    ts := greatest(
        next, (floor(extract(epoch FROM clock_timestamp()) * 1000000))::bigint * 1000);
    IF ts > next THEN
        PERFORM setval('commit_clock', ts);
    END IF;
    INSERT INTO commits(ts, writes) VALUES (ts, writes);
    PERFORM pg_notify(channel, ts::text);
END
$$;
"""

BEGIN_READ = (
    "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY; "
    "SELECT (SELECT n FROM catalog_version), (SELECT coalesce(max(ts), 0) FROM commits)"
)
BEGIN_WRITE = "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT n FROM catalog_version"
BUMP_CATALOG = "UPDATE catalog_version SET n = n + 1 RETURNING n"
COMMIT_LOG = "SELECT prev, ts FROM basalt_commit(%s, %s, %s)"

GET = "SELECT value FROM documents WHERE id = %s"
COUNT = "SELECT count(*) FROM index_entries WHERE index_id = %s"
LATEST_TS = "SELECT coalesce(max(ts), 0) FROM commits"
WAIT_FOR_COMMIT_LOCK = "SELECT pg_advisory_xact_lock(%s)"
HAS_COMMIT = "SELECT 1 FROM commits WHERE ts = %s"
GET_META = "SELECT value FROM meta WHERE key = %s"
SET_META = (
    "INSERT INTO meta(key, value) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
COMMITS_SINCE = "SELECT ts, writes FROM commits WHERE ts > %s ORDER BY ts LIMIT %s"
PRUNE = "DELETE FROM commits WHERE ts < %s AND ts < (SELECT max(ts) FROM commits)"
LOAD_TABLES = "SELECT number, name FROM tables"
LOAD_INDEXES = "SELECT id, table_number, name, fields, state FROM indexes ORDER BY id"

INSERT_TABLE = "INSERT INTO tables(number, name) VALUES (%s, %s)"
INSERT_INDEX = (
    "INSERT INTO indexes(id, table_number, name, fields, state) VALUES (%s, %s, %s, %s, %s)"
)
DELETE_INDEX_ENTRIES = "DELETE FROM index_entries WHERE index_id = %s"
DELETE_INDEX = "DELETE FROM indexes WHERE id = %s"
INSERT_DOCUMENT = "INSERT INTO documents(id, table_number, value) VALUES (%s, %s, %s)"
INSERT_ENTRY = "INSERT INTO index_entries(index_id, key, doc_id) VALUES (%s, %s, %s)"
UPDATE_DOCUMENT = "UPDATE documents SET value = %s WHERE id = %s"
UPDATE_ENTRY = "UPDATE index_entries SET key = %s WHERE index_id = %s AND key = %s AND doc_id = %s"
DELETE_DOCUMENT = "DELETE FROM documents WHERE id = %s"
DELETE_ENTRY = "DELETE FROM index_entries WHERE index_id = %s AND key = %s AND doc_id = %s"

SCAN = scan_queries("%s")

_INSERT_ENTRIES: dict[int, str] = {}


def insert_entries(rows: int) -> str:
    """One INSERT for all of a document's index entries."""
    sql = _INSERT_ENTRIES.get(rows)
    if sql is None:
        values = ", ".join(["(%s, %s, %s)"] * rows)
        sql = _INSERT_ENTRIES[rows] = (
            f"INSERT INTO index_entries(index_id, key, doc_id) VALUES {values}"
        )
    return sql
