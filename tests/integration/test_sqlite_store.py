"""The local SQLite store on real files: migrations, WAL, the outbox transaction, stamps and the clock.

Ends with one contract suite run against both the in-memory and the SQLite implementations.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from pulse_cli.store.connection import DB_NAME, open_store, read_meta
from pulse_cli.store.entries import SqliteEntryRepository
from pulse_cli.store.migrations import MIGRATIONS, apply_migrations
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.entry import Entry
from pulse_core.errors import StoreError
from pulse_core.memory import InMemoryEntryRepository, InMemoryUnitOfWork
from pulse_core.ports import EntryChange, EntryRepository, UnitOfWork
from pulse_core.usecases import DayRecord, delete_entry, import_days, log_entry
from sync.hlc import Stamp

TODAY = dt.date(2026, 3, 10)
DAY = dt.date(2026, 3, 9)
USER = "ana"


class Wall:
    """A wall clock in ms that the test sets by hand."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "pulse"


@pytest.fixture
def conn(home: Path) -> Iterator[sqlite3.Connection]:
    connection = open_store(home)
    yield connection
    connection.close()


def count(home: Path, table: str) -> int:
    """Rows in `table` as another process would see them: through a separate connection."""
    reader = sqlite3.connect(home / DB_NAME)
    try:
        return int(reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        reader.close()


def outbox_rows(conn: sqlite3.Connection) -> list[dict[str, object]]:
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM outbox ORDER BY seq")]
    finally:
        conn.row_factory = None


# --- migrations and connection -----------------------------------------------------------------------


def test_opening_a_store_applies_and_records_every_registered_migration(conn: sqlite3.Connection) -> None:
    recorded = [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert recorded == sorted(name for name, _ in MIGRATIONS)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "entries", "server_entries", "outbox", "conflicts", "shape_cursors"} <= tables


def test_migrations_can_be_run_again_and_apply_nothing(conn: sqlite3.Connection) -> None:
    assert apply_migrations(conn) == []
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_migrations_names_are_unique_and_ordered() -> None:
    names = [name for name, _ in MIGRATIONS]
    assert len(set(names)) == len(names)
    assert names == sorted(names)


def test_reopening_a_store_keeps_its_data_and_its_client_id(home: Path) -> None:
    first = open_store(home)
    log_entry(SqliteUnitOfWork(first, wall=Wall(1_000)), USER, DAY, {"steps": "9000"}, TODAY)
    client_id = read_meta(first, "client_id")
    first.close()
    second = open_store(home)
    try:
        assert read_meta(second, "client_id") == client_id
        entry = SqliteEntryRepository(second).get(USER, DAY)
        assert entry is not None and entry.steps == 9000
    finally:
        second.close()


def test_the_store_runs_in_wal_mode(conn: sqlite3.Connection, home: Path) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # WAL is a property of the file: a fresh connection sees it too
    reader = sqlite3.connect(home / DB_NAME)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        reader.close()


def test_a_file_that_is_not_a_database_is_reported_as_a_store_error(home: Path) -> None:
    home.mkdir(parents=True)
    (home / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        open_store(home)
    assert DB_NAME in info.value.message


# --- the outbox transaction --------------------------------------------------------------------------


def test_logging_a_day_writes_the_entry_and_its_outbox_mutation(conn: sqlite3.Connection, home: Path) -> None:
    log_entry(
        SqliteUnitOfWork(conn, wall=Wall(1_764_230_400_123)),
        USER,
        DAY,
        {"sleep_hours": "7.5", "steps": "9000"},
        TODAY,
    )
    assert (count(home, "entries"), count(home, "outbox")) == (1, 1)
    [row] = outbox_rows(conn)
    client_id = read_meta(conn, "client_id")
    assert row["hlc"] == f"0001764230400123:00000:{client_id}"
    assert (row["user_id"], row["date"], row["op"], row["source"], row["status"]) == (
        USER,
        "2026-03-09",
        "set",
        "manual",
        "pending",
    )
    assert json.loads(str(row["fields"])) == {"sleep_hours": 7.5, "steps": 9000}
    assert json.loads(str(row["base"])) == {"sleep_hours": None, "steps": None}


def test_an_uncommitted_entry_and_its_mutation_are_invisible_until_both_commit(
    conn: sqlite3.Connection, home: Path
) -> None:
    uow = SqliteUnitOfWork(conn, wall=Wall(1_000))
    with uow:
        stamp = uow.next_stamp()
        uow.entries.save(
            Entry(user=USER, date=DAY, steps=1, stamps={"steps": stamp}, sources={"steps": "manual"})
        )
        uow.record(EntryChange(USER, DAY, "set", {"steps": 1}, {"steps": None}, stamp))
        assert (count(home, "entries"), count(home, "outbox")) == (0, 0)
        uow.commit()
    assert (count(home, "entries"), count(home, "outbox")) == (1, 1)


def test_leaving_a_unit_of_work_without_commit_keeps_neither(conn: sqlite3.Connection, home: Path) -> None:
    uow = SqliteUnitOfWork(conn, wall=Wall(1_000))
    with uow:
        stamp = uow.next_stamp()
        uow.entries.save(Entry(user=USER, date=DAY, steps=1))
        uow.record(EntryChange(USER, DAY, "set", {"steps": 1}, {"steps": None}, stamp))
    assert not conn.in_transaction
    assert (count(home, "entries"), count(home, "outbox")) == (0, 0)


def fail_outbox_inserts(conn: sqlite3.Connection) -> None:
    """A real driver failure at the last step of a use case: the outbox insert aborts."""
    conn.execute(
        "CREATE TRIGGER outbox_fails BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )


def test_a_use_case_that_fails_writing_the_outbox_leaves_no_entry_either(
    conn: sqlite3.Connection, home: Path
) -> None:
    fail_outbox_inserts(conn)
    with pytest.raises((sqlite3.Error, StoreError)):
        log_entry(SqliteUnitOfWork(conn), USER, DAY, {"steps": "9000"}, TODAY)
    assert not conn.in_transaction
    assert (count(home, "entries"), count(home, "outbox")) == (0, 0)
    # the store is still usable afterwards
    conn.execute("DROP TRIGGER outbox_fails")
    log_entry(SqliteUnitOfWork(conn), USER, DAY, {"steps": "9000"}, TODAY)
    assert (count(home, "entries"), count(home, "outbox")) == (1, 1)


def test_a_driver_failure_during_a_use_case_surfaces_as_a_store_error(conn: sqlite3.Connection) -> None:
    fail_outbox_inserts(conn)
    with pytest.raises(StoreError):
        log_entry(SqliteUnitOfWork(conn), USER, DAY, {"steps": "9000"}, TODAY)


class Interrupted(Exception):
    pass


def test_an_interrupted_import_leaves_no_entries_and_no_mutations(
    conn: sqlite3.Connection, home: Path
) -> None:
    log_entry(SqliteUnitOfWork(conn), USER, DAY, {"steps": "9000"}, TODAY)
    days = [DayRecord(dt.date(2026, 3, d), {"steps": 1000 * d}) for d in range(1, 6)]

    def interrupt(read: int) -> None:
        if read == 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        import_days(SqliteUnitOfWork(conn), USER, days, "fitbit", TODAY, progress=interrupt)
    assert (count(home, "entries"), count(home, "outbox")) == (1, 1)
    summary = import_days(SqliteUnitOfWork(conn), USER, days, "fitbit", TODAY)
    assert summary.imported == 5
    assert (count(home, "entries"), count(home, "outbox")) == (6, 6)


def test_reimporting_into_sqlite_writes_nothing_new(conn: sqlite3.Connection, home: Path) -> None:
    days = [DayRecord(dt.date(2026, 3, d), {"steps": 1000 * d, "sleep_hours": "7.25"}) for d in range(1, 4)]
    import_days(SqliteUnitOfWork(conn), USER, days, "fitbit", TODAY)
    before = conn.execute("SELECT * FROM entries ORDER BY date").fetchall()
    summary = import_days(SqliteUnitOfWork(conn), USER, days, "fitbit", TODAY)
    assert summary.unchanged == 3
    assert conn.execute("SELECT * FROM entries ORDER BY date").fetchall() == before
    assert count(home, "outbox") == 3


# --- stamps, sources and the clock -------------------------------------------------------------------


def test_each_fields_stamp_and_source_survive_a_reopen(home: Path) -> None:
    conn = open_store(home)
    log_entry(SqliteUnitOfWork(conn, wall=Wall(1_000)), USER, DAY, {"steps": "7000"}, TODAY)
    import_days(
        SqliteUnitOfWork(conn, wall=Wall(2_000)),
        USER,
        [DayRecord(DAY, {"steps": 8000, "hrv_ms": "48.5", "hrv_method": "sdnn"})],
        "fitbit",
        TODAY,
    )
    manual_hlc, fitbit_hlc = (str(r["hlc"]) for r in outbox_rows(conn))
    conn.close()

    conn = open_store(home)
    try:
        entry = SqliteEntryRepository(conn).get(USER, DAY)
    finally:
        conn.close()
    assert entry is not None
    assert (entry.steps, entry.hrv_ms, entry.hrv_method) == (7000, Decimal("48.5"), "sdnn")
    assert entry.stamps == {"steps": manual_hlc, "hrv_ms": fitbit_hlc}
    assert entry.sources == {"steps": "manual", "hrv_ms": "fitbit"}


def test_a_tombstone_keeps_its_stamps_in_sqlite(conn: sqlite3.Connection) -> None:
    log_entry(SqliteUnitOfWork(conn), USER, DAY, {"steps": "7000"}, TODAY)
    delete_entry(SqliteUnitOfWork(conn), USER, DAY, TODAY)
    tomb = SqliteEntryRepository(conn).get(USER, DAY)
    [_, deleted] = outbox_rows(conn)
    assert tomb is not None and tomb.deleted
    assert deleted["op"] == "delete"
    assert set(tomb.stamps.values()) == {deleted["hlc"]}
    assert set(tomb.stamps) == {"sleep_hours", "hrv_ms", "steps", "weight_kg", "note", "deleted"}


def test_stamps_keep_increasing_across_reopened_connections_when_the_wall_clock_goes_back(home: Path) -> None:
    walls = [5_000_000, 1_000, 1_000, 4_999_999, 9_000_000]
    for i, ms in enumerate(walls):
        conn = open_store(home)
        try:
            log_entry(SqliteUnitOfWork(conn, wall=Wall(ms)), USER, DAY, {"steps": str(100 + i)}, TODAY)
        finally:
            conn.close()
    conn = open_store(home)
    try:
        stamps = [Stamp.parse(str(row["hlc"])) for row in outbox_rows(conn)]
    finally:
        conn.close()
    assert [(s.ms, s.counter) for s in stamps] == [
        (5_000_000, 0),
        (5_000_000, 1),  # the wall went back: the counter moves instead
        (5_000_000, 2),
        (5_000_000, 3),
        (9_000_000, 0),  # the wall caught up: back to wall time
    ]
    texts = [str(s) for s in stamps]
    assert texts == sorted(texts) and len(set(texts)) == len(texts)


def test_stamps_name_this_install_as_their_node(conn: sqlite3.Connection) -> None:
    log_entry(SqliteUnitOfWork(conn), USER, DAY, {"steps": "1"}, TODAY)
    [row] = outbox_rows(conn)
    assert Stamp.parse(str(row["hlc"])).node == read_meta(conn, "client_id")


def test_a_stamp_drawn_in_a_rolled_back_unit_of_work_is_forgotten_with_it(conn: sqlite3.Connection) -> None:
    uow = SqliteUnitOfWork(conn, wall=Wall(1_000))
    log_entry(uow, USER, DAY, {"steps": "1"}, TODAY)
    last = read_meta(conn, "hlc_last")
    with uow:
        uow.next_stamp()
    assert read_meta(conn, "hlc_last") == last
    log_entry(uow, USER, DAY, {"steps": "2"}, TODAY)
    first, second = (str(r["hlc"]) for r in outbox_rows(conn))
    assert first < second


# --- one contract, two implementations ---------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EntryRepository]:
    if request.param == "memory":
        yield InMemoryEntryRepository()
        return
    connection = open_store(tmp_path / "contract")
    yield SqliteEntryRepository(connection)
    connection.close()


def make(day: int, user: str = USER, deleted: bool = False, **values: object) -> Entry:
    return Entry(user=user, date=dt.date(2026, 3, day), deleted=deleted, **values)  # type: ignore[arg-type]


def test_contract_a_missing_entry_is_none(repo: EntryRepository) -> None:
    assert repo.get(USER, DAY) is None
    assert repo.list(USER) == []
    assert repo.previous_with(USER, DAY, "steps") is None


def test_contract_an_entry_reads_back_exactly_as_saved(repo: EntryRepository) -> None:
    entry = Entry(
        user=USER,
        date=DAY,
        sleep_hours=Decimal("7.25"),
        hrv_ms=Decimal("61.37"),
        hrv_method="sdnn",
        steps=0,
        weight_kg=Decimal("80.05"),
        note="ran 5 km, felt ok ✓",
        score=77,
        score_version=1,
        stamps={"sleep_hours": "0000000000001000:00000:a", "hrv_ms": "0000000000001000:00001:a"},
        sources={"sleep_hours": "manual", "hrv_ms": "fitbit"},
    )
    repo.save(entry)
    assert repo.get(USER, DAY) == entry
    assert repo.get("someone-else", DAY) is None


def test_contract_saving_again_replaces_the_entry(repo: EntryRepository) -> None:
    repo.save(make(9, steps=100, note="first"))
    repo.save(make(9, steps=200))
    got = repo.get(USER, dt.date(2026, 3, 9))
    assert got is not None and (got.steps, got.note) == (200, None)
    assert len(repo.list(USER)) == 1


def test_contract_changing_a_read_entry_does_not_change_the_stored_one(repo: EntryRepository) -> None:
    repo.save(make(9, steps=100, stamps={"steps": "s1"}))
    got = repo.get(USER, dt.date(2026, 3, 9))
    assert got is not None
    got.steps = 5
    got.stamps["steps"] = "s2"
    again = repo.get(USER, dt.date(2026, 3, 9))
    assert again is not None and (again.steps, again.stamps) == (100, {"steps": "s1"})


def test_contract_get_returns_tombstones_but_list_leaves_them_out(repo: EntryRepository) -> None:
    repo.save(make(5, deleted=True, stamps={"deleted": "s9"}))
    repo.save(make(6, steps=1))
    tomb = repo.get(USER, dt.date(2026, 3, 5))
    assert tomb is not None and tomb.deleted and tomb.stamps == {"deleted": "s9"}
    assert [e.date.day for e in repo.list(USER)] == [6]


def test_contract_list_is_oldest_first_inclusive_and_per_user(repo: EntryRepository) -> None:
    for day in (7, 3, 9, 1, 5):
        repo.save(make(day, steps=day))
    repo.save(make(4, user="ben", steps=4))
    assert [e.date.day for e in repo.list(USER)] == [1, 3, 5, 7, 9]
    assert [e.date.day for e in repo.list(USER, dt.date(2026, 3, 3), dt.date(2026, 3, 7))] == [3, 5, 7]
    assert [e.date.day for e in repo.list(USER, start=dt.date(2026, 3, 6))] == [7, 9]
    assert [e.date.day for e in repo.list(USER, end=dt.date(2026, 3, 2))] == [1]
    assert [e.date.day for e in repo.list("ben")] == [4]


def test_contract_previous_with_finds_the_latest_earlier_live_entry_having_the_field(
    repo: EntryRepository,
) -> None:
    repo.save(make(1, weight_kg=Decimal(80)))
    repo.save(make(3, weight_kg=Decimal(81)))
    repo.save(make(5, steps=100))  # later, but no weight
    repo.save(make(6, deleted=True))  # a tombstone
    repo.save(make(7, user="ben", weight_kg=Decimal(99)))  # another user
    repo.save(make(8, weight_kg=Decimal(82)))  # the day itself does not count
    found = repo.previous_with(USER, dt.date(2026, 3, 8), "weight_kg")
    assert found is not None and (found.date.day, found.weight_kg) == (3, Decimal(81))
    assert repo.previous_with(USER, dt.date(2026, 3, 1), "weight_kg") is None


@pytest.fixture(params=["memory", "sqlite"])
def any_uow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UnitOfWork]:
    if request.param == "memory":
        yield InMemoryUnitOfWork()
        return
    connection = open_store(tmp_path / "contract-uow")
    yield SqliteUnitOfWork(connection, wall=Wall(1_000))
    connection.close()


def test_contract_a_rolled_back_unit_of_work_keeps_nothing(any_uow: UnitOfWork) -> None:
    with any_uow:
        any_uow.entries.save(make(9, steps=1))
        assert any_uow.entries.get(USER, dt.date(2026, 3, 9)) is not None  # read your own writes
    with any_uow:
        assert any_uow.entries.get(USER, dt.date(2026, 3, 9)) is None


def test_contract_use_cases_behave_the_same_on_every_store(any_uow: UnitOfWork) -> None:
    log_entry(any_uow, USER, DAY, {"sleep_hours": "7.5", "hrv_ms": "60", "steps": "9000"}, TODAY)
    log_entry(any_uow, USER, DAY, {"sleep_hours": "7.5"}, TODAY)  # unchanged
    delete_entry(any_uow, USER, DAY, TODAY)
    log_entry(any_uow, USER, DAY, {"steps": "9000", "sleep_hours": "6"}, TODAY)
    with any_uow:
        entry = any_uow.entries.get(USER, DAY)
    assert entry is not None
    # (24 + 10 + 9000/333) / 80 * 100 = (34 + 27.027) / 0.8 = 76.28 -> 76
    assert (entry.sleep_hours, entry.hrv_ms, entry.steps, entry.score, entry.deleted) == (
        Decimal(6),
        None,
        9000,
        76,
        False,
    )


def test_contract_stamps_strictly_increase_across_units_of_work(any_uow: UnitOfWork) -> None:
    issued = []
    for _ in range(3):
        with any_uow:
            issued += [any_uow.next_stamp(), any_uow.next_stamp()]
            any_uow.commit()
    assert issued == sorted(issued) and len(set(issued)) == len(issued)
    assert all(Stamp.parse(s) for s in issued)
