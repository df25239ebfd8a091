"""Bounded storage: what the sync keeps is bounded by the live data and retention windows, not by writes.

One run (`pulse-server maintain`, or the server's schedule; one instance at a time, under an advisory
lock) does, each in bounded batches of short transactions:
- exactly-once records: results older than the result window are folded into `client_high_water` (each
  (user, client)'s highest seq among them, upserted with greatest()) and deleted in the same statement;
  a replay at or below that seq is still a duplicate (docs/sync.md);
- the conflict audit: rows older than the conflict window are deleted;
- sign-ins: tokens past their expiry (one row per sign-in, kept until now) are deleted, except those an
  erasure of their whole account revoked, which a device back after months still needs to learn it;
- the shape log (docs/shapes.md, "Compaction"): below its live tail, every update followed by a later
  update or delete of the same row is removed (the later one carries the whole row); changes older than
  the shape log window are trimmed, after the horizon below which offsets must refetch is recorded;
- snapshot messages: a row of the shape's current state with none stored (after an upgrade that changed
  their form, or a log rebuilt from a copy) gets it, so a snapshot of it is a concatenation again;
each batch followed by a pause as long as it took (at most 50 ms), so that maintenance takes at most
about half of what Postgres could give the pushes beside it. Then VACUUM of the tables it pruned, so the
space is used again; a table whose files are over twice what its rows take (pruning millions of rows
leaves the files at their largest) is rewritten (VACUUM FULL: the table is small by then, and the
rewrite gives up rather than wait more than REWRITE_LOCK_WAIT for its lock). Last, the tables' sizes
for /metrics and the log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("pulse.maintenance")

MAINTENANCE_LOCK = 7041979
SYNC_TABLES = ("shape_log", "applied_mutations", "client_high_water", "conflicts")
# Sizes reported (/metrics, the log line); `tokens` is read by every request, so it is never rewritten
# (VACUUM FULL would lock it): only vacuumed after a prune
SIZED_TABLES = (*SYNC_TABLES, "tokens")
DAY_S = 86_400
REWRITE_MIN_BYTES = 1 << 20  # smaller tables are never rewritten
REWRITE_LOCK_WAIT = "500ms"  # a rewrite locks its table: writers wait at most this long behind it
TUPLE_OVERHEAD = 28  # a row's header and line pointer, beside its data
# Freshly written, heap and indexes take about 1.2x (shape_log) to 1.6x (applied_mutations, whose two
# indexes cover most of its columns) the rows' data; past 2x, pruning has left the files half empty.
REWRITE_FACTOR = 2


class MaintenanceBusy(Exception):
    """Another instance holds the maintenance lock."""


@dataclass(frozen=True)
class Retention:
    result_days: float = 30.0
    conflict_days: float = 180.0
    shape_log_days: float = 30.0
    tail_changes: int = 10_000  # the newest changes of the shape log, which compaction never touches
    batch: int = 5_000  # rows per transaction


@dataclass
class Report:
    results_pruned: int = 0
    high_water_clients: int = 0  # (user, client) pairs whose high-water seq moved
    conflicts_pruned: int = 0
    tokens_pruned: int = 0  # expired sign-ins
    messages_filled: int = 0  # shape rows whose snapshot message was stored
    log_folded: int = 0  # updates removed because a later change of the same row carries it
    log_trimmed: int = 0  # changes at or below the new horizon
    horizon: tuple[int, int] = (0, 0)
    compacted_through: tuple[int, int] = (0, 0)  # the newest offset below the live tail (0_0: none)
    seconds: float = 0.0
    table_bytes: dict[str, int] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)  # tables compacted on disk (VACUUM FULL)

    def fields(self) -> dict[str, Any]:
        values = asdict(self)
        values["horizon"] = f"{self.horizon[0]}_{self.horizon[1]}"
        values["compacted_through"] = f"{self.compacted_through[0]}_{self.compacted_through[1]}"
        values["seconds"] = round(self.seconds, 3)
        return values


def run(dsn: str, retention: Retention, wait_s: float = 0.0, stop: threading.Event | None = None) -> Report:
    """One maintenance run under the advisory lock; MaintenanceBusy when another holds it past `wait_s`."""
    stop = stop or threading.Event()
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True, application_name="pulse-maintenance") as conn:
        deadline = time.monotonic() + wait_s
        while not _try_lock(conn):
            if time.monotonic() >= deadline:
                raise MaintenanceBusy("maintenance is already running in another process")
            time.sleep(0.2)
        try:
            report = Report()
            report.results_pruned, report.high_water_clients = prune_results(conn, retention, stop)
            report.conflicts_pruned = prune_conflicts(conn, retention, stop)
            report.tokens_pruned = prune_tokens(conn, retention, stop)
            report.horizon, report.log_trimmed, report.log_folded, report.compacted_through = compact_shape_log(
                conn, retention, stop)
            report.messages_filled = fill_messages(conn, retention, stop)
            pruned = [t for t, n in (("shape_log", report.log_trimmed + report.log_folded),
                                     ("applied_mutations", report.results_pruned),
                                     ("conflicts", report.conflicts_pruned),
                                     ("tokens", report.tokens_pruned)) if n]
            if pruned and not stop.is_set():  # the space those rows took can be used again
                conn.execute(sql.SQL("VACUUM {}").format(sql.SQL(", ").join(map(sql.Identifier, pruned))))
            if not stop.is_set():
                report.rewritten = rewrite_bloated(conn)
            report.table_bytes = table_bytes(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK,))
    report.seconds = time.monotonic() - started
    log.info("maintenance done", extra={"fields": report.fields()})
    return report


def _try_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK,)).fetchone()
    return bool(row and row[0])


def _batches(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any], stop: threading.Event,
             count: Callable[[psycopg.Cursor[Any]], int] = lambda cur: cur.rowcount) -> int:
    """Run `statement` (which handles at most one batch) until it handles nothing; the rows handled."""
    total = 0
    while not stop.is_set():
        started = time.monotonic()
        done = count(conn.execute(statement, params))
        total += done
        if done == 0:
            break
        _yield_after(started, stop)
    return total


def _yield_after(started: float, stop: threading.Event) -> None:
    """After a batch, leave Postgres as long as the batch took (at most 50 ms): maintenance takes at
    most about half of what it could from the pushes it runs beside."""
    stop.wait(min(time.monotonic() - started, 0.05))


def prune_results(conn: psycopg.Connection[Any], retention: Retention, stop: threading.Event) -> tuple[int, int]:
    """Results older than the window: each (user, client)'s highest seq among them folded into
    client_high_water, and the rows deleted, in one statement per batch (both or neither). The mark keeps
    the latest time among them too (`pruned_before`): when one was applied, or the stamp it was sent with
    if that was later (clamped), so a replay of any of them is stamped no later (sync.wire.replay)."""
    moved = 0

    def one_batch(cur: psycopg.Cursor[Any]) -> int:
        nonlocal moved
        row = cur.fetchone()
        assert row is not None
        moved += int(row[1])
        return int(row[0])

    pruned = _batches(conn, """
        WITH gone AS (
            DELETE FROM applied_mutations WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM applied_mutations
                 WHERE applied_at < now() - make_interval(secs => %(window_s)s) LIMIT %(batch)s))
            RETURNING user_id, client_id, seq,
                greatest(applied_at, to_timestamp(left(result->>'clamped_from', 16)::bigint / 1000.0)) AS made
        ), folded AS (
            INSERT INTO client_high_water AS h (user_id, client_id, seq, pruned_before, updated_at)
            SELECT user_id, client_id, max(seq), max(made), now() FROM gone GROUP BY user_id, client_id
            ON CONFLICT (user_id, client_id) DO UPDATE SET seq = greatest(h.seq, excluded.seq),
                pruned_before = greatest(h.pruned_before, excluded.pruned_before), updated_at = now()
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM folded)
        """, {"window_s": retention.result_days * DAY_S, "batch": retention.batch}, stop, one_batch)
    return pruned, moved


def fill_messages(conn: psycopg.Connection[Any], retention: Retention, stop: threading.Event) -> int:
    """Shape rows without a stored snapshot message get theirs (`protocol.stored_message`), a batch at a
    time. A row the reader changed meanwhile is left: the reader stored its message with the change."""
    from pulse_server.shapes.protocol import stored_message

    filled = 0
    while not stop.is_set():
        started = time.monotonic()
        rows = conn.execute(
            "SELECT s.user_id, s.date::text, s.value, s.lsn, s.op, u.username FROM shape_rows s"
            " LEFT JOIN users u ON u.id = s.user_id WHERE s.message IS NULL LIMIT %s",
            (retention.batch,),
        ).fetchall()
        if not rows:
            break
        done = conn.execute(
            "UPDATE shape_rows s SET message = m.message"
            " FROM unnest(%s::int8[], %s::date[], %s::int8[], %s::int4[], %s::text[])"
            " AS m(user_id, date, lsn, op, message)"
            " WHERE s.user_id = m.user_id AND s.date = m.date AND s.lsn = m.lsn AND s.op = m.op"
            " AND s.message IS NULL",
            ([r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
             [stored_message(r[2], int(r[0]), r[1], r[5]) for r in rows]),
        ).rowcount
        filled += done
        if done == 0:  # every one of them changed since it was read: the reader stored those
            break
        _yield_after(started, stop)
    return filled


def prune_conflicts(conn: psycopg.Connection[Any], retention: Retention, stop: threading.Event) -> int:
    return _batches(conn, """
        DELETE FROM conflicts WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM conflicts WHERE created_at < now() - make_interval(secs => %(window_s)s)
             LIMIT %(batch)s))
        """, {"window_s": retention.conflict_days * DAY_S, "batch": retention.batch}, stop)


def prune_tokens(conn: psycopg.Connection[Any], retention: Retention, stop: threading.Event) -> int:
    """Tokens past their expiry: a device presenting one is told to log in again whether or not its row is
    kept. Kept: those revoked by the erasure of their whole account (issued before it), which answer
    `account_erased` for good, so a device back after months still drops the account's entries
    (`erasure.account_erasure`, docs/erasure.md)."""
    return _batches(conn, """
        DELETE FROM tokens WHERE ctid = ANY(ARRAY(
            SELECT t.ctid FROM tokens t WHERE t.expires_at < now()
               AND NOT (t.revoked_at IS NOT NULL AND EXISTS (SELECT 1 FROM erasures e
                        WHERE e.user_id = t.user_id AND e.whole_account AND t.created_at <= e.created_at))
             LIMIT %(batch)s))
        """, {"batch": retention.batch}, stop)


def compact_shape_log(conn: psycopg.Connection[Any], retention: Retention,
                      stop: threading.Event) -> tuple[tuple[int, int], int, int, tuple[int, int]]:
    """The horizon after this run, the changes trimmed below it, the updates folded above it, and the
    newest offset below the live tail (what compaction could touch).

    Never touches the live tail (the newest `tail_changes` changes): the replication reader appends
    after it, and live clients read it. Only deletes rows, each batch its own transaction; every state
    between batches is a log a client at any offset at or past the horizon can follow."""
    row = conn.execute("SELECT lsn, op FROM shape_log ORDER BY lsn DESC, op DESC OFFSET %s LIMIT 1",
                       (retention.tail_changes,)).fetchone()
    state = conn.execute("SELECT horizon_lsn, horizon_op, log_id FROM shape_state WHERE id = 1").fetchone()
    assert state is not None
    horizon, build = (int(state[0]), int(state[1])), state[2]
    if row is None:  # the whole log is its live tail
        return horizon, 0, 0, (0, 0)
    upper = (int(row[0]), int(row[1]))  # the newest change below the tail
    trimmed = 0
    newer = conn.execute(
        "SELECT lsn, op FROM shape_log WHERE (lsn, op) <= (%s, %s) AND (lsn, op) > (%s, %s)"
        " AND logged_at < now() - make_interval(secs => %s) ORDER BY lsn DESC, op DESC LIMIT 1",
        (*upper, *horizon, retention.shape_log_days * DAY_S)).fetchone()
    if newer is not None:
        # The horizon first, in its own transaction: from then on, a request whose offset is below it
        # is told to refetch (read in the same snapshot as the log it would otherwise read). Only for the
        # build of the log it was computed from: a rebuild meanwhile starts a log of its own.
        moved = conn.execute("UPDATE shape_state SET horizon_lsn = %s, horizon_op = %s WHERE id = 1 AND log_id = %s",
                             (int(newer[0]), int(newer[1]), build))
        if moved.rowcount != 1:
            return horizon, 0, 0, upper
        horizon = (int(newer[0]), int(newer[1]))
        trimmed = _batches(conn, """
            DELETE FROM shape_log WHERE (lsn, op) IN (
                SELECT lsn, op FROM shape_log WHERE (lsn, op) <= (%(lsn)s, %(op)s) ORDER BY lsn, op LIMIT %(batch)s)
              AND EXISTS (SELECT 1 FROM shape_state WHERE id = 1 AND log_id = %(build)s)
            """, {"lsn": horizon[0], "op": horizon[1], "batch": retention.batch, "build": build}, stop)
    folded = _fold_updates(conn, build, horizon, upper, retention.batch, stop)
    return horizon, trimmed, folded, upper


def _fold_updates(conn: psycopg.Connection[Any], build: Any, horizon: tuple[int, int], upper: tuple[int, int],
                  batch: int, stop: threading.Event) -> int:
    """Remove each update in (horizon, upper] whose row has a later update or delete in the log. The
    victims are chosen once, then deleted in batches: the last change of a row is never a victim, and
    a victim's later change is removed only if it has a later one too, so whatever batches have run,
    each removed update is covered by a later change of its row still in the log."""
    if stop.is_set() or upper <= horizon:
        return 0
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS pulse_fold (lsn bigint, op integer)")
    conn.execute("TRUNCATE pulse_fold")
    conn.execute("""
        INSERT INTO pulse_fold
        SELECT lsn, op FROM (
            SELECT lsn, op, operation,
                   lead(operation) OVER (PARTITION BY user_id, date ORDER BY lsn, op) AS next
              FROM shape_log WHERE (lsn, op) > (%s, %s)) AS c
         WHERE operation = 'update' AND next IN ('update', 'delete') AND (lsn, op) <= (%s, %s)
        """, (*horizon, *upper))
    folded = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            row = conn.execute("""
                WITH chosen AS (
                    DELETE FROM pulse_fold WHERE ctid = ANY(ARRAY(SELECT ctid FROM pulse_fold LIMIT %(batch)s))
                    RETURNING lsn, op
                ), gone AS (
                    DELETE FROM shape_log l USING chosen c WHERE l.lsn = c.lsn AND l.op = c.op
                       AND EXISTS (SELECT 1 FROM shape_state WHERE id = 1 AND log_id = %(build)s)
                    RETURNING 1
                )
                SELECT (SELECT count(*) FROM chosen), (SELECT count(*) FROM gone)
                """, {"batch": batch, "build": build}).fetchone()
            assert row is not None
            folded += int(row[1])
            if int(row[0]) == 0:
                break
            _yield_after(started, stop)
    finally:
        conn.execute("DROP TABLE IF EXISTS pulse_fold")
    return folded


def rewrite_bloated(conn: psycopg.Connection[Any]) -> list[str]:
    """VACUUM FULL each sync table whose files (heap and indexes) are over REWRITE_FACTOR times what its
    rows take (and over 1 MiB). The rows' size is estimated from Postgres's statistics: the row count
    (which the VACUUM just before updated) times the columns' average widths (ANALYZEd here first if
    the table never was), plus each row's overhead."""
    done = []
    for table in SYNC_TABLES:
        analyzed = conn.execute("SELECT 1 FROM pg_stats WHERE schemaname = 'public' AND tablename = %s LIMIT 1",
                                (table,)).fetchone()
        if analyzed is None:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        row = conn.execute(
            "SELECT pg_total_relation_size(c.oid), greatest(c.reltuples, 0) * (%s + coalesce("
            " (SELECT sum(avg_width) FROM pg_stats s WHERE s.schemaname = 'public' AND s.tablename = %s), 0))"
            " FROM pg_class c WHERE c.oid = %s::regclass", (TUPLE_OVERHEAD, table, table)).fetchone()
        assert row is not None
        size, live = int(row[0]), float(row[1])
        if size <= REWRITE_MIN_BYTES or size <= REWRITE_FACTOR * live:
            continue
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(REWRITE_LOCK_WAIT)))
        try:
            conn.execute(sql.SQL("VACUUM FULL {}").format(sql.Identifier(table)))
            done.append(table)
        except psycopg.errors.LockNotAvailable:
            log.info("maintenance: table busy, not rewritten this time", extra={"fields": {"table": table}})
        finally:
            conn.execute("RESET lock_timeout")
    return done


