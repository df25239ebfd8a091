"""The device's client id, and what it does when it learns its store is not the only one using it.

A store restored from a backup, or a copied home, pushes under an id whose seqs the server already holds
for other changes. The server answers `clash` (or its high-water mark is past every seq this store ever
issued); the device then takes a new id and moves every pending mutation to it, keeping stamps, bases
and fields, so nothing is lost and nothing is applied twice (docs/sync.md, "One store, one id").
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from pulse_cli.agent import outbox
from pulse_cli.store import meta
from pulse_cli.store.connection import ensure_client_id, read_meta, write_meta

if TYPE_CHECKING:
    from sync.client import SyncClient

log = logging.getLogger("pulse.agent")


def current_id(conn: sqlite3.Connection) -> str:
    return ensure_client_id(conn)


def highest_issued_seq(conn: sqlite3.Connection) -> int:
    """The highest seq this store ever gave a mutation (outbox seqs are never reused)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(row[0]) if row else 0


def take_new_id(conn: sqlite3.Connection, clashed: set[str]) -> str:
    """A new id for this device (in the caller's transaction). Acknowledged mutations stay under the id
    they were sent with; pending ones of the old id, and of any clashed id, move to the new one."""
    old = current_id(conn)
    new = os.urandom(8).hex()
    conn.execute("UPDATE outbox SET client_id = ?, client_seq = seq WHERE client_id IS NULL AND status <> 'pending'",
                 (old,))
    for sender in clashed - {old}:
        conn.execute("UPDATE outbox SET client_id = NULL, client_seq = NULL WHERE client_id = ?"
                     " AND status = 'pending'", (sender,))
    write_meta(conn, meta.CLIENT_ID, new)
    former = read_meta(conn, meta.FORMER_CLIENT_IDS)
    write_meta(conn, meta.FORMER_CLIENT_IDS, ",".join(filter(None, [former, old])))
    return new


def requeue_lost(conn: sqlite3.Connection, client: SyncClient) -> int:
    """Acknowledged mutations the server no longer holds (restored from a backup, or failed over to a
    standby that missed them: their seqs are past its high-water marks) go back to the outbox, to be
    pushed again as they were; returns how many."""
    current = current_id(conn)
    senders = outbox.senders(conn, current)
    if not senders:
        return 0
    marks = client.high_water(senders)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        requeued = sum(outbox.requeue_past(conn, s, current, marks.get(s)) for s in senders if s in marks)
    if requeued:
        log.warning("the server lost %d acknowledged changes (restored?): they are pushed again", requeued)
    return requeued
