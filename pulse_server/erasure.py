"""Erasing a user's entries of a range of days from everything the server keeps (docs/erasure.md).

One transaction removes the days' rows from `entries`, the conflict audit and the exactly-once results,
and records the erasure (user, days, time: no value) in `erasures`. The replication reader then logs the
entries' deletes (key only: pgoutput sends a deleted row's key) and removes every earlier change of those
rows from the shape log (`pulse_server.replication.batch.erase`). Devices fetch the erasure record
(`GET /v1/erasures`) and drop the same days; pushes refuse writes to those days made before it.

An erasure waits for pushes of its user in progress and makes later ones wait (an advisory lock they
take shared); all erasures take one lock in turn, so their ids are committed in order and a device that
fetched up to an id never misses a smaller one committed later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from sync.erasure import ACCOUNT_ERASED, Erasure

# The lock every erasure takes first, so that erasure ids commit in increasing order.
_IN_TURN = "SELECT pg_advisory_xact_lock(hashtextextended('erasures', 0))"
# One user's erasure lock: an erasure holds it exclusively, every push of that user shared.
USER_LOCK = "hashtextextended('erasure:' || %s::text, 0)"
_RANGE = "(%(first)s::date IS NULL OR date >= %(first)s::date) AND (%(last)s::date IS NULL OR date <= %(last)s::date)"


@dataclass(frozen=True)
class Erased:
    """What an erasure removed, counted."""

    erasure: Erasure
    entries: int
    conflicts: int
    results: int  # exactly-once results (their seqs stay as high-water marks)
    tokens: int = 0  # revoked (a whole account)
    grants: int = 0  # removed (a whole account): given by it or to it

    def as_json(self) -> dict[str, Any]:
        return {"erasure": self.erasure.as_json(), "removed": {
            "entries": self.entries, "conflicts": self.conflicts, "results": self.results,
            "tokens": self.tokens, "grants": self.grants}}


def hold_off(conn: psycopg.Connection[Any], user_id: int) -> None:
    """A write of this user's entries (in the caller's transaction) waits for an erasure in progress, and
    makes one that starts meanwhile wait for it. Taken before any entry is locked."""
    conn.execute(f"SELECT pg_advisory_xact_lock_shared({USER_LOCK})", (user_id,))


def erase(
    conn: psycopg.Connection[Any], user_id: int, username: str, first: dt.date | None, last: dt.date | None,
    now_ms: int, whole_account: bool = False,
) -> Erased:
    """Erase `username`'s entries from `first` to `last` (None: open-ended), in the caller's transaction;
    with `whole_account`, every day, and the account's tokens are revoked and its grants removed."""
    if whole_account:
        first = last = None
    conn.execute(_IN_TURN)
    conn.execute(f"SELECT pg_advisory_xact_lock({USER_LOCK})", (user_id,))
    row = conn.execute(
        "INSERT INTO erasures (user_id, date_from, date_to, erased_ms, whole_account) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id", (user_id, first, last, now_ms, whole_account)).fetchone()
    assert row is not None
    days = {"user": user_id, "first": first, "last": last}
    entries = conn.execute(f"DELETE FROM entries WHERE user_id = %(user)s AND {_RANGE}", days).rowcount
    conflicts = conn.execute(f"DELETE FROM conflicts WHERE user_id = %(user)s AND {_RANGE}", days).rowcount
    results = _erase_results(conn, days)
    tokens = grants = 0
    if whole_account:
        tokens = conn.execute("UPDATE tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
                              (user_id,)).rowcount
        grants = conn.execute("DELETE FROM grants WHERE athlete_id = %s OR coach_id = %s",
                              (user_id, user_id)).rowcount
    erasure = Erasure(int(row[0]), username, first, last, now_ms, whole_account)
    return Erased(erasure, entries, conflicts, results, tokens, grants)