def table_bytes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT t, pg_total_relation_size(t::regclass) FROM unnest(%s::text[]) AS t",
                        (list(SIZED_TABLES),)).fetchall()
    return {str(name): int(size) for name, size in rows}


class Schedule:
    """The server's maintenance schedule: apscheduler fires every `interval_s`; each run happens on a
    daemon thread of its own (a run can take minutes, and must not hold the process when it stops) and is
    skipped when one is still running here or another instance holds the lock."""

    def __init__(self, dsn: str, retention: Retention, interval_s: float,
                 on_report: Callable[[Report | None, BaseException | None], None]) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.dsn, self.retention, self.on_report = dsn, retention, on_report
        self.stop_event = threading.Event()
        self._running = threading.Lock()
        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(self.trigger, "interval", seconds=interval_s, id="pulse-maintenance",
                               max_instances=1, coalesce=True)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.scheduler.shutdown(wait=False)

    def trigger(self) -> None:
        if self._running.acquire(blocking=False):
            threading.Thread(target=self._run, name="pulse-maintenance", daemon=True).start()

    def _run(self) -> None:
        try:
            report = run(self.dsn, self.retention, stop=self.stop_event)
        except MaintenanceBusy:
            self.on_report(None, None)
        except Exception as exc:  # logged and counted; the next run tries again
            log.warning("maintenance failed", exc_info=not isinstance(exc, psycopg.Error),
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            self.on_report(None, exc)
        else:
            self.on_report(report, None)
        finally:
            self._running.release()
