"""The replication reader: WAL (pgoutput, through a logical slot) into the shape log.

We stream the slot with `START_REPLICATION` over psycopg's low-level copy interface (`stream.py`),
and acknowledge a position (a standby status update, the slot's confirmed flush position) only after
the shape log has committed every transaction up to it. Each round writes whatever whole
transactions arrived set-wise (a few statements, whatever their number), in one transaction with the
new log head and the NOTIFY that wakes the shape watchers. A crash between the commit and the
acknowledgement replays the same transactions on the next start, which land at the same (lsn, op)
offsets and are ignored.

Why streaming and not `pg_logical_slot_peek_binary_changes` + `pg_replication_slot_advance`: both of
those decode from the slot's restart point, which Postgres moves only when it logs the running
transactions (about every 15 s), so under a steady write load every peek and every advance re-read
up to 15 s of WAL: most of the reader's cost, and more Postgres CPU than the pushes themselves. The
walsender decodes each record once, and wakes us when a transaction commits (no polling).

One reader at a time, among any number of server instances: the leader holds a session advisory
lock on a dedicated connection (which also writes the shape log); when it dies, its connections
drop, the lock and the slot are freed and another instance takes over.

Self-healing: before it streams (and every few seconds while it does) the leader checks that the log
still follows what it was built from (`origin.py`). If not (the slot missing or invalidated, a
restored database, a promoted standby) it recreates the slot and rebuilds the log from `entries` under
a new random log id, which every handle carries: every client refetches, and the refetch holds exactly
what Postgres holds. Its state (`starting`, `standby`, `rebuilding`, `following`, `failing`) is what
readiness and `/metrics` report; only `following` lets a shape request answer up-to-date.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pulse_server.replication.origin import CURRENT_TIMELINE, SlotStatus, read_status, slot_name
from pulse_server.replication.pgoutput import Begin, Change, Commit, DecodeError, Decoder, Relation, Truncate
from pulse_server.replication.stream import WalStream
from pulse_server.shapes.protocol import ROW_COLUMNS, row_json, stored_message

log = logging.getLogger("pulse.replication")

PUBLICATION = "pulse_shapes"
LOG_CHANNEL = "pulse_shape_log"
ERASED_CHANNEL = "pulse_erased"  # an erasure's days left the log: watchers drop them from their tails
LEADER_LOCK = 7041978
SYNCED_TABLES = ("entries",)
ERASURES_TABLE = "erasures"  # published too (migration 0011): its inserts purge the log of the erased days
CHECK_EVERY_S = 5.0  # how often a following reader checks its slot and database again
__all__ = ["LEADER_LOCK", "ReplicationReader", "lsn_int", "lsn_text", "slot_name"]


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
class Erased:
    """An erasure record read from the stream: its user, days (None: an open end) and transaction's LSN."""

    user_id: int
    first: str | None
    last: str | None
    lsn: int

    def payload(self) -> str:
        return json.dumps({"user_id": self.user_id, "from": self.first, "to": self.last, "lsn": self.lsn})


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
    """One round's transactions, written set-wise: every change into shape_log, and the last change of each row
    into shape_rows (a few statements per batch, not several per change)."""

    log: list[LogEntry] = field(default_factory=list)
    rows: dict[Key, LogEntry] = field(default_factory=dict)  # the last change of each row, after any truncate
    truncated: bool = False  # a truncate came before the changes in `rows`
    usernames: dict[int, str | None] = field(default_factory=dict)
    erasures: list[Erased] = field(default_factory=list)  # erasure records committed in these transactions

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
        for erased in self.erasures:
            # Every change of an erased day before the erasure's transaction leaves the log, so no value
            # of it stays (docs/erasure.md); the erasure's own deletes (key only) stay, and a client behind
            # them reads those, which is all it needs of the rows. The watchers drop them from their tails.
            conn.execute(
                "DELETE FROM shape_log WHERE user_id = %s AND (%s::date IS NULL OR date >= %s::date)"
                " AND (%s::date IS NULL OR date <= %s::date) AND lsn < %s",
                (erased.user_id, erased.first, erased.first, erased.last, erased.last, erased.lsn))
            conn.execute("SELECT pg_notify(%s, %s)", (ERASED_CHANNEL, erased.payload()))
        if self.truncated:  # clients cannot follow a truncate change by change: every handle must refetch
            conn.execute("DELETE FROM shape_rows")
            conn.execute("UPDATE shape_state SET generation = generation + 1, log_id = gen_random_uuid() WHERE id = 1")
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
        wait_s: float = 0.5,
        round_s: float = 0.01,
        on_rebuild: Callable[[str], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.batch_changes = batch_changes  # messages read per round at most
        self.wait_s = wait_s  # how long an idle round waits for the stream (and how often `stop` is checked)
        # A round that logged something is followed by the next one no sooner than this: under a load
        # of small transactions the walsender sends each as it commits, and a round per transaction
        # (a shape log transaction, the decoding, in the server's process) would cost more than
        # the writes; an isolated write after an idle spell is still logged at once.
        self.round_s = round_s
        self.on_error = on_error
        self.on_rebuild = on_rebuild
        self.on_state: Callable[[str], None] | None = None  # told of every state change (wakes held requests)
        self.decoder = Decoder()
        self.is_leader = False
        self.usernames: dict[int, str | None] = {}
        self.slot = ""
        self.stream: WalStream | None = None
        self.partial: Transaction | None = None  # a transaction whose commit has not arrived yet
        self.acked = 0  # the last position acknowledged on this stream
        # What readiness and /metrics report.
        self.state = "starting"
        self.reason = "the replication reader has not started yet"
        self.rebuilds = 0
        self.lag_bytes = 0  # the server's WAL end (from its keepalives) minus what we acknowledged
        self.lag_s = 0.0  # age of the newest commit the last busy round logged; 0 after an idle round
        self.server_end = 0

    def _set_state(self, state: str, reason: str = "") -> None:
        if (state, reason) != (self.state, self.reason):
            self.state, self.reason = state, reason
            level = logging.WARNING if state == "failing" else logging.INFO
            log.log(level, "replication reader state", extra={"fields": {"state": state, "reason": reason}})
            if self.on_state is not None:
                self.on_state(state)

    # -- the slot and its stream -------------------------------------------------------------------
    def ensure_slot(self, conn: psycopg.Connection[Any]) -> str:
        """The slot the log follows; when the log cannot trust it (missing, invalidated, another
        database's, another cluster or timeline), the slot is recreated and the log rebuilt first."""
        status = read_status(conn)
        if status.rebuild_reason is not None and not status.standby:
            self.rebuild(conn, status)
        self.slot = status.slot
        return self.slot

    def rebuild(self, conn: psycopg.Connection[Any], status: SlotStatus) -> int:
        """Recreate the slot, then the log from `entries` under a new generation and a new random log id
        (handles carry it: no client ever held one of the new handles, also after a database was restored
        from a dump of an earlier state). Rows changed after the slot exists are also in its stream, at a
        later offset, which wins. Returns the number of rows copied."""
        reason = status.rebuild_reason or "asked"
        self._set_state("rebuilding", reason)
        level = logging.INFO if status.first_build else logging.WARNING
        log.log(level, "rebuilding the shape log", extra={"fields": {"reason": reason, "slot": status.slot}})
        self.close()
        self._drop_slot(conn, status.slot)
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (status.slot,))
        self.slot = status.slot
        copied = self._copy_entries(conn, reason)
        self.usernames = {}
        if not status.first_build:
            self.rebuilds += 1
            if self.on_rebuild is not None:
                self.on_rebuild(reason)
        log.log(level, "shape log rebuilt", extra={"fields": {"reason": reason, "rows": copied, "slot": status.slot}})
        return copied

    @staticmethod
    def _drop_slot(conn: psycopg.Connection[Any], slot: str, timeout_s: float = 10.0) -> None:
        """Drop this database's slot of that name if it exists. Its walsender, if any, streams for a reader
        that is gone (this one holds the leader lock): it is ended first."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s"
                               " AND database = current_database()", (slot,)).fetchone()
            if row is None:
                return
            if row[0] is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _copy_entries(self, conn: psycopg.Connection[Any], reason: str) -> int:
        """The log emptied and `shape_rows` copied from `entries` (Postgres text, as pgoutput sends it), in
        one transaction with the new generation, log id and origin: a request sees the old log or the new."""
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
        # Each row's snapshot message is built here too (as the reader stores it with a change), so a
        # snapshot after a rebuild is still stored text joined together.
        message = sql.SQL(
            "'{{\"key\":' || to_json(format('\"public\".\"entries\"/\"%s\"/\"%s\"', e.user_id, e.date))::text"
            " || ',\"value\":' || (v.value || jsonb_build_object('username', u.username))::text"
            " || {tail}"
        ).format(tail=sql.Literal(',"headers":{"operation":"insert","relation":["public","entries"]}}'))
        with conn.transaction():
            conn.execute("DELETE FROM shape_log")
            conn.execute("DELETE FROM shape_rows")
            done = conn.execute(
                sql.SQL(
                    "INSERT INTO shape_rows (user_id, date, value, lsn, op, message)"
                    " SELECT e.user_id, e.date, v.value, 0, 0, {message}"
                    " FROM entries e CROSS JOIN LATERAL (SELECT jsonb_build_object({pairs}) AS value) v"
                    " LEFT JOIN users u ON u.id = e.user_id"
                ).format(pairs=pairs, message=message)
            )
            conn.execute(
                f"UPDATE shape_state SET head_lsn = 0, head_op = 0, horizon_lsn = 0, horizon_op = 0,"
                f" generation = generation + 1, log_id = gen_random_uuid(), slot_name = %s,"
                f" system_identifier = (SELECT system_identifier::text FROM pg_control_system()),"
                f" timeline = {CURRENT_TIMELINE}, rebuilt_at = now(), rebuild_reason = %s, updated_at = now()"
                f" WHERE id = 1",
                (self.slot, reason),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, "0_0"))
        return done.rowcount

    def open_stream(self, conn: psycopg.Connection[Any], busy_s: float = 10.0) -> WalStream:
        """Stream the slot from the position it has confirmed, with a new decoder (a new stream sends
        each relation again) and no transaction half read."""
        self.close()
        # Acknowledge nothing below the confirmed position: while the walsender decodes again from the
        # slot's restart point, its keepalives carry positions behind it.
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                           (self.slot,)).fetchone()
        confirmed = lsn_int(row[0]) if row is not None and row[0] is not None else 0
        self.decoder, self.partial, self.acked = Decoder(), None, confirmed
        deadline = time.monotonic() + busy_s
        while True:
            try:
                self.stream = WalStream(self.dsn, self.slot, PUBLICATION)
                return self.stream
            except psycopg.errors.ObjectInUse:
                # The walsender of a reader that just died holds the slot until it notices.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    # -- one round ---------------------------------------------------------------------------------
    def read_once(self, conn: psycopg.Connection[Any], wait_s: float = 0.0) -> ReadStats:
        """What the stream brought (waiting up to `wait_s` if nothing had): whole transactions written
        to the shape log and committed, then acknowledged."""
        stream = self.stream or self.open_stream(conn)
        try:
            received = stream.read(wait_s, self.batch_changes)
            transactions = self._transactions(received.messages)
            stats = ReadStats()
            if transactions:
                stats = self.record(conn, transactions)
                last = transactions[-1].commit
                assert last is not None
                self.acked = max(self.acked, last.end_lsn)
                stream.acknowledge(self.acked)  # only now that the shape log has committed
                committed_us = transactions[-1].begin.commit_time_us  # Unix microseconds
                self.lag_s = max(0.0, time.time() - committed_us / 1_000_000)
            elif not received.messages:
                self.lag_s = 0.0
            self.server_end = max(self.server_end, received.server_end, self.acked)
            if received.server_end > self.acked and self.partial is None:
                # Every message before that keepalive came, and whole transactions are logged: nothing
                # else for us up to there. Acknowledged, so Postgres can recycle unrelated WAL.
                self.acked = received.server_end
                stream.acknowledge(self.acked)
            elif received.reply_requested:
                stream.acknowledge(self.acked)
            self.lag_bytes = max(0, self.server_end - self.acked)
        except BaseException:
            # What this round took from the stream may not be logged: the next stream starts again from
            # the slot's confirmed position, never after it.
            self.close()
            raise
        return stats

    def catch_up(self, conn: psycopg.Connection[Any], timeout_s: float = 10.0) -> ReadStats:
        """Rounds until everything in the WAL when called is read and acknowledged (tests and tools)."""
        row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
        target, deadline = lsn_int(row[0]), time.monotonic() + timeout_s
        total = ReadStats()
        while True:
            stats = self.read_once(conn, wait_s=0.05)
            total.transactions += stats.transactions
            total.changes += stats.changes
            total.head = stats.head if stats.transactions else total.head
            if self.acked >= target:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replication stream did not reach {lsn_text(target)} in {timeout_s} s")
            assert self.stream is not None
            self.stream.acknowledge(self.acked, reply_requested=True)  # a keepalive tells where it is

    def record(self, conn: psycopg.Connection[Any], transactions: list[Transaction]) -> ReadStats:
        """Whole transactions into the shape log, with the new head and a NOTIFY, in one transaction."""
        stats = ReadStats()
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
        return stats

    def _transactions(self, messages: list[bytes]) -> list[Transaction]:
        """The transactions these messages complete; one begun but not committed waits for the rest."""
        done: list[Transaction] = []
        current = self.partial
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
        self.partial = current
        return done

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
            batch.erasures.extend(_erasures(tx, lsn))
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

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Become the leader (or wait to), then follow the stream, until `stop` is set."""
        while not stop.is_set():
            try:
                self._lead(stop)
            except Exception as exc:  # whatever it was, the thread must not end: log it and retry
                self.is_leader = False
                was_following = self.state == "following"
                self._set_state("failing", f"{type(exc).__name__}: {exc}".splitlines()[0])
                if self.on_error:
                    self.on_error(exc)
                expected = isinstance(exc, (psycopg.Error, DecodeError))
                log.warning("replication reader stopped; retrying", exc_info=not expected,
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
                # A stream that broke while following is retried at once (its slot may just need
                # healing); failing again, every second.
                stop.wait(0.1 if was_following else 1.0)
            finally:
                self.close()
        self.is_leader = False
        self._set_state("stopped", "the server is shutting down")

    def _lead(self, stop: threading.Event) -> None:
        with psycopg.connect(self.dsn, autocommit=True, application_name="pulse-replication",
                             connect_timeout=5) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                if row and row[0]:
                    break
                self._set_state("standby", "another server instance leads the replication reader")
                stop.wait(1.0)
            if stop.is_set():
                return
            self.is_leader = True
            self._set_state("starting", "opening the replication stream")
            self.ensure_slot(conn)
            self.open_stream(conn)
            self._set_state("following")
            checked = time.monotonic()
            while not stop.is_set():
                started = time.monotonic()
                if started - checked >= CHECK_EVERY_S:
                    checked = started
                    status = read_status(conn)
                    if status.rebuild_reason is not None:  # found while streaming: start again (and heal)
                        raise psycopg.OperationalError(status.rebuild_reason)
                if self.read_once(conn, self.wait_s).transactions:
                    stop.wait(started + self.round_s - time.monotonic())


def _erasures(tx: Transaction, lsn: int) -> list[Erased]:
    return [Erased(int(c.new["user_id"] or 0), c.new.get("date_from"), c.new.get("date_to"), lsn)
            for c in tx.changes if isinstance(c, Change) and c.operation == "insert" and c.new is not None
            and isinstance(c.relation, Relation) and c.relation.name == ERASURES_TABLE]


def _synced(change: Change | Truncate) -> bool:
    if isinstance(change, Truncate):
        return any(r.name in SYNCED_TABLES for r in change.relations)
    return isinstance(change.relation, Relation) and change.relation.name in SYNCED_TABLES
