"""Erasures on this device (docs/erasure.md): the days the server erased, dropped from every table here.

Each sync round fetches the erasures after the last one applied (`GET /v1/erasures`), and a whole
account's erasure also comes with the 401 that its revoked token gets (`account_erased`). Applying one,
in one local transaction: the server copy's and the local view's rows of those days go; the outbox's
mutations of those days made before the erasure go too (acknowledged, discarded, or refused for another
reason), except that a pending one becomes `rejected` with the code `erased`, as the server would answer
it, and stays listed in `pulse rejected` until discarded; mutations made after the erasure stay, and the
view is made again from them. The conflict audit of those days goes, and what the device app answered
a browser for the mutations dropped keeps no value. The clock observes the erasure's time, so every
later edit here is taken by the server. Then the file itself is rewritten (VACUUM) and the WAL emptied,
since SQLite leaves deleted bytes in free pages and old page images in the WAL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pulse_cli.agent import replica
from pulse_cli.store import meta
from pulse_cli.store.clock import observe
from pulse_cli.store.connection import read_meta, write_meta
from pulse_cli.store.entries import OWNER
from sync.erasure import Erasure, refusal

if TYPE_CHECKING:
    from sync.client import SyncClient

log = logging.getLogger("pulse.agent")
PAGE = 1000  # erasures per request (the server's limit)


def exchange(conn: sqlite3.Connection, client: SyncClient, owner: str) -> int:
    """Fetch the erasures after the last one applied and apply them; returns how many were new here."""
    applied = 0
    while True:
        after = int(read_meta(conn, meta.ERASURES_AFTER) or 0)
        found = [Erasure.from_json(item) for item in client.erasures(after, PAGE).get("erasures") or []]
        if not found:
            return applied
        applied += apply(conn, found, owner)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            write_meta(conn, meta.ERASURES_AFTER, str(max(e.id for e in found)))
        if len(found) < PAGE:
            return applied


def apply(conn: sqlite3.Connection, erasures: Iterable[Erasure], owner: str) -> int:
    """Apply the erasures not applied here yet, in one local transaction, then rewrite the file if they
    removed anything; returns how many were new."""
    new = 0
    removed = 0
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for erasure in erasures:
            if conn.execute("SELECT 1 FROM erasures WHERE id = ?", (erasure.id,)).fetchone():
                continue
            removed += _apply_one(conn, erasure, owner)
            new += 1
        if removed:
            write_meta(conn, meta.SCRUB_DUE, "1")
    if removed:
        scrub(conn)
    return new


def apply_account_erasure(conn: sqlite3.Connection, error: Mapping[str, Any], owner: str) -> Erasure | None:
    """The erasure a 401 `account_erased` carries, applied (its sign-ins are revoked: the device app's too)."""
    raw = error.get("erasure")
    if not isinstance(raw, Mapping):
        return None
    erasure = Erasure.from_json(raw)
    apply(conn, [erasure], owner)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM web_tokens")
    return erasure


def _days(erasure: Erasure) -> tuple[str, list[str]]:
    clauses, args = [], []
    if erasure.first is not None:
        clauses.append("date >= ?")
        args.append(erasure.first.isoformat())
    if erasure.last is not None:
        clauses.append("date <= ?")
        args.append(erasure.last.isoformat())
    return " AND ".join(clauses) or "1", args


def _apply_one(conn: sqlite3.Connection, erasure: Erasure, owner: str) -> int:
    """One erasure, in the caller's transaction; returns the rows it removed."""
    user = OWNER if erasure.user == owner else erasure.user
    days, args = _days(erasure)
    removed = 0
    for table in ("server_entries", "entries"):
        removed += conn.execute(f"DELETE FROM {table} WHERE user_id = ? AND {days}", (user, *args)).rowcount
    kept, dropped = _outbox(conn, erasure, user, days, args)
    removed += len(dropped)
    if user == OWNER:  # the conflict audit held here is the owner's own
        removed += conn.execute(f"DELETE FROM conflicts WHERE {days}", args).rowcount
    _forget_relayed(conn, dropped)
    replica.refresh_view(conn, kept)  # the days' rows again, from the mutations made after the erasure
    observe(conn, [erasure.stamp])
    conn.execute(
        "INSERT INTO erasures (id, user_id, date_from, date_to, erased_ms, whole_account, applied_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (erasure.id, user, _iso(erasure.first), _iso(erasure.last),
         erasure.erased_ms, int(erasure.whole_account), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")))
    log.info("erasure %d applied: %s of %s", erasure.id, erasure.describe(), erasure.user or "this device's user")
    return removed


def _outbox(
    conn: sqlite3.Connection, erasure: Erasure, user: str, days: str, args: list[str]
) -> tuple[set[replica.Key], list[int]]:
    """The outbox's mutations of the erased days: those made after the erasure kept (their view rows to
    make again), pending ones made before it refused, the rest of those made before it dropped (their seqs)."""
    kept: set[replica.Key] = set()
    dropped: list[int] = []
    rows = conn.execute(f"SELECT seq, client_seq, date, hlc, status, result FROM outbox WHERE user_id = ? AND {days}",
                        (user, *args)).fetchall()
    for seq, client_seq, day, hlc, status, result in rows:
        if not erasure.refuses(day, hlc):
            kept.add((user, day))
        elif status == "pending":
            refused = refusal(seq if client_seq is None else client_seq, day, erasure)
            conn.execute("UPDATE outbox SET status = 'rejected', result = ?, sent_at = ? WHERE seq = ?",
                         (json.dumps(refused), dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), seq))
        elif status != "rejected" or _code(result) != "erased":
            dropped.append(seq)
    conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in dropped])
    return kept, dropped


