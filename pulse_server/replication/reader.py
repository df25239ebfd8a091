"""The replication reader: WAL (pgoutput, through a logical slot) into the shape log.

We stream the slot with `START_REPLICATION` over psycopg's low-level copy interface (`stream.py`),
and acknowledge a position (a standby status update, the slot's confirmed flush position) only after
the shape log has committed every transaction up to it. Each round writes whatever whole
transactions arrived set-wise (a few statements, whatever their number), in one transaction with the
new log head and the NOTIFY that wakes the shape watchers. A crash between the commit and the
acknowledgement replays the same transactions on the next start, which land at the same (lsn, op)
offsets and are ignored.

A transaction of any size passes in bounded memory: a round reads at most `batch_changes` messages,
a transaction sent whole is staged in a temporary table past `spill_changes` changes, and one that
Postgres 14+ streams while it runs (pgoutput version 2) is always staged; at its commit it moves into
the log in SQL (`assembly.py`, `staging.py`; docs/shapes.md, "Big transactions").

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

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pulse_server.memory import release_free_memory
from pulse_server.replication.assembly import Assembler
from pulse_server.replication.batch import Batch, Transaction, build_batch
from pulse_server.replication.origin import CURRENT_TIMELINE, SlotStatus, read_status, slot_name
from pulse_server.replication.pgoutput import DecodeError
from pulse_server.replication.staging import Staging
from pulse_server.replication.stream import WalStream
from pulse_server.shapes.protocol import ROW_COLUMNS

log = logging.getLogger("pulse.replication")

PUBLICATION = "pulse_shapes"
LOG_CHANNEL = "pulse_shape_log"
LEADER_LOCK = 7041978
CHECK_EVERY_S = 5.0  # how often a following reader checks its slot and database again
__all__ = ["LEADER_LOCK", "ReplicationReader", "lsn_int", "lsn_text", "slot_name"]


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class ReadStats:
    transactions: int = 0
    changes: int = 0
    head: tuple[int, int] = (0, 0)


class ReplicationReader:
    def __init__(
        self,
        dsn: str,
        batch_changes: int = 5_000,
        on_error: Callable[[Exception], None] | None = None,
        wait_s: float = 0.5,
        round_s: float = 0.01,
        on_rebuild: Callable[[str], None] | None = None,
        spill_changes: int = 5_000,
        streaming: bool = True,
    ) -> None:
        self.dsn = dsn
        # Messages read per round at most. A change held in memory costs ~2.5 KB decoded and ~3.7 KB
        # more while it is written (measured: a 20,000-change round took 123 MB), so a round stays
        # within ~30 MB; each change's statement share is still negligible at 5,000.
        self.batch_changes = batch_changes
        # Changes of one transaction held in memory at most: past that, it is staged (`staging.py`).
        self.spill_changes = spill_changes
        self.streaming = streaming  # ask Postgres 14+ to stream big transactions as they run
        self.wait_s = wait_s  # how long an idle round waits for the stream (and how often `stop` is checked)
        # A round that logged something is followed by the next one no sooner than this: under a load
        # of small transactions the walsender sends each as it commits, and a round per transaction
        # (a shape log transaction, the decoding, in the server's process) would cost more than
        # the writes; an isolated write after an idle spell is still logged at once.
        self.round_s = round_s
        self.on_error = on_error
        self.on_rebuild = on_rebuild
        self.on_state: Callable[[str], None] | None = None  # told of every state change (wakes held requests)
        self.staging = Staging()
        self.assembler = Assembler(self.staging, spill_changes, self._lookup_usernames)
        self.unreleased = 0  # changes taken since memory was last given back
        self.is_leader = False
        self.usernames: dict[int, str | None] = {}
        self.slot = ""
        self.stream: WalStream | None = None
        self._conn: psycopg.Connection[Any] | None = None  # the connection the staging table is on
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
        self.staging.reset(conn)
        self._conn = conn
        self.assembler = Assembler(self.staging, self.spill_changes, self._lookup_usernames)
        self.acked = confirmed
        streaming = self.streaming and conn.info.server_version >= 140000
        deadline = time.monotonic() + busy_s
        while True:
            try:
                self.stream = WalStream(self.dsn, self.slot, PUBLICATION, streaming=streaming)
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
        stream = self.stream if self.stream is not None and conn is self._conn else self.open_stream(conn)
        try:
            received = stream.read(wait_s, self.batch_changes)
            transactions = self.assembler.feed(conn, received.messages)
            self._release_after_burst(len(received.messages))
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
            if received.server_end > self.acked and self.assembler.partial is None:
                # Every message before that keepalive came, and whole transactions are logged: nothing
                # else for us up to there. Acknowledged, so Postgres can recycle unrelated WAL. (A
                # transaction streamed while it runs commits after that position: a replay sends it.)
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
        """Whole transactions into the shape log, with the new head and a NOTIFY, in one transaction: those
        in memory set-wise, a staged one moved in SQL, in commit order. A round of row changes alone (the
        usual one) is one statement (`Batch.write_alone`)."""
        stats = ReadStats(transactions=len(transactions))
        # The usual round, one statement: its own transaction, so only on a connection in autocommit (as the
        # reader's is), where it commits before the stream is acknowledged.
        if conn.autocommit and not any(tx.staged for tx in transactions):
            batch = self._batch(conn, transactions)
            if batch.plain:
                stats.changes = len(batch.log)
                stats.head = batch.write_alone(conn, LOG_CHANNEL) or self._head(conn)  # None: all logged before
                self.staging.release(conn)  # emptied after an aborted streamed transaction, as every round does
                return stats
        with conn.transaction():
            epoch = self._xid_epoch(conn)
            held: list[Transaction] = []
            for tx in transactions:
                if tx.staged:
                    stats.changes += self._write(conn, held, epoch)
                    held = []
                    stats.changes += self.staging.promote(conn, tx.begin.xid, tx.begin.final_lsn,
                                                          (epoch << 32) | tx.begin.xid)
                else:
                    held.append(tx)
            stats.changes += self._write(conn, held, epoch)
            head = conn.execute(
                "UPDATE shape_state SET head_lsn = h.lsn, head_op = h.op, updated_at = now()"
                " FROM (SELECT lsn, op FROM shape_log ORDER BY lsn DESC, op DESC LIMIT 1) h"
                " WHERE id = 1 RETURNING head_lsn, head_op"
            ).fetchone()
            if head is not None:
                stats.head = (int(head[0]), int(head[1]))
            conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, f"{stats.head[0]}_{stats.head[1]}"))
        self.staging.release(conn)
        return stats

    def _write(self, conn: psycopg.Connection[Any], transactions: list[Transaction], epoch: int) -> int:
        """Transactions held in memory into the log set-wise (after every earlier one is written: a
        change that left TOASTed columns out reads the row's previous state from shape_rows)."""
        if not transactions:
            return 0
        batch = self._batch(conn, transactions)
        batch.write(conn, epoch)
        return len(batch.log)

    def _batch(self, conn: psycopg.Connection[Any], transactions: list[Transaction]) -> Batch:
        batch = build_batch(conn, transactions)
        batch.usernames = self._usernames(conn, {key[0] for key in batch.rows})
        return batch

    @staticmethod
    def _head(conn: psycopg.Connection[Any]) -> tuple[int, int]:
        row = conn.execute("SELECT head_lsn, head_op FROM shape_state WHERE id = 1").fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    @staticmethod
    def _xid_epoch(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        return int(row[0]) >> 32

    def _release_after_burst(self, received: int) -> None:
        """After a burst (at least 10,000 changes) the first idle round gives freed memory back to the
        system: CPython and glibc otherwise keep it for the next burst (docs/shapes.md, "Big transactions")."""
        if received:
            self.unreleased += received
        elif self.unreleased >= 10_000:
            self.unreleased = 0
            release_free_memory()

    def _lookup_usernames(self, user_ids: set[int]) -> dict[int, str | None]:
        assert self._conn is not None
        return self._usernames(self._conn, user_ids)

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

