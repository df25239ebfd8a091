"""The replication reader: WAL (pgoutput, through a logical slot) into the shape log.

We read with `pg_logical_slot_peek_binary_changes` and advance the slot with
`pg_replication_slot_advance` only after the shape log has committed. Each peek writes a whole
batch set-wise (a few statements, whatever its size). Between peeks the reader polls a write counter
(a sequence a statement trigger on entries bumps) and the WAL flush position, one cheap query every
few milliseconds while entries change and less often when idle; a NOTIFY from that trigger would
serialise every writer's commits on a cluster-wide lock. Why this way and not START_REPLICATION over
psycopg's copy interface: acknowledging is then an ordinary SQL call made strictly after our own
commit, so "acknowledged only once durable" holds by construction; a crash between the two replays
the same transactions, which land at the same (lsn, op) offsets and are ignored. The cost is a
round trip per batch instead of a stream, which the batch size amortises.

One reader at a time, among any number of server instances: the leader holds a session advisory
lock on a dedicated connection; when it dies, its connection drops, the lock is freed and another
instance takes over.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pulse_server.replication.pgoutput import Begin, Change, Commit, DecodeError, Decoder, Relation, Truncate
from pulse_server.shapes.protocol import ROW_COLUMNS, row_json, stored_message

log = logging.getLogger("pulse.replication")

PUBLICATION = "pulse_shapes"
LOG_CHANNEL = "pulse_shape_log"
LEADER_LOCK = 7041978
SYNCED_TABLES = ("entries",)


def slot_name(database: str) -> str:
    """Slots are cluster-wide, so the name carries the database's."""
    safe = "".join(c if c.isalnum() else "_" for c in database.lower())
    return f"pulse_shapes_{safe}"[:63]


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class Transaction:
    begin: Begin
    changes: list[Change | Truncate] = field(default_factory=list)
    commit: Commit | None = None


@dataclass
class ReadStats:
    transactions: int = 0
    changes: int = 0
    head: tuple[int, int] = (0, 0)


Key = tuple[int, str]  # (user_id, date)


@dataclass(frozen=True)
class LogEntry:
    lsn: int
    op: int
    txid: int
    key: Key
    operation: str  # "insert" | "update" | "delete"
    row: dict[str, str | None]

    @functools.cached_property
    def value(self) -> str:
        """The row's shape columns as JSON, for both shape_log and shape_rows."""
        return row_json(self.row)