def _code(result: str | None) -> str | None:
    try:
        error = (json.loads(result) or {}).get("error") if result else None
    except ValueError:
        return None
    return error.get("code") if isinstance(error, dict) else None


def _forget_relayed(conn: sqlite3.Connection, seqs: list[int]) -> None:
    """A browser's mutations dropped here: the answers kept for its replays lose what held values (a
    conflict's values, a refused value, the digest of the content), keeping seq, status and stamp."""
    for seq in seqs:
        row = conn.execute("SELECT client_id, seq, result FROM relayed WHERE outbox_seq = ?", (seq,)).fetchone()
        if row is None:
            continue
        original = json.loads(row[2])
        bare = {k: original[k] for k in ("seq", "status", "hlc") if k in original}
        conn.execute("UPDATE relayed SET result = ?, digest = NULL WHERE client_id = ? AND seq = ?",
                     (json.dumps(bare), row[0], row[1]))


def scrub(conn: sqlite3.Connection) -> bool:
    """Rewrite the store without the freed pages (VACUUM) and empty the WAL, so the erased bytes are gone
    from the files, not only from the tables. Another process reading the store at that moment can keep
    the WAL from being emptied: `scrub_due` stays set and the next sync round tries again. Whether done."""
    try:
        conn.execute("VACUUM")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError as exc:
        log.warning("the store could not be rewritten after an erasure (%s): the next round tries again", exc)
        return False
    if busy is not None and busy[0]:
        log.warning("the erased days are out of the store's tables but not yet out of its files (another"
                    " process is reading the store): the next round tries again; pulse status says so")
        return False
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        write_meta(conn, meta.SCRUB_DUE, "0")
    # Writing the flag went through the WAL again: empty it once more (it held only meta's page).
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return True


def scrub_if_due(conn: sqlite3.Connection) -> None:
    if read_meta(conn, meta.SCRUB_DUE) == "1":
        scrub(conn)


def owner_erasures(conn: sqlite3.Connection, after: int, limit: int, username: str) -> list[dict[str, Any]]:
    """The owner's erasures applied here, as `GET /v1/erasures` lists them (the device app serves them)."""
    rows = conn.execute("SELECT id, date_from, date_to, erased_ms, whole_account FROM erasures WHERE user_id = ?"
                        " AND id > ? ORDER BY id LIMIT ?", (OWNER, after, limit)).fetchall()
    return [Erasure(int(i), username, _date(f), _date(t), int(ms), bool(w)).as_json() for i, f, t, ms, w in rows]


def known(conn: sqlite3.Connection, username: str) -> list[Erasure]:
    """Every erasure of the owner's entries applied here (the relay refuses a browser's write by them)."""
    rows = conn.execute("SELECT id, date_from, date_to, erased_ms, whole_account FROM erasures WHERE user_id = ?",
                        (OWNER,)).fetchall()
    return [Erasure(int(i), username, _date(f), _date(t), int(ms), bool(w)) for i, f, t, ms, w in rows]


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _date(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)