def _erase_results(conn: psycopg.Connection[Any], days: dict[str, Any]) -> int:
    """The exactly-once results of the days (and those whose day is unknown: recorded before migration
    0011), their seqs kept as each client's high-water mark, so a replay of one is still a duplicate."""
    row = conn.execute(
        f"""
        WITH gone AS (
            DELETE FROM applied_mutations WHERE user_id = %(user)s AND (date IS NULL OR {_RANGE})
            RETURNING client_id, seq,
                greatest(applied_at, to_timestamp(left(result->>'clamped_from', 16)::bigint / 1000.0)) AS made
        ), marks AS (
            INSERT INTO client_high_water (user_id, client_id, seq, pruned_before, updated_at)
            SELECT %(user)s, client_id, max(seq), max(made), now() FROM gone GROUP BY client_id
            ON CONFLICT (user_id, client_id) DO UPDATE SET seq = greatest(client_high_water.seq, excluded.seq),
                pruned_before = greatest(client_high_water.pruned_before, excluded.pruned_before),
                updated_at = now()
        )
        SELECT count(*) FROM gone
        """, days).fetchone()
    return int(row[0]) if row else 0


_COLUMNS = "id, user_id, date_from, date_to, erased_ms, whole_account"


def _erasure(row: Sequence[Any], usernames: dict[int, str]) -> Erasure:
    return Erasure(int(row[0]), usernames[int(row[1])], row[2], row[3], int(row[4]), bool(row[5]))


def erasures_after(
    conn: psycopg.Connection[Any], usernames: dict[int, str], after: int, limit: int
) -> list[Erasure]:
    """The erasures of these users (id -> username) with an id after `after`, oldest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM erasures WHERE user_id = ANY(%s) AND id > %s ORDER BY id LIMIT %s",
                        (list(usernames), after, limit)).fetchall()
    return [_erasure(r, usernames) for r in rows]


@dataclass(frozen=True)
class Known:
    """A user's erasures as a push judges its batch by them."""

    last_id: int = 0  # the highest erasure id of the user (0: none)
    covering: tuple[Erasure, ...] = ()  # those whose days meet the batch's days

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None, username: str) -> Known:
        """From what `covering_json` builds in SQL."""
        if not raw:
            return cls()
        return cls(int(raw.get("last") or 0), tuple(
            Erasure(int(i), username, _day(f), _day(t), int(ms)) for i, f, t, ms in raw.get("covering") or ()))


def _day(value: Any) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(str(value))


# The user's erasures for a push, as one JSON value: the highest id, and those meeting the batch's days
# (`%(first)s` to `%(last)s`, NULL when the batch has no valid day). `{user}` is the SQL of the user's id.
COVERING_JSON = (
    "(SELECT jsonb_build_object('last', coalesce(max(x.id), 0), 'covering', coalesce(jsonb_agg("
    "jsonb_build_array(x.id, x.date_from, x.date_to, x.erased_ms)) FILTER (WHERE"
    " (x.date_from IS NULL OR x.date_from <= %(last)s::date) AND (x.date_to IS NULL OR x.date_to >= %(first)s::date)),"
    " '[]'::jsonb)) FROM erasures x WHERE x.user_id = {user})"
)


def known_for_push(conn: psycopg.Connection[Any], user_id: int, username: str, dates: Sequence[dt.date]) -> Known:
    """The user's erasures for a batch of these days, read in the caller's transaction (after `hold_off`)."""
    row = conn.execute("SELECT " + COVERING_JSON.format(user="%(user)s"),
                       {"user": user_id, "first": min(dates, default=None), "last": max(dates, default=None)}
                       ).fetchone()
    return Known.from_json(row[0] if row else None, username)


def account_erasure(conn: psycopg.Connection[Any], token_hash: str) -> Erasure | None:
    """The erasure of a whole account that revoked this token (one issued before it), if that is why the
    token no longer works."""
    row = conn.execute(
        f"SELECT {', '.join('e.' + c for c in _COLUMNS.split(', '))}, u.username FROM tokens t"
        " JOIN users u ON u.id = t.user_id JOIN erasures e ON e.user_id = t.user_id AND e.whole_account"
        " WHERE t.token_hash = %s AND t.revoked_at IS NOT NULL AND t.created_at <= e.created_at"
        " ORDER BY e.id DESC LIMIT 1", (token_hash,)).fetchone()
    return None if row is None else _erasure(row, {int(row[1]): str(row[6])})


__all__ = ["ACCOUNT_ERASED", "Erased", "Known", "account_erasure", "erase", "erasures_after", "hold_off",
           "known_for_push"]
