"""Transactions too big to hold in memory, on their way to the shape log (docs/shapes.md, "Big transactions").

A transaction the walsender streams while it runs (pgoutput version 2), or a whole one whose changes
outgrow the reader's `spill_changes`, is written here chunk by chunk as it arrives: a temporary table
of the reader's own connection, so nothing in the Python process grows with the transaction. Each
staged change carries its top-level xid, the (sub)transaction it belongs to (a Stream Abort names a
subtransaction whose changes must go) and its place in the transaction, which is its op in the log.

At the commit, `promote` moves the transaction into shape_log and shape_rows in SQL, inside the
reader's shape log transaction, exactly as `batch.Batch` would have written it: the same offsets
(lsn of the commit, op counting the surviving changes in order), the same last change per row. The
table holds nothing committed: it is emptied whenever a stream (re)starts (the slot replays every
transaction not acknowledged), and a temporary table goes with its connection when the process dies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pulse_server.replication.batch import Erased, change_row, erase, erasure_record, truncate_rows
from pulse_server.replication.pgoutput import Change, Truncate
from pulse_server.shapes.protocol import row_json, stored_message

TABLE = "pulse_reader_staging"

_CREATE = f"""
CREATE TEMP TABLE {TABLE} (
    xid int8 NOT NULL,        -- the top-level transaction
    subxid int8 NOT NULL,     -- the (sub)transaction the change belongs to
    op int4 NOT NULL,         -- its place in the transaction (gaps after a subtransaction aborted)
    user_id int8,             -- NULL for a truncate
    date date,
    operation text NOT NULL,  -- insert | update | delete | truncate
    value text,               -- the row's JSON (row_json)
    message text,             -- its snapshot message; NULL when columns were left out (unchanged TOAST)
    unchanged jsonb           -- the names of the unchanged TOASTed columns not sent, or NULL
)"""
_INDEX = f"CREATE INDEX ON {TABLE} (xid, user_id, date, op)"

_INSERT = (f"INSERT INTO {TABLE} SELECT * FROM unnest(%b::int8[], %b::int8[], %b::int4[], %b::int8[],"
           " %b::text[]::date[], %b::text[], %b::text[], %b::text[], %b::text[]::jsonb[])")

# A subtransaction aborted: the survivors numbered 0, 1, 2, ... again, as a transaction sent whole would be.
_RENUMBER = f"""
UPDATE {TABLE} s SET op = n.op
  FROM (SELECT op AS old, (row_number() OVER (ORDER BY op) - 1)::int4 AS op FROM {TABLE} WHERE xid = %(xid)s) n
 WHERE s.xid = %(xid)s AND s.op = n.old AND n.old <> n.op
"""

# Columns an update left out (unchanged TOASTed values) take the row's value before it: from the last
# earlier change of the row in this transaction that has them (none, or a delete: null; a truncate after
# it: null), else from shape_rows, which holds every transaction committed before this one.
_RESOLVE = f"""
UPDATE {TABLE} s SET value = (s.value::jsonb || f.fill)::text, message = NULL, unchanged = NULL
  FROM (SELECT u.op, jsonb_object_agg(c.name, coalesce(
               CASE WHEN p.op > coalesce(t.op, -1) THEN p.value
                    WHEN t.op IS NOT NULL THEN NULL
                    ELSE r.value -> c.name END, 'null'::jsonb)) AS fill
          FROM {TABLE} u
          CROSS JOIN jsonb_array_elements_text(u.unchanged) AS c(name)
          LEFT JOIN LATERAL (
               SELECT p.op, CASE WHEN p.operation = 'delete' THEN NULL ELSE p.value::jsonb -> c.name END AS value
                 FROM {TABLE} p
                WHERE p.xid = u.xid AND p.user_id = u.user_id AND p.date = u.date AND p.op < u.op
                  AND (p.unchanged IS NULL OR NOT p.unchanged ? c.name)
                ORDER BY p.op DESC LIMIT 1) p ON true
          LEFT JOIN LATERAL (
               SELECT max(t.op) AS op FROM {TABLE} t
                WHERE %(truncates)s AND t.xid = u.xid AND t.operation = 'truncate' AND t.op < u.op) t ON true
          LEFT JOIN shape_rows r ON r.user_id = u.user_id AND r.date = u.date
         WHERE u.xid = %(xid)s AND u.unchanged IS NOT NULL
         GROUP BY u.op) f
 WHERE s.xid = %(xid)s AND s.op = f.op
"""

_LOG = f"""
WITH staged AS (SELECT op, user_id, date, operation, value FROM {TABLE}
                 WHERE xid = %(xid)s AND operation <> 'truncate'),
     logged AS (INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)
                SELECT %(lsn)s::int8, op, %(txid)s::int8, user_id, date, operation, value::jsonb FROM staged
                ON CONFLICT DO NOTHING)
SELECT count(*) FROM staged
"""

# The last change of each row after the transaction's last truncate (`after`: its op, or -1).
_LAST = f"""
SELECT DISTINCT ON (user_id, date) user_id, date, op, operation, value, message FROM {TABLE}
 WHERE xid = %(xid)s AND op > %(after)s AND operation <> 'truncate' ORDER BY user_id, date, op DESC
"""

_GONE = f"""
DELETE FROM shape_rows s USING ({_LAST}) k
 WHERE k.operation = 'delete' AND s.user_id = k.user_id AND s.date = k.date
   AND (s.lsn, s.op) < (%(lsn)s::int8, k.op)
