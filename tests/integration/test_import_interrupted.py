"""Ctrl-C in the middle of an import's writes keeps none of them: the import is one SQLite transaction,
on a real store file, so what `pulse import` says when interrupted ("nothing of this import was kept")
holds whenever the interrupt lands before the commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulse_cli.store.connection import open_store
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.usecases import DayRecord, import_days, log_entry

TODAY = dt.date(2026, 3, 10)


def days_then_ctrl_c(count: int) -> Iterator[DayRecord]:
    """`count` days, then the KeyboardInterrupt that Ctrl-C raises while the next one is read."""
    for i in range(count):
        yield DayRecord(TODAY - dt.timedelta(days=i + 1), {"steps": 1000 + i}, "fitbit")
    raise KeyboardInterrupt


def snapshot(store: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = open_store(store)
    try:
        return (conn.execute("SELECT * FROM entries ORDER BY date").fetchall(),
                conn.execute("SELECT * FROM outbox ORDER BY seq").fetchall(),
                conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall())
    finally:
        conn.close()


def test_an_import_interrupted_after_writing_days_keeps_none_of_them(tmp_path: Path) -> None:
    conn = open_store(tmp_path)
    log_entry(SqliteUnitOfWork(conn), "", TODAY - dt.timedelta(days=2), {"sleep_hours": "7"}, TODAY)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        import_days(SqliteUnitOfWork(conn), "", days_then_ctrl_c(40), "fitbit", TODAY)
    assert not conn.in_transaction
    conn.close()
    assert snapshot(tmp_path) == before  # entries, outbox and the clock's last stamp as they were


def test_the_same_import_not_interrupted_writes_every_day(tmp_path: Path) -> None:
    conn = open_store(tmp_path)

    def forty() -> Iterator[DayRecord]:
        for i in range(40):
            yield DayRecord(TODAY - dt.timedelta(days=i + 1), {"steps": 1000 + i}, "fitbit")

    summary = import_days(SqliteUnitOfWork(conn), "", forty(), "fitbit", TODAY)
    assert (summary.read, summary.imported) == (40, 40)
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (40,)
