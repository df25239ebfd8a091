"""The CLI process's one bootstrap: resolve the home folder, open the store, build the adapters (the
store's, and the `Upstream` every sync client is built from)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pulse_cli.agent.upstream import Upstream
from pulse_cli.store import meta
from pulse_cli.store.connection import open_store, read_meta, resolve_home
from pulse_cli.store.entries import OWNER, SqliteEntryRepository
from pulse_cli.store.uow import SqliteUnitOfWork, wall_ms


@dataclass
class Device:
    home: Path
    conn: sqlite3.Connection
    today: dt.date
    wall: Callable[[], int] = field(default=wall_ms)
    user: str = OWNER
    upstream: Upstream = field(default_factory=Upstream)  # how the sync server is reached

    def uow(self) -> SqliteUnitOfWork:
        return SqliteUnitOfWork(self.conn, self.wall)

    @property
    def entries(self) -> SqliteEntryRepository:
        return SqliteEntryRepository(self.conn)

    def close(self) -> None:
        self.conn.close()


def bootstrap(home_option: str | None = None, today: dt.date | None = None, upstream: Upstream | None = None) -> Device:
    home = resolve_home(home_option)
    conn = open_store(home)
    return Device(home=home, conn=conn, today=today or local_today(conn), upstream=upstream or Upstream())


def local_today(conn: sqlite3.Connection) -> dt.date:
    """Today in this device's time zone, by the clock corrected with the server's (a device whose clock is
    two days ahead still dates "today" as the user's today, once it has heard from the server)."""
    offset_ms = int(read_meta(conn, meta.CLOCK_OFFSET_MS) or 0)
    return dt.datetime.fromtimestamp(wall_ms() / 1000 + offset_ms / 1000).date()
