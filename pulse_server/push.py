"""Reconciling pushed mutations into Postgres, exactly once (docs/push-protocol.md).

One transaction per batch, a savepoint per mutation. Each mutation is checked with the same rules as
the device (pulse_core), merged field by field (sync.merge), and recorded with its result in
`applied_mutations` in the same savepoint, so a replay returns the original result as `duplicate`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from pulse_core.entry import Entry
from pulse_core.errors import ValidationError
from pulse_core.rules import MANUAL
from pulse_server.accounts import Principal, hash_token
from pulse_server.db.database import committing
from pulse_server.db.entries import COLUMNS, PostgresEntryRepository, entry_json, json_dumps, row_to_entry
from pulse_server.erasure import COVERING_JSON, Known, hold_off, known_for_push
from sync.erasure import refusal as erased_refusal
from sync.erasure import refusing
from sync.hlc import Stamp
from sync.merge import Conflict, apply_mutation
from sync.wire import (
    API_CLIENT,
    Arrival,
    Mutation,
    MutationResult,
    mutation_digest,
    parse_mutation,
    refusal,
    replay,
    storable,
)

# What pulse_push_write raises when an entry or a seq changed since the push read it (migration 0005).
CHANGED_SINCE_READ = "PU001"
_PUSH_WRITE = "SELECT txid, lsn FROM pulse_push_write(%s, %s, %s, %s, %s, %s)"
# The caller's token and, for an athlete, the batch's earlier results and its days' entries (with the row
# version each was read at), in one statement: a row for the caller (kind 0, with the user's erasures that
# meet the batch's days, docs/erasure.md), one per earlier result
# (kind 1) and one per entry (kind 2; its columns as `row_to_entry` reads them). An invalid token reads
# nothing; a coach only themselves. It first waits, sharing, for the lock a push of this client under
# locks (`apply_batch`) holds, so it does not read what that push is about to change (and then have to
# take the locked path itself).
_ENTRY_COLUMNS = ", ".join(f"e.{c}" for c in COLUMNS)
_NO_ENTRY = ", ".join(["NULL"] * len(COLUMNS))
_READ_FOR_PUSH = (
    "WITH me AS MATERIALIZED (SELECT u.id, u.username, u.is_coach, u.utc_offset_min,"
    "  CASE WHEN NOT u.is_coach THEN pg_advisory_xact_lock_shared(hashtextextended(%(client)s, u.id))::text"
    "  END AS waited"
    "  FROM tokens t JOIN users u ON u.id = t.user_id"
    "  WHERE t.token_hash = %(token)s AND t.revoked_at IS NULL AND t.expires_at > now())"
    " SELECT 2, NULL::bigint, NULL::text, NULL::boolean, NULL::jsonb, e.xmin::text, " + _ENTRY_COLUMNS +
    "  FROM me JOIN entries e ON NOT me.is_coach AND e.user_id = me.id AND e.date = ANY(%(dates)s)"
    "  AND e.date BETWEEN %(first)s AND %(last)s"
    " UNION ALL SELECT 0, me.id, me.username, me.is_coach, " + COVERING_JSON.format(user="me.id") +
    ", me.waited || ':' || coalesce(me.utc_offset_min::text,"
    " ''), " + _NO_ENTRY + " FROM me"
    " UNION ALL SELECT 1, NULL, NULL, NULL, a.result, encode(a.digest, 'hex'), " + _NO_ENTRY +
    "  FROM me JOIN applied_mutations a ON NOT me.is_coach AND a.user_id = me.id AND a.client_id = %(client)s"
    "  AND a.seq = ANY(%(seqs)s::bigint[]) AND a.seq BETWEEN %(low)s::bigint AND %(high)s::bigint"
    " UNION ALL SELECT 3, (SELECT max(a.seq) FROM applied_mutations a WHERE a.user_id = me.id"
    "  AND a.client_id = %(client)s), (extract(epoch FROM h.pruned_before) * 1000)::bigint::text, NULL, NULL,"
    "  h.seq::text, " + _NO_ENTRY +
    "  FROM me LEFT JOIN client_high_water h ON h.user_id = me.id AND h.client_id = %(client)s WHERE NOT me.is_coach"
)
# The seqs and days are looked up between their lowest and highest too: that bound is an index range
# (`seq = ANY` and `date = ANY` alone were filters over all of the client's results and all of the user's
# days, a read that grew with the history); seqs as bigint[], the column's type.
# The (user, client)'s recorded seqs: each earlier result with its digest, and the high-water marks.
_READ_EARLIER = (
    "SELECT seq, result, encode(digest, 'hex') FROM applied_mutations"
    " WHERE user_id = %(user)s AND client_id = %(client)s AND seq = ANY(%(seqs)s::bigint[])"
    " AND seq BETWEEN %(low)s::bigint AND %(high)s::bigint"
    " UNION ALL SELECT -1, jsonb_build_object('max', (SELECT max(seq) FROM applied_mutations"
    "  WHERE user_id = %(user)s AND client_id = %(client)s), 'pruned', h.seq, 'pruned_before_ms',"
    "  (extract(epoch FROM h.pruned_before) * 1000)::bigint), NULL"
    "  FROM (SELECT 1) AS one LEFT JOIN client_high_water h ON h.user_id = %(user)s AND h.client_id = %(client)s"
)


@dataclass
class Recorded:
    """What the server holds of a (user, client)'s earlier mutations, as a push batch needs it."""

    results: dict[int, tuple[MutationResult, str | None]] = field(default_factory=dict)  # seq -> result, digest
    newest: int | None = None  # the highest seq with a result
    pruned: int | None = None  # the highest seq whose result was pruned (client_high_water)
    # When the newest of the pruned results had been applied (ms; None: not known, marks folded before
    # migration 0017): a mutation stamped after it is not among them (sync.wire.replay)
    pruned_before_ms: int | None = None

    def replay(self, seq: int, digest: str, client_id: str, raw: Mapping[str, Any]) -> MutationResult | None:
        """The answer to a (client, seq) already recorded (sync.wire.replay), or None."""
        return replay(seq, digest, client_id, self.results.get(seq), self.pruned, raw.get("hlc"),
                      self.pruned_before_ms)

    @property
    def high_water(self) -> int | None:
        marks = [s for s in (self.newest, self.pruned) if s is not None]
        return max(marks) if marks else None

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Any, ...]]) -> Recorded:
        recorded = cls()
        for seq, result, digest in rows:
            if seq == -1:
                recorded.newest, recorded.pruned = result.get("max"), result.get("pruned")
                recorded.pruned_before_ms = result.get("pruned_before_ms")
            else:
                recorded.results[int(seq)] = (result, digest)
        return recorded


