"""The client breaker's state, kept in the store so that it survives between CLI runs.

Light on purpose: `pulse sync` while the breaker is open answers without importing the HTTP stack.
"""

from __future__ import annotations

import json
import sqlite3

from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta, write_meta
from sync.breaker import BreakerState, ClientBreaker


def load_breaker(conn: sqlite3.Connection) -> ClientBreaker:
    raw = read_meta(conn, meta.BREAKER)
    return ClientBreaker(BreakerState.from_dict(json.loads(raw) if raw else None))


def save_breaker(conn: sqlite3.Connection, breaker: ClientBreaker) -> None:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        write_meta(conn, meta.BREAKER, json.dumps(breaker.state.to_dict()))