@dataclass
class Batch:
    """One peeked batch, written set-wise: every change into shape_log, and the last change of each row
    into shape_rows (a few statements per batch, not several per change)."""

    log: list[LogEntry] = field(default_factory=list)
    rows: dict[Key, LogEntry] = field(default_factory=dict)  # the last change of each row, after any truncate
    truncated: bool = False  # a truncate came before the changes in `rows`
    usernames: dict[int, str | None] = field(default_factory=dict)

    def add(self, entry: LogEntry) -> None:
        self.log.append(entry)
        self.rows[entry.key] = entry

    def truncate(self) -> None:
        self.rows.clear()
        self.truncated = True

    def current(self, key: Key) -> dict[str, str | None] | None:
        """The row as this batch left it so far; None when only the database knows."""
        entry = self.rows.get(key)
        if entry is None:
            return {} if self.truncated else None
        return {} if entry.operation == "delete" else entry.row

    def write(self, conn: psycopg.Connection[Any]) -> None:
        if self.log:
            conn.execute(
                "INSERT INTO shape_log (lsn, op, txid, user_id, date, operation, value)"
                " SELECT * FROM unnest(%b::int8[], %b::int4[], %b::int8[], %b::int8[], %b::text[]::date[],"
                " %b::text[], %b::text[]::jsonb[]) ON CONFLICT DO NOTHING",
                _columns(self.log, lambda e: (e.lsn, e.op, e.txid, e.key[0], e.key[1], e.operation, e.value)),
            )
        if self.truncated:  # clients cannot follow a truncate change by change: every handle must refetch
            conn.execute("DELETE FROM shape_rows")
            conn.execute("UPDATE shape_state SET generation = generation + 1 WHERE id = 1")
        gone = [e for e in self.rows.values() if e.operation == "delete"]
        if gone:
            conn.execute(
                "DELETE FROM shape_rows s USING unnest(%b::int8[], %b::text[]::date[], %b::int8[], %b::int4[])"
                " AS k(user_id, date, lsn, op)"
                " WHERE s.user_id = k.user_id AND s.date = k.date AND (s.lsn, s.op) < (k.lsn, k.op)",
                _columns(gone, lambda e: (e.key[0], e.key[1], e.lsn, e.op)),
            )
        present = [e for e in self.rows.values() if e.operation != "delete"]
        if present:
            # `message` is the row's snapshot message with every column, encoded once here rather than
            # on every snapshot request.
            conn.execute(
                "INSERT INTO shape_rows (user_id, date, value, lsn, op, message)"
                " SELECT * FROM unnest(%b::int8[], %b::text[]::date[], %b::text[]::jsonb[], %b::int8[],"
                " %b::int4[], %b::text[])"
                " ON CONFLICT (user_id, date) DO UPDATE SET value = excluded.value, lsn = excluded.lsn,"
                " op = excluded.op, message = excluded.message"
                " WHERE (shape_rows.lsn, shape_rows.op) < (excluded.lsn, excluded.op)",
                _columns(present, lambda e: (e.key[0], e.key[1], e.value, e.lsn, e.op,
                                             stored_message(e.value, *e.key, self.usernames.get(e.key[0])))),
            )