@dataclass
class _Merged:
    results: list[MutationResult] = field(default_factory=list)
    fresh: list[Mapping[str, Any]] = field(default_factory=list)  # results to record (with their digest)
    audit: list[tuple[Mutation, Conflict, bool]] = field(default_factory=list)
    touched: dict[dt.date, Entry] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchOutcome:
    results: list[MutationResult]
    txid: str | None  # None when the batch wrote nothing (every mutation a duplicate, a clash or refused)
    lsn: str | None
    entries: dict[dt.date, Entry]
    # The highest seq recorded for the client before this batch: a device whose acknowledged seqs go past
    # it pushes them again (the server was restored from a backup, docs/sync.md)
    high_water: int | None = None


class Reconciler:
    """Applies batches for one authenticated user; `now_ms` is the server clock (tests inject it)."""

    def __init__(self, now_ms: Callable[[], int], skew_limit_ms: int, utc_offset_min: int | None = None) -> None:
        self.now_ms = now_ms
        self.skew_limit_ms = skew_limit_ms
        # The user's zone, as the pushing device sends it (or as kept from the user's last push): dates
        # are judged against the user's own local date, never the server's (docs/sync.md, "Clocks").
        self.utc_offset_min = utc_offset_min

    def today(self, server_ms: int) -> dt.date:
        """The user's local date now."""
        return dt.datetime.fromtimestamp(server_ms / 1000 + (self.utc_offset_min or 0) * 60, dt.UTC).date()

    def apply_batch(
        self, conn: psycopg.Connection[Any], user_id: int, client_id: str, raw: Sequence[dict[str, Any]]
    ) -> BatchOutcome:
        """The batch in a handful of statements (see `_apply_batch_fast`); if Postgres still refuses a
        value, the whole batch again one savepoint per mutation, so that only that mutation is rejected."""
        # Pushes from one client are serialised, so concurrent duplicates see each other's records.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))", (client_id, user_id))
        hold_off(conn, user_id)  # an erasure of this user waits for this push, or this push for it
        try:
            with conn.transaction():
                return self._apply_batch_fast(conn, user_id, client_id, raw)
        except (pg_errors.DataError, UnicodeEncodeError):
            return self.apply_batch_savepoints(conn, user_id, client_id, raw)

    def _apply_batch_fast(
        self, conn: psycopg.Connection[Any], user_id: int, client_id: str, raw: Sequence[dict[str, Any]]
    ) -> BatchOutcome:
        """Read the batch's earlier results and entries at once, merge in memory, write each touched day
        once and every record in one pipelined statement each. Same results as one savepoint per mutation."""
        repo = PostgresEntryRepository(conn)
        server_ms = self.now_ms()
        parsed = _parse_batch(raw, client_id, self.today(server_ms))
        seqs = [s for item in raw if isinstance(s := item.get("seq"), int)]
        earlier_rows = conn.execute(_READ_EARLIER, {"user": user_id, "client": client_id, **_seq_range(seqs)})
        dates = sorted({m.date for m in parsed if isinstance(m, Mutation)})
        _lock_days(conn, user_id, dates)
        entries = {e.date: e for e in repo.get_many(str(user_id), dates, lock=True)}
        earlier = Recorded.from_rows(earlier_rows.fetchall())
        known = known_for_push(conn, user_id, str(user_id), dates)
        merged = self._merge_batch(user_id, client_id, raw, parsed, earlier, entries, self._arrival(server_ms),
                                   known)
        repo.save_many(list(merged.touched.values()))
        if merged.audit:
            with conn.cursor() as cur:
                cur.executemany(_AUDIT_SQL, [_audit_row(user_id, client_id, m, c, clamped)
                                             for m, c, clamped in merged.audit])
        if merged.fresh:  # one statement: every result of the batch as one JSON array
            conn.execute(
                "INSERT INTO applied_mutations (user_id, client_id, seq, result, digest, date, applied_at)"
                " SELECT %s, %s, (r->>'seq')::bigint, r - 'digest' - 'date', decode(r->>'digest', 'hex'),"
                " (r->>'date')::date, now() FROM jsonb_array_elements(%s) AS r",
                (user_id, client_id, Jsonb(merged.fresh, dumps=results_json)),
            )
        return self._outcome(conn, merged, earlier)

    @staticmethod
    def _outcome(conn: psycopg.Connection[Any], merged: _Merged, earlier: Recorded) -> BatchOutcome:
        """The batch's answer; a txid only when it changed an entry (else no shape change will carry it)."""
        if not merged.touched:
            return BatchOutcome(merged.results, None, None, merged.touched, earlier.high_water)
        row = conn.execute("SELECT pg_current_xact_id()::text, pg_current_wal_insert_lsn()").fetchone()
        assert row is not None
        return BatchOutcome(merged.results, row[0], str(lsn_to_int(row[1])), merged.touched, earlier.high_water)

    def _merge_batch(
        self,
        user_id: int,
        client_id: str,
        raw: Sequence[dict[str, Any]],
        parsed: list[Mutation | MutationResult],
        earlier: Recorded,
        entries: dict[dt.date, Entry],
        arrival: Arrival,
        known: Known,
    ) -> _Merged:
        """The batch merged into `entries` in memory, in order: its results, the ones to record, the
        conflicts to audit and the days touched (each rescored once, after its last mutation)."""
        merged = _Merged()
        for item, outcome in zip(raw, parsed, strict=True):
            seq = int(item["seq"])  # the request schema requires an integer seq
            digest = mutation_digest(item)
            again = earlier.replay(seq, digest, client_id, item)
            if again is not None:
                merged.results.append(again)
                continue
            if not isinstance(outcome, Mutation) and outcome["status"] == "held":
                merged.results.append(outcome)  # not recorded: the same mutation is welcome once its day comes
                continue
            if isinstance(outcome, Mutation) and (erased := refusing(known.covering, outcome.date, str(outcome.stamp))):
                # Not recorded either: the erasure answers a replay the same way, and its result stays free of
                # anything of the erased days (docs/erasure.md).
                merged.results.append(erased_refusal(seq, outcome.date, erased))
                continue
            if isinstance(outcome, Mutation):
                entry = entries.setdefault(outcome.date, Entry(user=str(user_id), date=outcome.date))
                result, conflicts, clamped = apply_mutation(entry, outcome, arrival)
                merged.touched[outcome.date] = entry
                merged.audit.extend((outcome, c, clamped) for c in conflicts)
            else:
                result = outcome
            earlier.results[seq] = (result, digest)  # a replay later in the same batch
            merged.fresh.append({**result, "digest": digest, "date": _day_of(item, outcome)})
            merged.results.append(result)
        return merged

    def apply_batch_unlocked(
        self,
        conn: psycopg.Connection[Any],
        token: str,
        client_id: str,
        raw: Sequence[dict[str, Any]],
        admit: Callable[[Principal | None], Principal],
    ) -> tuple[Principal, BatchOutcome]:
        """The push in two statements on an autocommit connection: one reads the caller's token, the
        batch's earlier results and its entries (no locks); the batch is merged here; `pulse_push_write`
        writes it all in its own transaction if nothing read has changed meanwhile. If something has
        (a concurrent push to the same days or seqs), or Postgres refuses a value, the batch is done
        again by `apply_batch`, under locks, in a transaction. `admit` turns the token's user (None: no
        valid token) into the principal allowed to push, or raises; nothing else is read before it."""
        server_ms = self.now_ms()
        parsed = _parse_batch(raw, client_id, self.today(server_ms))
        seqs = [s for item in raw if isinstance(s := item.get("seq"), int)]
        dates = sorted({m.date for m in parsed if isinstance(m, Mutation)})
        rows = conn.execute(_READ_FOR_PUSH, {"client": client_id, "token": hash_token(token), **_seq_range(seqs),
                                             "dates": dates, "first": min(dates, default=None),
                                             "last": max(dates, default=None)}).fetchall()
        me = next((r for r in rows if r[0] == 0), None)
        user = admit(None if me is None else Principal(int(me[1]), str(me[2]), bool(me[3])))
        assert me is not None
        stored_offset = str(me[5] or "").rpartition(":")[2]
        if self.utc_offset_min is not None and stored_offset != str(self.utc_offset_min):
            conn.execute("UPDATE users SET utc_offset_min = %s WHERE id = %s", (self.utc_offset_min, user.id))
        earlier = Recorded()
        known = Known.from_json(me[4], str(user.id))
        entries: dict[dt.date, Entry] = {}
        seen: dict[dt.date, str] = {}
        for row in rows:
            if row[0] == 1:
                earlier.results[int(row[4]["seq"])] = (row[4], row[5])
            elif row[0] == 2:
                entry = row_to_entry(str(user.id), row[6:])
                entries[entry.date] = entry
                seen[entry.date] = row[5]
            elif row[0] == 3:
                earlier.newest, earlier.pruned = row[1], None if row[5] is None else int(row[5])
                earlier.pruned_before_ms = None if row[2] is None else int(row[2])
        merged = self._merge_batch(user.id, client_id, raw, parsed, earlier, entries, self._arrival(server_ms),
                                   known)
        if not merged.fresh:  # nothing to write (replays, clashes): no transaction, no txid
            return user, BatchOutcome(merged.results, None, None, merged.touched, earlier.high_water)
        rows = []
        for day, entry in sorted(merged.touched.items()):  # in date order: the order rows are locked in
            values = entry_json(entry)
            if day in seen:
                values["seen"] = seen[day]
            rows.append(values)
        audit = [{"date": m.date, "seq": m.seq, "field": c.field, "kept": c.kept, "lost": c.lost,
                  "kept_hlc": c.kept_hlc, "lost_hlc": c.lost_hlc, "rule": c.rule, "clamped": clamped}
                 for m, c, clamped in merged.audit]
        try:
            with committing(conn):
                written = conn.execute(_PUSH_WRITE, (user.id, client_id, Jsonb(rows, dumps=json_dumps),
                                                     Jsonb(merged.fresh, dumps=results_json),
                                                     Jsonb(audit, dumps=json_dumps),
                                                     known.last_id)).fetchone()
        except (pg_errors.DataError, UnicodeEncodeError):
            written = None
        except psycopg.Error as exc:
            if exc.sqlstate != CHANGED_SINCE_READ:
                raise
            written = None
        if written is None:  # changed meanwhile, or a value refused: again, under locks
            with committing(conn), conn.transaction():
                outcome = self.apply_batch(conn, user.id, client_id, raw)
            return user, outcome
        if not merged.touched:  # only refusals recorded: no shape change will ever carry this txid
            return user, BatchOutcome(merged.results, None, None, merged.touched, earlier.high_water)
        return user, BatchOutcome(merged.results, written[0], str(lsn_to_int(written[1])), merged.touched,
                                  earlier.high_water)

    def _arrival(self, server_ms: int) -> Arrival:
        """How this push's stamps are taken: clamped to `server_ms` past the skew limit, in order."""
        return Arrival(server_ms, self.skew_limit_ms)

    def apply_batch_savepoints(
        self, conn: psycopg.Connection[Any], user_id: int, client_id: str, raw: Sequence[dict[str, Any]]
    ) -> BatchOutcome:
        """The batch one savepoint per mutation (in the caller's transaction, under its locks): slower, but a
        value Postgres refuses fails only its own mutation. The same results as the other paths."""
        repo = PostgresEntryRepository(conn)
        server_ms = self.now_ms()
        today = self.today(server_ms)
        seqs = [s for item in raw if isinstance(s := item.get("seq"), int)]
        earlier = Recorded.from_rows(conn.execute(_READ_EARLIER, {"user": user_id, "client": client_id,
                                                                   **_seq_range(seqs)}).fetchall())
        dates = sorted({m.date for m in _parse_batch(raw, client_id, today) if isinstance(m, Mutation)})
        # Every day at once, before any conflict is audited: holding the conflicts lock (migration 0016)
        # while waiting for a day could stall a push that holds the day behind a reader of the conflicts
        _lock_days(conn, user_id, dates)
        known = known_for_push(conn, user_id, str(user_id), dates)
        merged = _Merged()
        arrival = self._arrival(server_ms)
        for item in raw:
            with conn.transaction():  # a savepoint: one bad mutation never fails its batch
                result = self._apply_one(conn, repo, user_id, client_id, item, arrival, today, merged.touched,
                                         earlier, known)
            merged.results.append(result)
            if result["status"] not in ("duplicate", "clash", "held") and not _erased(result):
                merged.fresh.append(result)
        return self._outcome(conn, merged, earlier)

    def _apply_one(
        self,
        conn: psycopg.Connection[Any],
        repo: PostgresEntryRepository,
        user_id: int,
        client_id: str,
        item: dict[str, Any],
        arrival: Arrival,
        today: dt.date,
        touched: dict[dt.date, Entry],
        earlier: Recorded,
        known: Known,
    ) -> MutationResult:
        seq = item.get("seq")
        digest = mutation_digest(item)
        again = earlier.replay(int(item["seq"]), digest, client_id, item)
        if again is not None:
            return again
        try:
            mutation = parse_mutation(item, client_id, today)
            _checkstorable(mutation)  # as `_parse_batch` refuses it for the other paths
        except ValidationError as exc:
            result = refusal(seq, exc)
            if result["status"] == "held":
                return result
        else:
            erased = refusing(known.covering, mutation.date, str(mutation.stamp))
            if erased is not None:
                return erased_refusal(seq, mutation.date, erased)  # not recorded, as in `_merge_batch`
            try:
                with conn.transaction():
                    result = self._merge(conn, repo, user_id, client_id, mutation, arrival, touched)
            except (pg_errors.DataError, UnicodeEncodeError) as exc:  # what Postgres refuses all the same
                arrival.forget(mutation.seq)  # rolled back: its stamp does not hold a place in the push
                diag = getattr(exc, "diag", None)
                message = f"value not storable: {(diag and diag.message_primary) or storable(str(exc))}"
                result = {"seq": seq, "status": "rejected", "error": {"code": "invalid_value", "message": message}}
        conn.execute(
            "INSERT INTO applied_mutations (user_id, client_id, seq, result, digest, date, applied_at)"
            " VALUES (%s, %s, %s, %s, decode(%s, 'hex'), %s, now())",
            (user_id, client_id, seq, Jsonb(result, dumps=results_json), digest, _day_of(item, None)),
        )
        earlier.results[int(item["seq"])] = (result, digest)  # a replay later in the same batch
        return result

    def _merge(
        self,
        conn: psycopg.Connection[Any],
        repo: PostgresEntryRepository,
        user_id: int,
        client_id: str,
        m: Mutation,
        arrival: Arrival,
        touched: dict[dt.date, Entry],
    ) -> MutationResult:
        # A new day has no row to lock yet: a transaction-level advisory lock on (user, date) makes
        # concurrent pushes to it wait for each other instead of overwriting.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"entry:{user_id}:{m.date}",))
        entry = repo.get(str(user_id), m.date, lock=True) or Entry(user=str(user_id), date=m.date)
        result, conflicts, clamped = apply_mutation(entry, m, arrival)
        repo.save(entry)
        touched[m.date] = entry
        if conflicts:
            with conn.cursor() as cur:
                cur.executemany(_AUDIT_SQL, [_audit_row(user_id, client_id, m, c, clamped) for c in conflicts])
        return result


