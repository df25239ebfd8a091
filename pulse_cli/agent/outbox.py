"""The outbox as the sync engine sees it: what is pending, and recording the server's answers."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

ACKED = ("applied", "conflict", "duplicate")


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    user_id: str
    date: str
    op: str
    fields: dict[str, Any]
    base: dict[str, str | None]
    hlc: str
    source: str
    status: str
    result: dict[str, Any] | None
    client_id: str | None = None  # a browser's, for a mutation relayed by `pulse agent --serve`
    client_seq: int | None = None

    @property
    def wire_seq(self) -> int:
        return self.seq if self.client_seq is None else self.client_seq

    def wire(self) -> dict[str, Any]:
        return {"seq": self.wire_seq, "date": self.date, "op": self.op, "fields": self.fields, "base": self.base,
                "hlc": self.hlc, "source": self.source}


_COLUMNS = "seq, user_id, date, op, fields, base, hlc, source, status, result, client_id, client_seq"


def _row(values: tuple[Any, ...]) -> OutboxRow:
    seq, user_id, date, op, fields, base, hlc, source, status, result, client_id, client_seq = values
    return OutboxRow(seq, user_id, date, op, json.loads(fields), json.loads(base), hlc, source, status,
                     json.loads(result) if result else None, client_id, client_seq)


def pending(conn: sqlite3.Connection, limit: int, after_seq: int = 0) -> list[OutboxRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
    ).fetchall()
    return [_row(r) for r in rows]


def by_status(conn: sqlite3.Connection, *statuses: str) -> list[OutboxRow]:
    marks = ", ".join("?" for _ in statuses)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE status IN ({marks}) ORDER BY seq", statuses)
    return [_row(r) for r in rows]


RECENT = dt.timedelta(hours=1)


def to_reapply(conn: sqlite3.Connection, pulled_lsn: int) -> list[OutboxRow]:
    """Mutations the server copy may not show yet: pending ones, acknowledged ones the pull has not
    reached (their `lsn`, read just before the server's commit, is past what was pulled), and, to be
    safe around that commit, any acknowledged in the last hour. Re-applying one that the copy already
    shows changes nothing: the merge is idempotent."""
    recent = (dt.datetime.now(dt.UTC) - RECENT).isoformat(timespec="seconds")
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending'"
        " OR (status IN ('applied', 'conflict', 'duplicate')"
        "     AND (CAST(json_extract(result, '$.lsn') AS INTEGER) >= ? OR sent_at >= ?))"
        " ORDER BY seq",
        (pulled_lsn, recent),
    ).fetchall()
    return [_row(r) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {status: n for status, n in conn.execute("SELECT status, count(*) FROM outbox GROUP BY status")}


def record_results(conn: sqlite3.Connection, batch: list[OutboxRow], response: dict[str, Any]) -> dict[str, int]:
    """Store one result per mutation (in the caller's transaction); returns counts by status."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    by_seq = {r.get("seq"): r for r in response.get("results", [])}
    tally: dict[str, int] = {}
    for row in batch:
        result = by_seq.get(row.wire_seq)
        if result is None:
            continue  # no answer for it: still pending, pushed again next time
        status = result.get("status", "rejected")
        if status == "duplicate":
            status = result.get("original_status", "applied")
        result = {**result, "lsn": response.get("lsn"), "txid": response.get("txid")}
        conn.execute("UPDATE outbox SET status = ?, result = ?, sent_at = ? WHERE seq = ?",
                     (status, json.dumps(result), now, row.seq))
        for conflict in result.get("conflicts") or []:
            conn.execute(
                "INSERT INTO conflicts (seq, date, field, kept, lost, kept_hlc, lost_hlc, rule, seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.seq, row.date, conflict.get("field"), json.dumps(conflict.get("kept")),
                 json.dumps(conflict.get("lost")), conflict.get("kept_hlc"), conflict.get("lost_hlc"),
                 conflict.get("rule", ""), now),
            )
        tally[status] = tally.get(status, 0) + 1
    return tally


def discard(conn: sqlite3.Connection, seq: int) -> bool:
    done = conn.execute("UPDATE outbox SET status = 'discarded' WHERE seq = ? AND status IN ('rejected', 'pending')",
                        (seq,))
    return done.rowcount > 0