def _columns(entries: list[LogEntry], fields: Callable[[LogEntry], tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to columns: one array parameter per column, for unnest()."""
    return [list(column) for column in zip(*(fields(e) for e in entries), strict=True)]


class ReplicationReader:
    def __init__(
        self,
        dsn: str,
        batch_changes: int = 20_000,
        on_error: Callable[[Exception], None] | None = None,
        poll_s: float = 0.005,
        idle_poll_s: float = 0.02,
        hot_s: float = 2.0,
        repeek_s: float = 0.02,
        sweep_s: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.batch_changes = batch_changes
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self.hot_s = hot_s
        self.repeek_s = repeek_s
        self.sweep_s = sweep_s
        self.on_error = on_error
        self.decoder = Decoder()
        self.lag_bytes = 0
        self.is_leader = False
        self.usernames: dict[int, str | None] = {}
        self.seen_flush = ""  # the WAL flush position the last peek read up to
        self.peeked_at = 0.0  # time.monotonic() of the last peek
        self.seen_writes = ""  # the write counter as last polled
        self.peeked_writes = ""  # the write counter when the reader last went to peek
        self.hot_until = 0.0  # entries changed lately: poll fast until then

    # -- one round ---------------------------------------------------------------------------------
    def ensure_slot(self, conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        slot = slot_name(row[0])
        exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if exists is None:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            log.info("created replication slot", extra={"fields": {"slot": slot}})
            self.slot = slot
            self.backfill(conn)
        self.slot = slot
        return slot

    @staticmethod
    def backfill(conn: psycopg.Connection[Any]) -> int:
        """Rows that existed before the slot: into shape_rows at offset (0, 0), as Postgres text.

        Taken after the slot exists, so nothing falls between the two: a change committed meanwhile is
        also in the slot's stream, at a later offset, which wins. Handles move to a new generation."""
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND table_name = 'entries' ORDER BY ordinal_position"
        ).fetchall() if r[0] in ROW_COLUMNS]
        # format('%s') uses each type's output function, as pgoutput does ('f', not 'false').
        pairs = sql.SQL(", ").join(
            sql.SQL("{name}, CASE WHEN {col} IS NULL THEN NULL ELSE format('%s', {col}) END").format(
                name=sql.Literal(c), col=sql.Identifier(c))
            for c in columns
        )
        with conn.transaction():
            # A recreated slot (dropped, or lost in a failover) leaves rows that changed or went away
            # meanwhile: the copy replaces them all.
            conn.execute(
                "DELETE FROM shape_rows s WHERE NOT EXISTS"
                " (SELECT 1 FROM entries e WHERE e.user_id = s.user_id AND e.date = s.date)"
            )
            done = conn.execute(
                sql.SQL(
                    "INSERT INTO shape_rows (user_id, date, value, lsn, op)"
                    " SELECT user_id, date, jsonb_build_object({}), 0, 0 FROM entries"
                    " ON CONFLICT (user_id, date) DO UPDATE SET value = excluded.value, lsn = 0, op = 0,"
                    " message = NULL"
                ).format(pairs)
            )
            conn.execute("UPDATE shape_state SET generation = generation + 1 WHERE id = 1")
        return done.rowcount

    def read_once(self, conn: psycopg.Connection[Any]) -> ReadStats:
        """Peek a batch, write whole transactions to the shape log, commit, then advance the slot."""
        # The flush position: decoding reads no further, so nothing past it is acknowledged unread.
        before = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert before is not None
        self.seen_flush, self.peeked_at = before[0], time.monotonic()
        rows = conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s,"
            " 'proto_version', '1', 'publication_names', %s)",
            (self.slot, self.batch_changes, PUBLICATION),
        ).fetchall()
        transactions = self._transactions(bytes(r[0]) for r in rows)
        stats = ReadStats()
        if not transactions:
            if not rows:
                # Nothing for us up to `before`: acknowledge it, so Postgres can recycle unrelated WAL.
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, before[0]))
            self._measure_lag(conn)
            return stats
        with conn.transaction():
            batch = self._batch(conn, transactions)
            batch.write(conn)
            stats.transactions, stats.changes = len(transactions), len(batch.log)
            head = conn.execute(
                "UPDATE shape_state SET head_lsn = h.lsn, head_op = h.op, updated_at = now()"
                " FROM (SELECT lsn, op FROM shape_log ORDER BY lsn DESC, op DESC LIMIT 1) h"
                " WHERE id = 1 RETURNING head_lsn, head_op"
            ).fetchone()
            if head is not None:
                stats.head = (int(head[0]), int(head[1]))
            conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, f"{stats.head[0]}_{stats.head[1]}"))
        last = transactions[-1].commit
        assert last is not None
        # Acknowledge only now that the shape log has committed.
        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, lsn_text(last.end_lsn)))
        self._measure_lag(conn)
        return stats

    def _transactions(self, messages: Any) -> list[Transaction]:
        done: list[Transaction] = []
        current: Transaction | None = None
        for data in messages:
            message = self.decoder.decode(data)
            if isinstance(message, Begin):
                current = Transaction(message)
            elif isinstance(message, (Change, Truncate)) and current is not None:
                current.changes.append(message)
            elif isinstance(message, Commit) and current is not None:
                current.commit = message
                done.append(current)
                current = None
        return done  # an incomplete transaction at the end is read again next round

    @staticmethod
    def _xid_epoch(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        return int(row[0]) >> 32

    def _batch(self, conn: psycopg.Connection[Any], transactions: list[Transaction]) -> Batch:
        """The log entries of these transactions, and the final state of every row they touch."""
        epoch = self._xid_epoch(conn)
        batch = Batch()
        for tx in transactions:
            lsn = tx.begin.final_lsn
            txid = (epoch << 32) | tx.begin.xid
            for op, change in enumerate(c for c in tx.changes if _synced(c)):
                if isinstance(change, Truncate):
                    batch.truncate()
                    continue
                row = change.new if change.new is not None else change.old
                assert row is not None
                if change.new is not None and change.old is not None:
                    row = {**change.old, **change.new}
                key = (int(row["user_id"] or 0), str(row["date"]))
                if change.unchanged:  # unchanged TOASTed columns are not sent: keep what we have
                    previous = batch.current(key)
                    if previous is None:
                        stored = conn.execute(
                            "SELECT value FROM shape_rows WHERE user_id = %s AND date = %s", key
                        ).fetchone()
                        previous = stored[0] if stored else {}
                    row = {**{k: previous.get(k) for k in change.unchanged}, **row}
                batch.add(LogEntry(lsn, op, txid, key, change.operation, row))
        batch.usernames = self._usernames(conn, {key[0] for key in batch.rows})
        return batch

    def _usernames(self, conn: psycopg.Connection[Any], user_ids: set[int]) -> dict[int, str | None]:
        """Usernames never change, so they are read once per user and kept."""
        missing = [u for u in user_ids if u not in self.usernames]
        if missing:
            found = dict(conn.execute("SELECT id, username FROM users WHERE id = ANY(%s)", (missing,)).fetchall())
            self.usernames.update({u: found.get(u) for u in missing})
        return {u: self.usernames[u] for u in user_ids}

    def _measure_lag(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        ).fetchone()
        self.lag_bytes = int(row[0]) if row and row[0] is not None else 0

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Become the leader (or wait to), then read whenever the WAL moves, until `stop` is set."""
        while not stop.is_set():
            try:
                self._lead(stop)
            except (psycopg.Error, DecodeError) as exc:
                self.is_leader = False
                if self.on_error:
                    self.on_error(exc)
                log.warning("replication reader stopped; retrying", extra={"fields": {"error": str(exc)}})
                stop.wait(1.0)

    def _lead(self, stop: threading.Event) -> None:
        with psycopg.connect(self.dsn, autocommit=True, application_name="pulse-replication") as conn:
            while not stop.is_set():
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                if row and row[0]:
                    break
                stop.wait(1.0)
            if stop.is_set():
                return
            self.is_leader = True
            self.ensure_slot(conn)
            while not stop.is_set():
                if self.read_once(conn).transactions:
                    continue
                self._wait_for_writes(conn, stop)

    def _wait_for_writes(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        """Until entries may have changed since the last peek, or `stop`.

        One cheap query per poll: the write counter (a sequence the statement trigger on entries bumps;
        not NOTIFY, whose commit-time lock would serialise every writer) and the WAL flush position.
        The reader peeks once the WAL has moved and: the counter moved since the last peek; or, for
        `hot_s` after it last moved, `repeek_s` passed (the writer commits after it bumps the counter,
        so the first peek may come too early); or `sweep_s` passed (writes that fire no trigger, e.g.
        under session_replication_role = replica). It polls every `poll_s` while hot, otherwise every
        `idle_poll_s`. Peeking on every move of the WAL would decode every database's writes in the
        cluster a few milliseconds apart."""
        while True:
            hot = time.monotonic() < self.hot_until
            if stop.wait(self.poll_s if hot else self.idle_poll_s):
                return
            row = conn.execute(
                "SELECT (SELECT (last_value, is_called)::text FROM pulse_entries_writes),"
                " pg_current_wal_flush_lsn()::text"
            ).fetchone()
            assert row is not None
            writes, flush = row
            now = time.monotonic()
            if writes != self.seen_writes:
                self.seen_writes = writes
                self.hot_until = now + self.hot_s
            if flush != self.seen_flush and (
                writes != self.peeked_writes
                or (now < self.hot_until and now >= self.peeked_at + self.repeek_s)
                or now >= self.peeked_at + self.sweep_s
            ):
                self.peeked_writes = writes
                return


def _synced(change: Change | Truncate) -> bool:
    if isinstance(change, Truncate):
        return any(r.name in SYNCED_TABLES for r in change.relations)
    return isinstance(change.relation, Relation) and change.relation.name in SYNCED_TABLES