def api_write(
    reconciler: Reconciler, conn: psycopg.Connection[Any], user_id: int, day: dt.date, op: str, fields: dict[str, Any]
) -> tuple[MutationResult, Entry | None]:
    """A REST write (PUT/DELETE) as a mutation of the server's own client, through the same path.

    Its stamp is later than every stamp on the entry and its base is what is stored, so it is a
    plain overwrite, never a conflict.
    """
    hold_off(conn, user_id)  # before the entry's lock, which an erasure in progress may want
    repo = PostgresEntryRepository(conn)
    current = repo.get(str(user_id), day, lock=True)
    stamps = list(current.stamps.values()) if current else []
    newest = max((Stamp.parse(s) for s in stamps), default=None)
    now = reconciler.now_ms()
    if newest is None or now > newest.ms:
        stamp = Stamp(now, 0, API_CLIENT)
    else:
        stamp = Stamp(newest.ms, newest.counter + 1, API_CLIENT)
    row = conn.execute("SELECT nextval('api_mutation_seq')").fetchone()
    assert row is not None
    base = dict(current.stamps) if current else {}
    base.pop("deleted", None)
    raw = {"seq": row[0], "date": day.isoformat(), "op": op, "fields": fields, "base": base,
           "hlc": str(stamp), "source": MANUAL}
    if reconciler.utc_offset_min is None:
        reconciler.utc_offset_min = user_offset(conn, user_id)
    outcome = reconciler.apply_batch(conn, user_id, API_CLIENT, [raw])
    return outcome.results[0], outcome.entries.get(day)