"""

_PRESENT = f"""
INSERT INTO shape_rows (user_id, date, value, lsn, op, message)
SELECT user_id, date, value::jsonb, %(lsn)s::int8, op, message FROM ({_LAST}) k WHERE k.operation <> 'delete'
    ON CONFLICT (user_id, date) DO UPDATE SET value = excluded.value, lsn = excluded.lsn, op = excluded.op,
       message = excluded.message
 WHERE (shape_rows.lsn, shape_rows.op) < (excluded.lsn, excluded.op)
"""

Usernames = Callable[[set[int]], dict[int, str | None]]


@dataclass
class Staged:
    """What the reader remembers of one staged transaction (its changes are in the table)."""

    next_op: int = 0
    truncates: bool = False  # a truncate was staged (it may since have been aborted)
    unchanged: bool = False  # some change left unchanged TOASTed columns out
    renumber: bool = False  # a subtransaction's changes were removed: the ops have gaps
    # Erasure records (a few per transaction at most): (subxid, the record), kept here, not in the table.
    erasures: list[tuple[int, Change]] = field(default_factory=list)


class Staging:
    def __init__(self) -> None:
        self.transactions: dict[int, Staged] = {}  # by top-level xid
        self.used = False  # rows were written since the table was last emptied

    def reset(self, conn: psycopg.Connection[Any]) -> None:
        """An empty table on this connection, and nothing staged: a new stream sends every transaction
        not acknowledged again, from its beginning."""
        row = conn.execute("SELECT to_regclass(%s) IS NULL", (f"pg_temp.{TABLE}",)).fetchone()
        if row is not None and row[0]:
            conn.execute(_CREATE)
            conn.execute(_INDEX)
        else:
            conn.execute(f"TRUNCATE {TABLE}")
        self.transactions.clear()
        self.used = False

    def add(self, conn: psycopg.Connection[Any], xid: int, changes: Sequence[Change | Truncate],
            usernames: Usernames) -> None:
        """The next changes of transaction `xid`, in order."""
        staged = self.transactions.setdefault(xid, Staged())
        rows: list[tuple[Any, ...]] = []
        for change in changes:
            subxid = change.xid or xid
            if isinstance(change, Change) and erasure_record(change):
                staged.erasures.append((subxid, change))
                continue
            op, staged.next_op = staged.next_op, staged.next_op + 1
            if isinstance(change, Truncate):
                staged.truncates = True
                rows.append((xid, subxid, op, None, None, "truncate", None, None))
                continue
            key, row = change_row(change)
            unchanged = json.dumps(sorted(change.unchanged)) if change.unchanged else None
            staged.unchanged = staged.unchanged or unchanged is not None
            rows.append((xid, subxid, op, key[0], key[1], change.operation, row_json(row), unchanged))
        if not rows:
            return
        names = usernames({r[3] for r in rows if r[5] in ("insert", "update")})
        columns = [list(c) for c in zip(*(
            (*r[:7], _message(r, names), r[7]) for r in rows), strict=True)]
        conn.execute(_INSERT, columns)
        self.used = True

    def abort(self, conn: psycopg.Connection[Any], xid: int, subxid: int) -> None:
        """Stream Abort: the transaction's changes, or one subtransaction's, are gone."""
        staged = self.transactions.get(xid)
        if staged is None:
            return
        if subxid == xid:
            conn.execute(f"DELETE FROM {TABLE} WHERE xid = %s", (xid,))
            del self.transactions[xid]
        else:
            staged.erasures = [(sub, record) for sub, record in staged.erasures if sub != subxid]
            if conn.execute(f"DELETE FROM {TABLE} WHERE xid = %s AND subxid = %s", (xid, subxid)).rowcount:
                staged.renumber = True

    def promote(self, conn: psycopg.Connection[Any], xid: int, lsn: int, txid: int) -> int:
        """The committed transaction `xid` into shape_log and shape_rows (inside the caller's transaction);
        the number of its changes."""
        staged = self.transactions.pop(xid, None)
        if staged is None:  # nothing of it concerned the shape log
            return 0
        if staged.renumber:
            conn.execute(_RENUMBER, {"xid": xid})
        if staged.unchanged:
            conn.execute(_RESOLVE, {"xid": xid, "truncates": staged.truncates})
        after = -1
        if staged.truncates:
            row = conn.execute(f"SELECT max(op) FROM {TABLE} WHERE xid = %s AND operation = 'truncate'",
                               (xid,)).fetchone()
            if row is not None and row[0] is not None:
                after = int(row[0])
        params = {"xid": xid, "lsn": lsn, "txid": txid, "after": after}
        counted = conn.execute(_LOG, params).fetchone()
        erase(conn, [Erased.of(record, lsn) for _, record in staged.erasures])
        if after >= 0:
            truncate_rows(conn)
        conn.execute(_GONE, params)
        conn.execute(_PRESENT, params)
        conn.execute(f"DELETE FROM {TABLE} WHERE xid = %s", (xid,))
        return int(counted[0]) if counted is not None else 0

    def release(self, conn: psycopg.Connection[Any]) -> None:
        """Once nothing is staged, the table's pages go (deleted rows would otherwise keep them)."""
        if self.used and not self.transactions:
            conn.execute(f"TRUNCATE {TABLE}")
            self.used = False


def _message(row: tuple[Any, ...], usernames: dict[int, str | None]) -> str | None:
    """The snapshot message of an insert's or update's row sent whole; None otherwise."""
    if row[5] not in ("insert", "update") or row[7] is not None:
        return None
    return stored_message(json.loads(row[6]), row[3], row[4], usernames.get(row[3]))
