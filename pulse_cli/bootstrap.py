"""The CLI process's one bootstrap: resolve the home folder, open the store, build the adapters."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pulse_cli.store.connection import open_store, resolve_home
from pulse_cli.store.entries import SqliteEntryRepository
from pulse_cli.store.uow import SqliteUnitOfWork, wall_ms

# The device owner's rows. Other users' rows (a coach's athletes) are keyed by their username.
OWNER = ""


@dataclass
class Device:
    home: Path
    conn: sqlite3.Connection
    today: dt.date
    wall: Callable[[], int] = field(default=wall_ms)
    user: str = OWNER

    def uow(self) -> SqliteUnitOfWork:
        return SqliteUnitOfWork(self.conn, self.wall)

    @property
    def entries(self) -> SqliteEntryRepository:
        return SqliteEntryRepository(self.conn)

    def close(self) -> None:
        self.conn.close()


def bootstrap(home_option: str | None = None, today: dt.date | None = None) -> Device:
    home = resolve_home(home_option)
    return Device(home=home, conn=open_store(home), today=today or dt.date.today())