def user_offset(conn: psycopg.Connection[Any], user_id: int) -> int | None:
    """The zone offset (minutes east of UTC) the user's devices last pushed from."""
    row = conn.execute("SELECT utc_offset_min FROM users WHERE id = %s", (user_id,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


_AUDIT_SQL = (
    "INSERT INTO conflicts (user_id, date, client_id, seq, field, kept, lost, kept_hlc, lost_hlc, rule,"
    " clamped, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
)


def _seq_range(seqs: list[int]) -> dict[str, Any]:
    """The batch's seqs as the reads take them: the list, and its lowest and highest (None: no seq)."""
    return {"seqs": seqs, "low": min(seqs, default=None), "high": max(seqs, default=None)}


def results_json(obj: Any) -> bytes:
    """Results (and answers made of them) as JSON: orjson, which costs a fraction of the json module's time;
    what orjson refuses (an integer past 64 bits echoed in a rejection) goes through the json module, as
    everything did before."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj).encode()


def _erased(result: Mapping[str, Any]) -> bool:
    return result["status"] == "rejected" and (result.get("error") or {}).get("code") == "erased"


def _day_of(item: dict[str, Any], outcome: Mutation | MutationResult | None) -> str | None:
    """The day a recorded result answers (an erasure of that day removes the result): the mutation's, or
    the date it sent if that is a date (a mutation refused for another field), else None."""
    if isinstance(outcome, Mutation):
        return outcome.date.isoformat()
    raw = item.get("date")
    if not isinstance(raw, str) or not _ISO_DATE.fullmatch(raw):
        return None
    try:
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        return None


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _audit_row(user_id: int, client_id: str, m: Mutation, c: Conflict, clamped: bool) -> tuple[Any, ...]:
    return (user_id, m.date, client_id, m.seq, c.field, Jsonb(c.kept), Jsonb(c.lost), c.kept_hlc, c.lost_hlc,
            c.rule, clamped)


def _lock_days(conn: psycopg.Connection[Any], user_id: int, dates: list[dt.date]) -> None:
    """The (user, day) locks of a batch's days, in date order, so two batches never wait for each other in
    a cycle (the keys `_merge` takes one at a time)."""
    if dates:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('entry:' || %s::text || ':' || d::text, 0))"
                     " FROM unnest(%s::date[]) AS d ORDER BY d", (user_id, dates))


def _parse_batch(raw: Sequence[dict[str, Any]], client_id: str, today: dt.date) -> list[Mutation | MutationResult]:
    """Each mutation checked: the Mutation, or its result: rejected, or held (a date still ahead)."""
    parsed: list[Mutation | MutationResult] = []
    for item in raw:
        try:
            mutation = parse_mutation(item, client_id, today)
            _checkstorable(mutation)
            parsed.append(mutation)
        except ValidationError as exc:
            parsed.append(refusal(item.get("seq"), exc))
    return parsed


def _checkstorable(m: Mutation) -> None:
    """Text Postgres cannot hold (a NUL, a lone surrogate) is refused before anything is written."""
    for name, value in m.fields.items():
        if isinstance(value, str) and ("\x00" in value or not _encodes(value)):
            raise ValidationError(name, storable(value), "text without NUL or unpaired surrogates",
                                  f"{name}: the text cannot be stored (allowed text without NUL or unpaired"
                                  " surrogates)", code="invalid_value")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lsn_to_int(text: str) -> int:
    """`16/B374D848` → the decimal LSN Electric's clients parse with BigInt."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)

