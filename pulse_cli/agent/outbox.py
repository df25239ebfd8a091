"""The outbox as the sync engine sees it: what is pending, and recording the server's answers."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from pulse_cli.store.clock import observe
from sync.wire import PushResponse

ACKED = ("applied", "conflict", "duplicate")
# Acknowledged mutations are kept this long after the server answered: if the server is restored from a
# backup older than that, the device pushes them again (docs/sync.md, "A restored server").
KEEP_ACKED = dt.timedelta(days=30)


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
    # The id and seq it is sent under when not the device's current id and the outbox seq: a browser's,
    # for a mutation relayed by `pulse agent --serve`, or a former id of this device.
    client_id: str | None = None
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


def to_reapply(conn: sqlite3.Connection, user: str | None = None, day: str | None = None) -> list[OutboxRow]:
    """Mutations the server copy may not show yet, in order: pending ones, and acknowledged ones not yet
    seen reflected in it (`replica.refresh_view` marks them); of one row of the view, or of all."""
    where = "(status = 'pending' OR (status IN ('applied', 'conflict', 'duplicate') AND reflected = 0))"
    if user is None or day is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE {where} ORDER BY seq").fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE user_id = ? AND date = ? AND {where} ORDER BY seq",
                            (user, day)).fetchall()
    return [_row(r) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {status: n for status, n in conn.execute("SELECT status, count(*) FROM outbox GROUP BY status")}


def record_results(
    conn: sqlite3.Connection, batch: list[OutboxRow], response: PushResponse, clashed: bool = False
) -> dict[str, int]:
    """Store one result per mutation (in the caller's transaction); returns counts by status. A `clash`
    (and, when `clashed`, any duplicate: the server's record is another store's) leaves its row pending,
    to be pushed again under a new client id."""
    now = _now()
    by_seq = {r.get("seq"): r for r in response.get("results", [])}
    tally: dict[str, int] = {}
    for row in batch:
        result = by_seq.get(row.wire_seq)
        if result is None:
            continue  # no answer for it: still pending, pushed again next time
        status: str = result.get("status", "rejected")
        if status == "clash" or (clashed and status == "duplicate"):
            tally["clash"] = tally.get("clash", 0) + 1
            continue
        if status == "held":  # dated ahead of the user's today for now: sent again at the next round
            tally["held"] = tally.get("held", 0) + 1
            continue
        if status == "duplicate":
            status = result.get("original_status") or "applied"  # None: its result was pruned
        kept = {**result, "lsn": response.get("lsn"), "txid": response.get("txid")}
        conn.execute("UPDATE outbox SET status = ?, result = ?, sent_at = ? WHERE seq = ?",
                     (status, json.dumps(kept), now, row.seq))
        tally[status] = tally.get(status, 0) + 1
    observe(conn, [r.get("hlc") for r in response.get("results", [])])  # the stamps the server stored
    return tally


def reject(conn: sqlite3.Connection, batch: list[OutboxRow], error: dict[str, Any]) -> int:
    """The server refused these for good (a 403 for the whole batch, say): rejected with its reason, so
    they show in `pulse rejected` and never block a later push or pull."""
    now = _now()
    for row in batch:
        result = {"seq": row.wire_seq, "status": "rejected", "error": error}
        conn.execute("UPDATE outbox SET status = 'rejected', result = ?, sent_at = ? WHERE seq = ?",
                     (json.dumps(result), now, row.seq))
    return len(batch)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def senders(conn: sqlite3.Connection, current_id: str) -> list[str]:
    """Every id this store's kept acknowledged mutations were sent under."""
    rows = conn.execute("SELECT DISTINCT coalesce(client_id, ?) FROM outbox WHERE status IN"
                        " ('applied', 'conflict', 'duplicate')", (current_id,)).fetchall()
    return sorted(str(r[0]) for r in rows)


def requeue_past(conn: sqlite3.Connection, sender: str, current_id: str, high_water: int | None) -> int:
    """Acknowledged mutations of `sender` the server no longer holds (their seq is past its high-water
    mark: it was restored from a backup) become pending again, to be pushed as they were."""
    wire_seq = "coalesce(client_seq, seq)"
    done = conn.execute(
        "UPDATE outbox SET status = 'pending', result = NULL WHERE status IN ('applied', 'conflict', 'duplicate')"
        f" AND coalesce(client_id, ?) = ? AND (? IS NULL OR {wire_seq} > ?)",
        (current_id, sender, high_water, high_water),
    )
    return done.rowcount


def prune(conn: sqlite3.Connection, now: dt.datetime | None = None, keep: dt.timedelta = KEEP_ACKED) -> int:
    """Acknowledged and discarded mutations older than the window go; rejected ones stay until the user
    discards them, pending ones until the server answers."""
    cutoff = ((now or dt.datetime.now(dt.UTC)) - keep).isoformat(timespec="seconds")
    done = conn.execute("DELETE FROM outbox WHERE status IN ('applied', 'conflict', 'duplicate', 'discarded')"
                        " AND coalesce(sent_at, created_at) < ?", (cutoff,))
    return done.rowcount


def discard(conn: sqlite3.Connection, seq: int) -> bool:
    done = conn.execute("UPDATE outbox SET status = 'discarded' WHERE seq = ? AND status IN ('rejected', 'pending')",
                        (seq,))
    return done.rowcount > 0
