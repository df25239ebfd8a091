"""A browser's pushed mutations, taken in by the device that serves it (`pulse agent --serve`).

Each is checked as the server checks it, merged into the local view by the same rules, and queued in
the outbox under the browser's own client id and seq, so the sync server applies it exactly once by
the browser's identity. A replay is answered with the first result, as the server does.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from pulse_cli.agent.outbox import KEEP_ACKED
from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta, write_meta
from pulse_cli.store.entries import OWNER
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.entry import Entry
from pulse_core.errors import ValidationError
from sync.erasure import Erasure, refusal, refusing
from sync.hlc import SKEW_LIMIT_MS, Stamp
from sync.merge import apply_mutation
from sync.wire import (
    Arrival,
    Mutation,
    MutationResult,
    mutation_digest,
    parse_mutation,
    rejection,
    replay,
)


def high_water(conn: sqlite3.Connection, client_id: str) -> int | None:
    """The highest seq this device holds for a browser's client id (None: none), as the server answers."""
    row = conn.execute("SELECT max(seq) FROM relayed WHERE client_id = ?", (client_id,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def prune(conn: sqlite3.Connection, now: dt.datetime | None = None, keep: dt.timedelta = KEEP_ACKED) -> int:
    """Relayed results older than the window go (in the caller's transaction), as the server prunes its own:
    each browser's highest pruned seq is kept (`meta.RELAYED_PRUNED`), so a replay of a pruned one is still
    a duplicate. Kept: each browser's newest result (its high-water mark), and those whose change is still
    pending or refused here (the browser learns of a refusal from them: `refused_since`)."""
    cutoff = ((now or dt.datetime.now(dt.UTC)) - keep).isoformat(timespec="seconds")
    prunable = (
        " FROM relayed r WHERE r.created_at < ?"
        " AND r.seq < (SELECT max(n.seq) FROM relayed n WHERE n.client_id = r.client_id)"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.seq = r.outbox_seq AND o.status IN ('pending', 'rejected'))")
    gone = conn.execute(f"SELECT r.client_id, max(r.seq), count(*){prunable} GROUP BY r.client_id",
                        (cutoff,)).fetchall()
    if not gone:
        return 0
    marks = _pruned_marks(conn)
    for client_id, seq, _ in gone:
        marks[client_id] = max(int(seq), marks.get(client_id, 0))
    write_meta(conn, meta.RELAYED_PRUNED, json.dumps(marks))
    conn.execute(f"DELETE FROM relayed WHERE (client_id, seq) IN (SELECT r.client_id, r.seq{prunable})", (cutoff,))
    return sum(int(n) for _, _, n in gone)


def _pruned_marks(conn: sqlite3.Connection) -> dict[str, int]:
    marks = json.loads(read_meta(conn, meta.RELAYED_PRUNED) or "{}")
    return {str(k): int(v) for k, v in marks.items()}


def refused_since(conn: sqlite3.Connection, client_id: str, limit: int) -> list[dict[str, Any]]:
    """A browser's changes this device took and the sync server refused when the device pushed them, not yet
    handed back to the browser (`hand_back`): each as its refusal under the browser's seq, with the change
    itself (the browser may no longer hold it). The browser was answered `applied` when it pushed; this is
    how it learns otherwise (docs/pwa.md)."""
    rows = conn.execute(
        "SELECT r.seq, o.result, o.date, o.op, o.fields, o.base, o.hlc FROM relayed r"
        " JOIN outbox o ON o.seq = r.outbox_seq WHERE r.client_id = ? AND o.status = 'rejected'"
        " ORDER BY r.seq LIMIT ?", (client_id, limit)).fetchall()
    refused: list[dict[str, Any]] = []
    for seq, text, date, op, fields, base, hlc in rows:
        result = json.loads(text) if text else {}
        error = result.get("error") if isinstance(result, dict) else None
        if not isinstance(error, dict):
            error = {"code": "refused", "message": "the sync server refused it"}
        refused.append({"seq": int(seq), "status": "rejected", "error": error, "date": date, "op": op,
                        "fields": json.loads(fields), "base": json.loads(base), "hlc": hlc})
    return refused


def hand_back(conn: sqlite3.Connection, client_id: str, seqs: Sequence[int]) -> int:
    """The browser holds these refused changes now, to fix or discard there: here they are discarded, so
    they are neither listed again nor counted among this device's own refusals (`pulse rejected`)."""
    return conn.executemany(
        "UPDATE outbox SET status = 'discarded' WHERE status = 'rejected' AND seq ="
        " (SELECT outbox_seq FROM relayed WHERE client_id = ? AND seq = ?)", [(client_id, s) for s in seqs]).rowcount


def relay_batch(
    uow: SqliteUnitOfWork, client_id: str, mutations: Sequence[Mapping[str, Any]], now_ms: int, today: dt.date
) -> list[MutationResult]:
    """Apply a browser's batch in one local transaction; one result per mutation, in order."""
    from pulse_cli.agent.erasures import known

    results = []
    with uow:
        erased = known(uow.conn, "")
        pruned = _pruned_marks(uow.conn).get(client_id)
        arrival = Arrival(now_ms, SKEW_LIMIT_MS)  # the batch's stamps, clamped in order as the server does
        for raw in mutations:
            results.append(_relay_one(uow, client_id, raw, arrival, today, erased, pruned))
        uow.commit()
    return results


def _relay_one(
    uow: SqliteUnitOfWork, client_id: str, raw: Mapping[str, Any], arrival: Arrival, today: dt.date,
    erased: Sequence[Erasure], pruned: int | None,
) -> MutationResult:
    conn = uow.conn
    seq = raw.get("seq")
    digest = mutation_digest(raw)
    if isinstance(seq, int) and not isinstance(seq, bool):
        prior = conn.execute("SELECT result, digest FROM relayed WHERE client_id = ? AND seq = ?",
                             (client_id, seq)).fetchone()
        # A replay, or another browser profile with this id (a clash); a result past its window is pruned
        # (`prune`), and a replay of it is a duplicate, as on the server, unless it was made after every
        # pruned result (each was made before the window began): then another profile uses this id.
        again = replay(seq, digest, client_id, None if prior is None else (json.loads(prior[0]), prior[1]), pruned,
                       raw.get("hlc"), arrival.server_ms - int(KEEP_ACKED.total_seconds() * 1000))
        if again is not None:
            return again
    result: MutationResult
    try:
        mutation = parse_mutation(raw, client_id, today)
    except ValidationError as exc:
        result = rejection(seq, exc)  # a date ahead of the device's own today too: it is the reference here
        outbox_seq = None
    else:
        erasure = refusing(erased, mutation.date, str(mutation.stamp))
        if erasure is not None:  # made before an erasure of its day: refused as the server refuses it, unrecorded
            return refusal(seq, mutation.date, erasure)
        result, outbox_seq = _apply(uow, client_id, mutation, arrival)
    if isinstance(seq, int) and not isinstance(seq, bool):
        conn.execute(
            "INSERT INTO relayed (client_id, seq, outbox_seq, result, digest, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (client_id, seq, outbox_seq, json.dumps(result), digest,
             dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        )
    return result


def _apply(uow: SqliteUnitOfWork, client_id: str, m: Mutation, arrival: Arrival) -> tuple[MutationResult, int]:
    entry = uow.entries.get(OWNER, m.date) or Entry(user=OWNER, date=m.date)
    base = arrival.base(m.base)  # queued as merged here: a stamp clamped earlier in the batch as it was taken
    result, _conflicts, _clamped = apply_mutation(entry, m, arrival)
    uow.entries.save(entry)
    stamp = Stamp.parse(result["hlc"])
    uow.observe(stamp)
    return result, uow.queue(OWNER, m.date, m.op, m.fields, dict(base), str(stamp), m.source, client_id, m.seq)
