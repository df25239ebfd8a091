"""`GET /v1/shape` on the wire: the Electric HTTP Shape protocol, over real HTTP against a real server.

The server under test runs the replication reader (Postgres logical slot -> shape log) and the shape
log watcher; writes reach it through the REST API, the push endpoint, another server instance, or by
hand in SQL. Raw httpx only: what is tested is the wire format (docs/shape-protocol.md).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from server_support import Api, ServerProcess, User, now_ms, set_mutation, stamp, started_server
from throwaway_db import migrated_database

from pulse_server import maintenance
from pulse_server.accounts import add_user, hash_token, issue_token, remove_user, revoke_tokens, set_password
from pulse_server.db.database import Database
from pulse_server.db.models import User as UserRow
from pulse_server.erasure import erase
from pulse_server.settings import Settings
from sync import stamps_column

SHAPE = "/v1/shape"
OFFSET = re.compile(r"^\d+_\d+$")
PASSWORD = "correct horse battery"
# Every column of `entries` a shape carries, in Postgres text form (updated_at stays on the server).
DATA_COLUMNS = ("user_id", "date", "sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score",
                "score_version", "deleted")
STAMP_COLUMNS = tuple(f"{f}_{kind}" for f in ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note", "deleted")
                      for kind in ("hlc", "src"))
ENTRY_COLUMNS = (*DATA_COLUMNS, *STAMP_COLUMNS)
# A shape's default columns: the twelve stamp and source columns folded into `stamps`.
SHAPE_COLUMNS = (*DATA_COLUMNS, "username", "stamps")
Message = dict[str, Any]
Row = dict[str, str | None]


# -- helpers -----------------------------------------------------------------------------------------


def get_shape(api: Api, params: dict[str, str] | None = None, **query: str) -> httpx.Response:
    """One raw request; `table=entries` unless given."""
    return api.get(SHAPE, params={"table": "entries", **(params or {}), **query})


def key(user_id: int | str, day: str) -> str:
    return f'"public"."entries"/"{user_id}"/"{day}"'


def change_messages(body: list[Message]) -> list[Message]:
    return [m for m in body if "key" in m]


def control_messages(body: list[Message]) -> list[str]:
    return [m["headers"]["control"] for m in body if "control" in m.get("headers", {})]


def apply(rows: dict[str, Row], messages: list[Message]) -> None:
    """Materialise changes as Electric's `Shape` does: insert and update upsert, delete removes."""
    for m in change_messages(messages):
        if m["headers"]["operation"] == "delete":
            rows.pop(m["key"], None)
        else:
            rows[m["key"]] = {**rows.get(m["key"], {}), **m["value"]}


@dataclass
class Follower:
    """A shape followed the way a client does: handle, offset, the rows so far."""

    api: Api
    params: dict[str, str] = field(default_factory=dict)
    handle: str = ""
    offset: str = "-1"
    cursor: str = ""
    rows: dict[str, Row] = field(default_factory=dict)

    def snapshot(self) -> httpx.Response:
        response = get_shape(self.api, self.params, offset="-1")
        assert response.status_code == 200, response.text
        self.handle, self.offset = response.headers["electric-handle"], response.headers["electric-offset"]
        self.rows = {}
        apply(self.rows, response.json())
        return response

    def catch_up(self) -> httpx.Response:
        """One non-live request after the current offset."""
        response = get_shape(self.api, self.params, offset=self.offset, handle=self.handle)
        assert response.status_code == 200, response.text
        self.offset = response.headers["electric-offset"]
        apply(self.rows, response.json())
        return response

    def live(self) -> httpx.Response:
        query = {"offset": self.offset, "handle": self.handle, "live": "true"}
        if self.cursor:
            query["cursor"] = self.cursor
        response = get_shape(self.api, self.params, **query)
        assert response.status_code == 200, response.text
        self.offset, self.cursor = response.headers["electric-offset"], response.headers["electric-cursor"]
        apply(self.rows, response.json())
        return response

    def follow(self) -> Follower:
        self.snapshot()
        while "electric-up-to-date" not in self.catch_up().headers:
            pass
        return self

    def wait_for(self, done: Callable[[list[Message]], bool], timeout_s: float = 5.0) -> list[Message]:
        """Catch up until the changes seen satisfy `done`; those changes."""
        seen: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while True:
            seen += change_messages(self.catch_up().json())
            if done(seen):
                return seen
            assert time.monotonic() < deadline, f"the log did not show the expected changes in time: {seen}"
            time.sleep(0.05)


def sql_rows(pg: psycopg.Connection[Any], *user_ids: int) -> dict[str, Row]:
    """The entries of these users as Postgres prints them (each type's output function), by shape key.

    (`format('%s', x)` is the output function: `true::text` would be "true" where psql shows "t".)"""
    columns = sql.SQL(", ").join(
        sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE format('%%s', {c}) END").format(c=sql.Identifier(c))
        for c in ENTRY_COLUMNS)
    rows = pg.execute(
        sql.SQL("SELECT {} FROM entries WHERE user_id = ANY(%s)").format(columns), (list(user_ids),)
    ).fetchall()
    return {key(r[0], r[1]): dict(zip(ENTRY_COLUMNS, r, strict=True)) for r in rows}


def without_username(rows: dict[str, Row]) -> dict[str, Row]:
    """The rows as the table holds them: without the username, `stamps` unfolded into its twelve columns."""
    return {k: {c: v for c, v in stamps_column.expand(row).items() if c != "username"} for k, row in rows.items()}


def snapshot_settles(api: Api, pg: psycopg.Connection[Any], *user_ids: int, params: dict[str, str] | None = None,
                     timeout_s: float = 5.0) -> httpx.Response:
    """Ask for offset=-1 until its rows are what SQL shows for these users (the reader is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = get_shape(api, params, offset="-1")
        assert response.status_code == 200, response.text
        rows: dict[str, Row] = {}
        apply(rows, response.json())
        expected = sql_rows(pg, *user_ids)
        if without_username(rows) == expected:
            return response
        assert time.monotonic() < deadline, f"snapshot never matched SQL:\n{rows}\n!=\n{expected}"
        time.sleep(0.05)


def head_offset(pg: psycopg.Connection[Any]) -> str:
    row = pg.execute("SELECT head_lsn, head_op FROM shape_state WHERE id = 1").fetchone()
    assert row is not None
    return f"{row[0]}_{row[1]}"


def assert_bad_request(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == "Invalid request", body
    assert param in body["errors"], body
    assert all(isinstance(why, str) and why for why in body["errors"][param]), body
    assert response.headers["cache-control"] == "no-store"


def entries_intact(pg: psycopg.Connection[Any]) -> int:
    row = pg.execute("SELECT to_regclass('public.entries') IS NOT NULL, (SELECT count(*) FROM entries)").fetchone()
    assert row is not None and row[0] is True
    return int(row[1])


def lag_metric(api: Api) -> float:
    text = api.get("/metrics").text
    found = re.search(r"^pulse_replication_lag_bytes (\S+)$", text, re.MULTILINE)
    assert found is not None, "no pulse_replication_lag_bytes in /metrics"
    return float(found[1])


def live_after(follower: Follower, write: Callable[[], Any]) -> tuple[httpx.Response, float, Any]:
    """Hold a live request, then write; the response, seconds from the write's return to it, the write's result."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(lambda: (follower.live(), time.monotonic()))
        time.sleep(0.4)
        assert not held.done(), "the live request was not held"
        result = write()
        written = time.monotonic()
        response, arrived = held.result(timeout=30)
    return response, max(0.0, arrived - written), result


# -- fixtures ----------------------------------------------------------------------------------------


def held_live(api: Api, pg: psycopg.Connection[Any], user_id: int) -> tuple[Follower, httpx.Response]:
    """Follow the shape, then a live request answered with a change of this user's entries: once it is
    answered, the server holds the token (and its scope) in memory."""
    follower = Follower(api).follow()
    response, _, _ = live_after(follower, lambda: pg.execute(
        "UPDATE entries SET steps = 2 WHERE user_id = %s", (user_id,)))
    return follower, response


def wait_for_slot(conn: psycopg.Connection[Any], timeout_s: float = 60.0) -> None:
    """Wait until this database's slot is made. Creating a logical slot waits for every transaction
    then running anywhere in the cluster to end (the slot is listed meanwhile, with no confirmed_flush_lsn)."""
    deadline = time.monotonic() + timeout_s
    while not conn.execute("SELECT 1 FROM pg_replication_slots WHERE database = current_database()"
                           " AND confirmed_flush_lsn IS NOT NULL").fetchone():
        assert time.monotonic() < deadline, "the replication slot was never made"
        time.sleep(0.05)


def logged_within(conn: psycopg.Connection[Any], user_id: int, day: str, steps: int, timeout_s: float) -> bool:
    """Whether the shape log shows `steps` for this user's day within the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if conn.execute("SELECT 1 FROM shape_log WHERE user_id = %s AND date = %s AND value->>'steps' = %s",
                        (user_id, day, str(steps))).fetchone():
            return True
        time.sleep(0.05)
    return False


def wait_for_live_reader(conn: psycopg.Connection[Any], probe_user_id: int) -> None:
    """The reader's slot is made and it logs change after change (two writes, each within 5 s)."""
    wait_for_slot(conn)
    for steps in (1, 2):
        conn.execute(
            "INSERT INTO entries (user_id, date, steps) VALUES (%s, '2020-01-01', %s)"
            " ON CONFLICT (user_id, date) DO UPDATE SET steps = excluded.steps", (probe_user_id, steps))
        if not logged_within(conn, probe_user_id, "2020-01-01", steps, 5.0):
            pytest.fail(f"the replication reader did not log probe write {steps} within 5 s: the shape API cannot "
                        "be tested (see test_the_reader_keeps_logging_after_a_notification_wakes_it)")


def _probe_user(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("INSERT INTO users (username, password_hash) VALUES (%s, '!unusable') RETURNING id",
                       (f"probe-{secrets.token_hex(5)}",)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def shapes(start_server: Callable[..., ServerProcess], pg: psycopg.Connection[Any]) -> ServerProcess:
    """A server running the replication reader and the shape log watcher, the reader live."""
    server = start_server(replication_reader="true", shape_watcher="true")
    wait_for_live_reader(pg, _probe_user(pg))
    return server


@pytest.fixture(scope="module")
def new_user(db: Database) -> Callable[..., User]:
    """A user with a bearer token, made in the database: no argon2 hash and sign-in per test (the
    token is issued by the server's own `issue_token`, so the server resolves it like any other)."""

    def make(coach: bool = False) -> User:
        name = f"{'coach' if coach else 'athlete'}-{secrets.token_hex(5)}"
        with db.session() as session:
            row = UserRow(username=name, password_hash="!unusable", is_coach=coach)
            session.add(row)
            session.commit()
            session.refresh(row)
            assert row.id is not None
            token, _ = issue_token(session, row, 1)
            return User(row.id, name, "", token)

    return make


@pytest.fixture
def shape_client(shapes: ServerProcess, client: Callable[..., Api]) -> Callable[[User | None], Api]:
    """An Api on the shape server, signed in as the user (anonymous with None)."""
    return lambda user: client(user, url=shapes.url)


@pytest.fixture(scope="module")
def athlete_with_entries(new_user: Callable[..., User], shapes: ServerProcess, pg: psycopg.Connection[Any]) -> User:
    """An athlete with three days: a full one, a sparse one, and a tombstoned one. Read-only for tests."""
    user = new_user()
    with Api(shapes.url, user.token) as api:
        for day, fields in (
            ("2026-11-27", {"sleep_hours": 7.5, "hrv_ms": 48.5, "hrv_method": "rmssd", "steps": 8000,
                            "weight_kg": 71.4, "note": "easy day"}),
            ("2025-12-31", {"steps": 300}),
            ("2026-03-01", {"steps": 6000, "sleep_hours": 6}),
        ):
            assert api.put(f"/v1/entries/{day}", json=fields).status_code == 200
        assert api.delete("/v1/entries/2026-03-01").status_code == 204
        snapshot_settles(api, pg, user.id)
    return user


# -- offset=-1: the snapshot -------------------------------------------------------------------------


def test_a_snapshot_sends_every_row_as_an_insert_in_postgres_text_ending_in_snapshot_end(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = athlete_with_entries
    response = snapshot_settles(shape_client(user), pg, user.id)
    body = response.json()
    assert response.status_code == 200
    assert response.headers["electric-handle"]
    assert OFFSET.match(response.headers["electric-offset"])
    assert "electric-up-to-date" not in response.headers
    *rows, end = body
    assert end["headers"]["control"] == "snapshot-end"
    assert {"xmin", "xmax", "xip_list"} <= set(end["headers"])
    assert int(end["headers"]["xmin"]) <= int(end["headers"]["xmax"])
    assert isinstance(end["headers"]["xip_list"], list)
    assert all(m["headers"]["operation"] == "insert" and m["headers"]["relation"] == ["public", "entries"]
               for m in rows)
    by_key = {m["key"]: m["value"] for m in rows}
    assert set(by_key) == {key(user.id, d) for d in ("2025-12-31", "2026-03-01", "2026-11-27")}
    assert without_username(by_key) == sql_rows(pg, user.id)
    assert all(set(v) == set(SHAPE_COLUMNS) and v["username"] == user.username for v in by_key.values())
    full = by_key[key(user.id, "2026-11-27")]
    assert (full["user_id"], full["date"]) == (str(user.id), "2026-11-27")
    assert (full["sleep_hours"], full["hrv_ms"], full["weight_kg"]) == ("7.50", "48.50", "71.40")
    assert (full["steps"], full["hrv_method"], full["note"], full["deleted"]) == ("8000", "rmssd", "easy day", "f")
    sparse = by_key[key(user.id, "2025-12-31")]
    assert (sparse["steps"], sparse["sleep_hours"], sparse["note"], sparse["score"]) == ("300", None, None, None)
    assert by_key[key(user.id, "2026-03-01")]["deleted"] == "t"  # a tombstone travels as a row
    # One write set every field but the tombstone: one stamp and source, then "=" for each field it set.
    table = sql_rows(pg, user.id)[key(user.id, "2026-11-27")]
    assert full["stamps"] == f"{table['sleep_hours_hlc']} manual;=;=;=;=;"
    # `stamps` named beside fewer columns is folded from the stored values: the same text
    named = change_messages(get_shape(shape_client(user), offset="-1", columns="user_id,date,stamps").json())
    assert {m["key"]: m["value"]["stamps"] for m in named} == {k: v["stamps"] for k, v in by_key.items()}
    assert all(isinstance(v, str) or v is None for value in by_key.values() for v in value.values())


def test_rows_without_a_stored_message_are_encoded_in_their_place_in_the_snapshot(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    """A log rebuilt from a copy of the table holds rows without a stored message: a snapshot mixing
    such an athlete with one whose messages are all stored still holds every row, once, as in SQL,
    ordered by athlete and date."""
    coach, stored, rebuilt = new_user(coach=True), new_user(), new_user()
    for athlete in (stored, rebuilt):
        pg.execute("INSERT INTO entries (user_id, date, steps, note) SELECT %s, '2026-01-01'::date + i, i, 'n' || i"
                   " FROM generate_series(0, 3) i", (athlete.id,))
        assert shape_client(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    api = shape_client(coach)
    snapshot_settles(api, pg, stored.id, rebuilt.id)
    cleared = pg.execute("UPDATE shape_rows SET message = NULL"
                         " WHERE user_id = %s AND date IN ('2026-01-02', '2026-01-04')", (rebuilt.id,)).rowcount
    assert cleared == 2
    rows = change_messages(get_shape(api, offset="-1").json())
    athletes = sorted((stored, rebuilt), key=lambda u: u.id)
    assert [m["key"] for m in rows] == [key(u.id, f"2026-01-0{d}") for u in athletes for d in range(1, 5)]
    by_key = {m["key"]: m["value"] for m in rows}
    assert without_username(by_key) == sql_rows(pg, stored.id, rebuilt.id)
    assert {v["user_id"]: v["username"] for v in by_key.values()} == {
        str(stored.id): stored.username, str(rebuilt.id): rebuilt.username}
    # Maintenance stores the missing messages: the same snapshot, from stored text again.
    filled = maintenance.fill_messages(pg, maintenance.Retention(batch=1), threading.Event())
    assert filled >= 2  # (other tests' rows may lack one too: the database is shared)
    assert pg.execute("SELECT count(*) FROM shape_rows WHERE message IS NULL").fetchone() == (0,)
    assert change_messages(get_shape(api, offset="-1").json()) == rows


def test_a_client_leaving_in_the_middle_of_a_snapshot_ends_its_read(
    new_user: Callable[..., User], shapes: ServerProcess, pg: psycopg.Connection[Any]
) -> None:
    """The snapshot streams from an open transaction; a client that goes away half way must not leave
    that transaction (and its pooled connection) behind. (A filtered snapshot is read a few thousand
    rows at a time: 20,000 rows of 1 kB are more than the sockets buffer; uncompressed, since these rows
    compress to almost nothing. The client's receive buffer is set small: left to the kernel, it grew
    up to net.ipv4.tcp_rmem's 32 MB here, the whole body, and the read sometimes ended before the client
    had read its first part.)"""
    user = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps, note) SELECT %s, '1990-01-01'::date + i, i, repeat('x', 999)"
               " FROM generate_series(0, 19999) i", (user.id,))
    assert logged_within(pg, user.id, "2044-10-03", 19999, 60.0)

    def open_reads() -> int:
        return int(pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND application_name = 'pulse-server' AND state <> 'idle'"
                              " AND query LIKE '%%shape_snapshot%%'"
                              ).fetchone()[0])  # type: ignore[index]

    small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)])
    with (httpx.Client(base_url=shapes.url, headers={"Authorization": f"Bearer {user.token}",
                                                      "Accept-Encoding": "identity"}, transport=small_buffer) as http,
          http.stream("GET", SHAPE, params={"table": "entries", "offset": "-1", "where": "steps >= 0"})
          as response):
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first.startswith(b"[")
        assert open_reads() == 1  # the read is still going: the body is megabytes
    deadline = time.monotonic() + 10
    while open_reads():
        assert time.monotonic() < deadline, "the snapshot's transaction outlived its client"
        time.sleep(0.1)


def test_many_streamed_snapshots_at_once_all_complete(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], shapes: ServerProcess,
    start_server: Callable[..., ServerProcess], pg: psycopg.Connection[Any]
) -> None:
    """A coach's snapshot of more athletes than one part holds streams while holding a pooled
    connection, and needs a worker thread for each part. Sixty at once against a pool of two (whose
    waiters give up after a second) must all complete: requests waiting for the pool must not hold
    every thread the streams need."""
    coach = new_user(coach=True)
    athletes = [new_user() for _ in range(12)]
    for athlete in athletes:
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
        assert shape_client(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    snapshot_settles(shape_client(coach), pg, *(a.id for a in athletes))
    small = start_server(pool_size="2", pool_timeout_s="1")  # serves the log the first server's reader keeps

    def snapshot(_: int) -> tuple[int, int]:
        with httpx.Client(base_url=small.url, headers={"Authorization": f"Bearer {coach.token}"}, timeout=60) as http:
            response = http.get(SHAPE, params={"table": "entries", "offset": "-1"})
        return response.status_code, len(change_messages(response.json())) if response.status_code == 200 else -1

    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(snapshot, range(60)))
    assert answers == [(200, 12)] * 60


def test_the_schema_header_types_every_column_and_marks_the_primary_key(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    response = get_shape(shape_client(athlete_with_entries), offset="-1")
    schema = json.loads(response.headers["electric-schema"])
    assert set(schema) == set(SHAPE_COLUMNS)
    assert schema["user_id"]["pk_index"] == 0 and schema["date"]["pk_index"] == 1
    assert [c for c, s in schema.items() if "pk_index" in s] == ["user_id", "date"]
    assert schema["user_id"]["not_null"] is True and schema["date"]["not_null"] is True
    types = {c: s["type"] for c, s in schema.items()}
    assert (types["date"], types["steps"], types["deleted"], types["note"]) == ("date", "int4", "bool", "text")
    assert types["sleep_hours"] == "numeric" and schema["sleep_hours"].get("scale") == 2


def test_the_columns_parameter_narrows_the_values_and_must_keep_the_key(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    api = shape_client(athlete_with_entries)
    response = get_shape(api, offset="-1", columns="user_id,date,steps")
    assert response.status_code == 200
    assert {frozenset(m["value"]) for m in change_messages(response.json())} == {
        frozenset({"user_id", "date", "steps"})}
    filtered = get_shape(api, {"where": "steps > 5000"}, offset="-1", columns="user_id,date")
    assert [m["value"] for m in change_messages(filtered.json())] == [
        {"user_id": str(athlete_with_entries.id), "date": "2026-11-27"}]  # the filter sees the whole row
    assert_bad_request(get_shape(api, offset="-1", columns="date,steps"), "columns")
    assert_bad_request(get_shape(api, offset="-1", columns="user_id,date,password_hash"), "columns")


# -- offset=<o>&handle=H: the log after it -----------------------------------------------------------


def test_following_the_snapshot_offset_returns_only_later_changes_ending_up_to_date(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    api = shape_client(user)
    assert api.put("/v1/entries/2026-11-25", json={"steps": 1}).status_code == 200
    snapshot_settles(api, pg, user.id)
    follower = Follower(api).follow()
    snapshot_offset = follower.offset
    assert api.put("/v1/entries/2026-11-26", json={"steps": 4321}).status_code == 200
    seen = follower.wait_for(lambda ms: any(m["headers"]["last"] for m in ms))
    # A new day is written as an empty insert then an update, in one transaction.
    assert {m["key"] for m in seen} == {key(user.id, "2026-11-26")}
    assert seen[0]["headers"]["operation"] == "insert"
    assert follower.rows[key(user.id, "2026-11-26")]["steps"] == "4321"
    assert all(m["value"]["username"] == user.username for m in seen)
    for change in seen:
        headers = change["headers"]
        assert headers["relation"] == ["public", "entries"]
        assert int(headers["lsn"]) > int(snapshot_offset.split("_")[0])
        assert isinstance(headers["op_position"], int)
        assert all(isinstance(t, int) for t in headers["txids"]) and len(headers["txids"]) == 1
    assert [m["headers"]["last"] for m in seen] == [False] * (len(seen) - 1) + [True]
    # The offset is exclusive: asking again from the new offset gives nothing but up-to-date.
    again = get_shape(api, offset=follower.offset, handle=follower.handle)
    assert again.status_code == 200
    body = again.json()
    assert body == [{"headers": {"control": "up-to-date", "global_last_seen_lsn": body[-1]["headers"][
        "global_last_seen_lsn"]}}]
    assert "electric-up-to-date" in again.headers and again.headers["electric-up-to-date"] == ""
    assert again.headers["electric-offset"] == follower.offset == head_offset(pg)
    assert body[-1]["headers"]["global_last_seen_lsn"] == follower.offset.split("_")[0]
    assert json.loads(again.headers["electric-schema"])  # non-live 200s carry the schema


def test_offset_now_is_up_to_date_at_the_head_with_no_rows(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    response = get_shape(shape_client(athlete_with_entries), offset="now")
    assert response.status_code == 200
    head = head_offset(pg)
    assert response.json() == [{"headers": {"control": "up-to-date", "global_last_seen_lsn": head.split("_")[0]}}]
    assert response.headers["electric-offset"] == head
    assert "electric-up-to-date" in response.headers and response.headers["electric-handle"]
    assert json.loads(response.headers["electric-schema"])


# -- live=true: long polling --------------------------------------------------------------------------


def _write_by_put(api: Api, pg: psycopg.Connection[Any], user: User, day: str) -> dict[str, Any]:
    response = api.put(f"/v1/entries/{day}", json={"steps": 5555})
    assert response.status_code == 200
    return {}


def _write_by_push(api: Api, pg: psycopg.Connection[Any], user: User, day: str) -> dict[str, Any]:
    return api.pushed("watch", [set_mutation(1, day, {"steps": 5555}, stamp(now_ms(), 0, "watch"))])


def _write_by_sql(api: Api, pg: psycopg.Connection[Any], user: User, day: str) -> dict[str, Any]:
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, 5555)", (user.id, day))
    return {}


@pytest.mark.parametrize("write", [_write_by_put, _write_by_push, _write_by_sql], ids=["put", "push", "sql"])
def test_a_write_reaches_a_held_live_request_in_under_a_second(
    write: Callable[[Api, psycopg.Connection[Any], User, str], dict[str, Any]],
    new_user: Callable[..., User],
    shape_client: Callable[[User | None], Api],
    client: Callable[..., Api],
    pg: psycopg.Connection[Any],
) -> None:
    user = new_user()
    follower = Follower(shape_client(user)).follow()
    day = "2026-11-20"
    # PUT and push go through the *other* server instance: the log is fed by Postgres, not by the process.
    response, latency, pushed = live_after(follower, lambda: write(client(user), pg, user, day))
    assert latency < 1.0, f"the change reached the held request after {latency:.3f} s"
    body = response.json()
    changes = change_messages(body)
    assert {m["key"] for m in changes} == {key(user.id, day)}
    assert follower.rows[key(user.id, day)]["steps"] == "5555"
    assert changes[0]["headers"]["operation"] == "insert"
    assert len({(m["headers"]["lsn"], tuple(m["headers"]["txids"])) for m in changes}) == 1  # one transaction
    change = changes[-1]
    assert change["headers"]["last"] is True
    assert OFFSET.match(f'{change["headers"]["lsn"]}_{change["headers"]["op_position"]}')
    assert control_messages(body) == ["up-to-date"]
    assert "electric-up-to-date" in response.headers and response.headers["electric-cursor"]
    assert response.headers["electric-offset"] == f'{change["headers"]["lsn"]}_{change["headers"]["op_position"]}'
    if pushed:  # read-your-writes: the push names the transaction the change carries
        assert change["headers"]["txids"] == [int(pushed["txid"])]


def test_the_shape_offset_reaches_the_push_lsn_once_the_pushed_change_is_in(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], client: Callable[..., Api]
) -> None:
    user = new_user()
    follower = Follower(shape_client(user)).follow()
    pushed = client(user).pushed("watch", [set_mutation(1, "2026-11-21", {"steps": 1}, stamp(now_ms(), 0, "watch"))])
    seen = follower.wait_for(lambda ms: any(int(pushed["txid"]) in m["headers"]["txids"] for m in ms))
    assert int(seen[-1]["headers"]["lsn"]) >= int(pushed["lsn"])
    assert int(follower.offset.split("_")[0]) >= int(pushed["lsn"])


def test_a_live_request_with_nothing_new_returns_up_to_date_after_about_20_s_with_the_same_offset(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api]
) -> None:
    follower = Follower(shape_client(new_user())).follow()
    offset = follower.offset
    started = time.monotonic()
    response = follower.live()
    held = time.monotonic() - started
    assert 18 <= held <= 25, held
    assert response.json() == [{"headers": {"control": "up-to-date", "global_last_seen_lsn": offset.split("_")[0]}}]
    assert response.headers["electric-offset"] == offset
    assert response.headers["electric-cursor"] and "electric-up-to-date" in response.headers


def test_changes_of_other_users_do_not_wake_a_held_request_early(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    me, other = new_user(), new_user()
    follower = Follower(shape_client(me)).follow()
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(follower.live)
        time.sleep(0.3)
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-01', 1)", (other.id,))
        time.sleep(1.0)
        assert not held.done(), "another user's change answered my live request"
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-01', 2)", (me.id,))
        response = held.result(timeout=5)
    assert [m["key"] for m in change_messages(response.json())] == [key(me.id, "2026-11-01")]


# -- errors ------------------------------------------------------------------------------------------


def test_an_unknown_handle_is_409_must_refetch_with_the_current_handle(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    api = shape_client(athlete_with_entries)
    follower = Follower(api).follow()
    for query in ({"offset": follower.offset}, {"offset": follower.offset, "live": "true"}):
        response = get_shape(api, handle="0123456789abcdef0123-1", **query)
        assert response.status_code == 409
        assert response.json() == [{"headers": {"control": "must-refetch"}}]
        assert response.headers["electric-handle"] == follower.handle
        assert "no-store" in response.headers["cache-control"]
    assert get_shape(api, offset="-1", handle=follower.handle).status_code == 200


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"offset": "-1", "live": "true"}, "live"),
        ({"offset": "now", "live": "true"}, "live"),
        ({}, "offset"),
        ({"offset": "abc"}, "offset"),
        ({"offset": "0/16B3748", "handle": "h"}, "offset"),
        ({"offset": "12_"}, "offset"),
        ({"offset": "-2"}, "offset"),
        ({"offset": "1_2_3", "handle": "h"}, "offset"),
        ({"offset": "12_0"}, "handle"),
        ({"offset": "12_0", "handle": ""}, "handle"),
        ({"offset": "-1", "table": "users"}, "table"),
        ({"offset": "-1", "table": "public.users"}, "table"),
        ({"offset": "-1", "table": "grants"}, "table"),
        ({"offset": "-1", "table": "tokens"}, "table"),
        ({"offset": "-1", "table": "applied_mutations"}, "table"),
        ({"offset": "-1", "table": "shape_log"}, "table"),
        ({"offset": "-1", "table": "pg_catalog.pg_authid"}, "table"),
        ({"offset": "-1", "table": "entries; drop table entries"}, "table"),
        ({"offset": "-1", "table": ""}, "table"),
        ({"offset": "-1", "replica": "half"}, "replica"),
        ({"offset": "-1", "live_sse": "true"}, "live_sse"),
    ],
)
def test_a_bad_request_is_400_naming_the_parameter_with_no_store(
    query: dict[str, str], param: str, new_user: Callable[..., User],
    shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any],
) -> None:
    before = entries_intact(pg)
    api = shape_client(new_user())
    response = api.get(SHAPE, params={"table": "entries", **query})
    assert_bad_request(response, param)
    assert "electric-handle" not in response.headers
    assert entries_intact(pg) >= before


def test_a_missing_table_is_400(new_user: Callable[..., User], shape_client: Callable[[User | None], Api]) -> None:
    assert_bad_request(shape_client(new_user()).get(SHAPE, params={"offset": "-1"}), "table")


def test_the_table_may_be_named_with_its_schema(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    api = shape_client(athlete_with_entries)
    plain = get_shape(api, offset="-1")
    for name in ("public.entries", '"public"."entries"'):
        response = get_shape(api, offset="-1", table=name)
        assert response.status_code == 200
        assert change_messages(response.json()) == change_messages(plain.json())


def test_unknown_parameters_are_ignored(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    api = shape_client(athlete_with_entries)
    plain = Follower(api).follow()
    extra = {"cache-buster": secrets.token_hex(4), "expired_handle": "old-1", "log": "full", "whatever": "x"}
    response = get_shape(api, extra, offset="-1")
    assert response.status_code == 200
    assert response.headers["electric-handle"] == plain.handle
    rows: dict[str, Row] = {}
    apply(rows, response.json())
    assert rows == plain.rows
    later = get_shape(api, extra, offset=plain.offset, handle=plain.handle)
    assert later.status_code == 200 and control_messages(later.json()) == ["up-to-date"]


# -- where -------------------------------------------------------------------------------------------


@pytest.fixture
def varied_athlete(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> User:
    user = new_user()
    rows = [
        ("2025-06-01", 1200, "6.00", "rmssd", None),
        ("2025-12-31", 9000, "8.25", "sdnn", "long run"),
        ("2026-01-01", 5000, None, None, None),
        ("2026-02-14", 5001, "7.00", "rmssd", "it's fine"),
        ("2026-11-27", None, "7.50", None, None),
    ]
    with pg.transaction():
        for day, steps, sleep, method, note in rows:
            pg.execute(
                "INSERT INTO entries (user_id, date, steps, sleep_hours, hrv_method, note)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (user.id, day, steps, sleep, method, note),
            )
    snapshot_settles(shape_client(user), pg, user.id)
    return user


@pytest.mark.parametrize(
    ("where", "params", "sql_where"),
    [
        ("steps > 5000", {}, "steps > 5000"),
        ("date >= '2026-01-01'", {}, "date >= '2026-01-01'"),
        ("steps > $1 AND date < $2", {"params[1]": "1000", "params[2]": "2026-02-01"},
         "steps > 1000 AND date < '2026-02-01'"),
        ("sleep_hours = 7.5 OR hrv_method = 'sdnn'", {}, "sleep_hours = 7.5 OR hrv_method = 'sdnn'"),
        ("note IS NULL", {}, "note IS NULL"),
        ("note = 'it''s fine'", {}, "note = 'it''s fine'"),
        ("steps NOT IN (1200, 9000)", {}, "steps NOT IN (1200, 9000)"),
        ("(steps < 2000 OR steps > 8000) AND deleted = false", {}, "(steps < 2000 OR steps > 8000) AND NOT deleted"),
        ("steps IS NULL OR sleep_hours >= 8", {}, "steps IS NULL OR sleep_hours >= 8"),
        pytest.param(
            "NOT steps > 5000", {}, "NOT steps > 5000",
        ),
    ],
)
def test_a_where_narrows_the_shape_exactly_as_postgres_evaluates_it(
    where: str, params: dict[str, str], sql_where: str, varied_athlete: User,
    shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any],
) -> None:
    user = varied_athlete
    response = get_shape(shape_client(user), {"where": where, **params}, offset="-1")
    assert response.status_code == 200, response.text
    got = sorted(m["value"]["date"] for m in change_messages(response.json()))
    expected = [r[0] for r in pg.execute(
        sql.SQL("SELECT date::text FROM entries WHERE user_id = %s AND ({}) ORDER BY date").format(sql.SQL(sql_where)),
        (user.id,),
    ).fetchall()]
    assert got == expected
    assert 0 < len(got) < 5  # every case narrows, none empties


def test_a_where_shape_has_its_own_handle_and_its_log_keeps_to_the_filter(
    varied_athlete: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    api = shape_client(varied_athlete)
    everything = Follower(api).follow()
    busy = Follower(api, {"where": "steps > 5000"}).follow()
    assert busy.handle != everything.handle
    assert {r["date"] for r in busy.rows.values()} == {"2025-12-31", "2026-02-14"}
    uid = varied_athlete.id
    with pg.transaction():
        pg.execute("UPDATE entries SET steps = 100 WHERE user_id = %s AND date = '2025-12-31'", (uid,))  # moves out
        pg.execute("UPDATE entries SET steps = 7000 WHERE user_id = %s AND date = '2025-06-01'", (uid,))  # moves in
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-05-05', 10)", (uid,))  # never in
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-05-06', 10000)", (uid,))  # in
    busy.wait_for(lambda ms: any(m["key"] == key(uid, "2026-05-06") for m in ms))
    assert {r["date"] for r in busy.rows.values()} == {"2025-06-01", "2026-02-14", "2026-05-06"}
    assert all(int(r["steps"] or 0) > 5000 for r in busy.rows.values())
    # What a client following with the filter holds is what a fresh snapshot with the filter holds.
    fresh = Follower(api, {"where": "steps > 5000"}).follow()
    assert fresh.rows == busy.rows


@pytest.mark.parametrize(
    "where",
    [
        "1=1; drop table entries",
        "steps > 0; DROP TABLE entries",
        "password = 'x'",
        "password_hash IS NOT NULL",
        "user_id = 1",
        "steps > (SELECT count(*) FROM users)",
        "steps IN (SELECT steps FROM entries)",
        "EXISTS (SELECT 1 FROM entries)",
        "steps > 0 OR 1=1",
        "steps > 0 -- AND user_id = 1",
        "pg_sleep(5) IS NULL",
        "note = 'x' UNION SELECT password_hash FROM users",
        "steps::text = '1'",
        "steps > $3",
    ],
)
def test_a_where_outside_the_grammar_or_the_allow_list_is_400_and_touches_nothing(
    where: str, athlete_with_entries: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    before = entries_intact(pg)
    started = time.monotonic()
    response = get_shape(shape_client(athlete_with_entries), {"where": where, "params[1]": "1"}, offset="-1")
    assert_bad_request(response, "where")
    assert time.monotonic() - started < 5, "pg_sleep(5) ran: the where reached Postgres"
    assert entries_intact(pg) >= before


def test_a_where_comparing_with_nan_is_400_not_500(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    response = get_shape(shape_client(athlete_with_entries), {"where": "steps < 'NaN'"}, offset="-1")
    assert_bad_request(response, "where")


def test_a_where_can_never_widen_past_the_callers_scope(
    athlete_with_entries: User, new_user: Callable[..., User], shape_client: Callable[[User | None], Api],
    pg: psycopg.Connection[Any],
) -> None:
    victim = athlete_with_entries
    me = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (me.id,))
    api = shape_client(me)
    snapshot_settles(api, pg, me.id)
    for where in (f"username = '{victim.username}'", f"steps > 0 OR username = '{victim.username}'",
                  f"NOT username = '{me.username}'", "steps IS NOT NULL OR steps IS NULL"):
        response = get_shape(api, {"where": where}, offset="-1")
        assert response.status_code == 200
        users = {m["value"]["user_id"] for m in change_messages(response.json())}
        assert users <= {str(me.id)}, where


# -- scope and security ------------------------------------------------------------------------------


def test_a_users_shape_never_contains_another_users_rows(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    ann, bob = new_user(), new_user()
    for user, steps in ((ann, 1), (bob, 2)):
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', %s)", (user.id, steps))
    ann_api = shape_client(ann)
    snapshot_settles(ann_api, pg, ann.id)
    snapshot_settles(shape_client(bob), pg, bob.id)
    follower = Follower(ann_api).follow()
    assert set(follower.rows) == {key(ann.id, "2026-11-27")}
    # Bob writes; Ann's log moves on past it without showing it; then Ann writes and sees only hers.
    pg.execute("UPDATE entries SET steps = 20 WHERE user_id = %s", (bob.id,))
    pg.execute("UPDATE entries SET steps = 10 WHERE user_id = %s", (ann.id,))
    seen = follower.wait_for(lambda ms: any(m["value"].get("steps") == "10" for m in ms))
    assert {m["value"]["user_id"] for m in seen} == {str(ann.id)}
    assert set(follower.rows) == {key(ann.id, "2026-11-27")}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-real-token"}, {"Authorization": "Bearer"}, {"Authorization": "Basic eDp5"}],
    ids=["none", "bad", "empty", "basic"],
)
def test_a_shape_without_a_valid_token_is_401(headers: dict[str, str], shapes: ServerProcess) -> None:
    with httpx.Client(base_url=shapes.url, headers=headers) as http:
        response = http.get(SHAPE, params={"table": "entries", "offset": "-1"})
    assert response.status_code == 401
    assert "electric-handle" not in response.headers and "key" not in response.text


def test_a_coach_sees_exactly_the_granting_athletes_with_their_usernames(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    coach = new_user(coach=True)
    granting, other_granting, stranger = new_user(), new_user(), new_user()
    for athlete in (granting, other_granting, stranger):
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1), (%s, '2026-11-26', 2)",
                   (athlete.id, athlete.id))
    for athlete in (granting, other_granting):
        assert shape_client(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    api = shape_client(coach)
    snapshot_settles(api, pg, granting.id, other_granting.id)
    follower = Follower(api).follow()
    names = {granting.id: granting.username, other_granting.id: other_granting.username}
    assert {(r["user_id"], r["username"]) for r in follower.rows.values()} == {
        (str(i), n) for i, n in names.items()}
    narrowed = get_shape(api, {"where": f"username = '{granting.username}'"}, offset="-1")
    assert {m["value"]["user_id"] for m in change_messages(narrowed.json())} == {str(granting.id)}
    # The stranger's writes never reach the coach's log; the granting athlete's do.
    pg.execute("UPDATE entries SET steps = 99 WHERE user_id = %s", (stranger.id,))
    pg.execute("UPDATE entries SET steps = 98 WHERE user_id = %s AND date = '2026-11-27'", (granting.id,))
    seen = follower.wait_for(lambda ms: any(m["value"].get("steps") == "98" for m in ms))
    assert {m["value"]["user_id"] for m in seen} == {str(granting.id)}


def test_granting_or_revoking_makes_the_old_handle_409_and_the_refetch_holds_the_new_scope(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    coach = new_user(coach=True)
    first, second = new_user(), new_user()
    for athlete in (first, second):
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
        snapshot_settles(shape_client(athlete), pg, athlete.id)
    assert shape_client(first).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    api = shape_client(coach)
    follower = Follower(api).follow()
    assert {r["user_id"] for r in follower.rows.values()} == {str(first.id)}

    def refetch_after_409(expected_ids: set[int]) -> None:
        old = follower.handle
        response = get_shape(api, offset=follower.offset, handle=old)
        assert response.status_code == 409
        assert response.json() == [{"headers": {"control": "must-refetch"}}]
        new = response.headers["electric-handle"]
        assert new and new != old
        refetched = get_shape(api, offset="-1", handle=new)
        assert refetched.status_code == 200 and refetched.headers["electric-handle"] == new
        follower.follow()
        assert follower.handle == new
        assert without_username(follower.rows) == sql_rows(pg, *expected_ids)

    assert shape_client(second).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    refetch_after_409({first.id, second.id})
    assert shape_client(first).delete(f"/v1/grants/{coach.username}").status_code == 204
    refetch_after_409({second.id})


def test_a_coachs_held_live_request_answers_409_at_once_when_an_athlete_revokes(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    coach, athlete = new_user(coach=True), new_user()
    assert shape_client(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    api = shape_client(coach)
    snapshot_settles(api, pg, athlete.id)
    follower = Follower(api).follow()
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(get_shape, api, offset=follower.offset, handle=follower.handle, live="true")
        time.sleep(0.4)
        assert not held.done()
        assert shape_client(athlete).delete(f"/v1/grants/{coach.username}").status_code == 204
        revoked = time.monotonic()
        response = held.result(timeout=25)
        waited = time.monotonic() - revoked
    assert response.status_code == 409 and waited < 2, (response.status_code, waited)
    assert response.json() == [{"headers": {"control": "must-refetch"}}]
    assert response.headers["electric-handle"] != follower.handle
    # and the athlete's later writes never reach the coach
    follower.follow()
    assert follower.rows == {}
    pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s", (athlete.id,))
    time.sleep(0.3)
    assert change_messages(follower.catch_up().json()) == []


# -- live mode: tokens and grants held in memory (docs/shapes.md, "Live mode") ------------------------
#
# A live request takes who its token is and what it may see from the server's memory, which forgets
# them when tokens are revoked or removed, or grants change. A held request of a revoked token ends 401;
# that answer also shows the server has heard of the revocation, so the next request must be refused.


def _revoke_tokens(db: Database, user: User) -> None:
    """`pulse-server token revoke`."""
    with db.session() as session:
        row = session.get(UserRow, user.id)
        assert row is not None
        revoke_tokens(session, row)


def _change_password(db: Database, user: User) -> None:
    """`pulse-server user passwd`: every token of the user is revoked."""
    with db.session() as session:
        row = session.get(UserRow, user.id)
        assert row is not None
        set_password(session, row, "a whole new password")


def _erase_account(db: Database, user: User) -> None:
    """`pulse-server erase --user NAME` with no days: the whole account, its tokens revoked."""
    db.run(lambda conn: erase(conn, user.id, user.username, None, None, now_ms(), whole_account=True))


def _remove_user(db: Database, user: User) -> None:
    """`pulse-server user remove`: the user's row goes, and its tokens with it (ON DELETE CASCADE)."""
    db.run(lambda conn: remove_user(conn, user.id, user.username, now_ms()))


@pytest.mark.parametrize("revoke", [_revoke_tokens, _change_password, _erase_account, _remove_user],
                         ids=["token-revoke", "password", "erase-account", "remove-user"])
def test_a_revoked_tokens_held_live_requests_end_401_and_its_next_request_is_refused(
    revoke: Callable[[Database, User], None], new_user: Callable[..., User],
    shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any], db: Database,
) -> None:
    athlete = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    api = shape_client(athlete)
    snapshot_settles(api, pg, athlete.id)
    # A live request that returns with a change: the server now holds the token in memory.
    follower, response = held_live(api, pg, athlete.id)
    assert [m["value"]["steps"] for m in change_messages(response.json())] == ["2"]
    query = {"offset": follower.offset, "handle": follower.handle, "live": "true"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        held = [pool.submit(get_shape, api, **query) for _ in range(2)]  # (the second from memory)
        time.sleep(0.4)
        assert not any(h.done() for h in held), "the live requests were not held"
        revoke(db, athlete)
        revoked = time.monotonic()
        answers = [h.result(timeout=25) for h in held]
        waited = time.monotonic() - revoked
    assert [a.status_code for a in answers] == [401, 401] and waited < 5, (answers, waited)
    assert all("electric-handle" not in a.headers and "key" not in a.text for a in answers)
    again = get_shape(api, **query)
    assert again.status_code == 401 and "key" not in again.text
    # Nor does a stream begin for it.
    assert get_shape(api, **query, live_sse="true").status_code == 401


def test_a_revoked_tokens_sse_stream_ends_and_its_next_request_is_refused(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any],
    db: Database,
) -> None:
    athlete = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    api = shape_client(athlete)
    snapshot_settles(api, pg, athlete.id)
    follower = Follower(api).follow()
    with sse_stream(follower) as (response, lines):
        assert response.status_code == 200
        _revoke_tokens(db, athlete)
        revoked = time.monotonic()
        rest = list(lines)  # until the server ends the stream
        waited = time.monotonic() - revoked
        pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s", (athlete.id,))
    assert [line for line in rest if line.startswith("data: ")] == [] and waited < 5, (rest, waited)
    again = get_shape(api, offset=follower.offset, handle=follower.handle, live="true", live_sse="true")
    assert again.status_code == 401


def test_revoking_another_users_token_leaves_a_held_live_request_alone(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any],
    db: Database,
) -> None:
    athlete, other = new_user(), new_user()
    api = shape_client(athlete)
    snapshot_settles(api, pg, athlete.id)
    follower = Follower(api).follow()
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(follower.live)
        time.sleep(0.4)
        _revoke_tokens(db, other)
        time.sleep(1.0)
        assert not held.done(), "another user's revocation ended the held request"
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 3)", (athlete.id,))
        response = held.result(timeout=25)
    assert [m["value"]["steps"] for m in change_messages(response.json())] == ["3"]


def _watcher_pids(pg: psycopg.Connection[Any]) -> set[int]:
    rows = pg.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                      " AND application_name = 'pulse-shape-watcher'").fetchall()
    return {int(r[0]) for r in rows}


def test_a_token_revoked_while_the_watcher_was_disconnected_is_refused_once_it_is_back(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any],
    db: Database,
) -> None:
    """The server may miss the revocation's notification while its LISTEN is down: it forgets every token
    it held when the connection goes and again when it is back, so the token is read from Postgres."""
    athlete = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    api = shape_client(athlete)
    snapshot_settles(api, pg, athlete.id)
    # The token is now held.
    follower, response = held_live(api, pg, athlete.id)
    assert response.status_code == 200
    old = _watcher_pids(pg)
    assert old, "no shape watcher connected"
    pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(old),))
    _revoke_tokens(db, athlete)  # the watcher waits a second before it connects again: most likely unheard
    pg.execute("UPDATE entries SET steps = 3 WHERE user_id = %s", (athlete.id,))  # a held token would get it
    deadline = time.monotonic() + 30
    while not (_watcher_pids(pg) - old):
        assert time.monotonic() < deadline, "the shape watcher did not connect again"
        time.sleep(0.1)
    refused = get_shape(api, offset=follower.offset, handle=follower.handle, live="true")
    assert refused.status_code == 401 and "key" not in refused.text


def test_a_live_request_of_an_expired_token_is_refused(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any],
) -> None:
    athlete = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    snapshot_settles(shape_client(athlete), pg, athlete.id)
    short = secrets.token_urlsafe(32)
    ttl_s = 8.0  # over 10 times what following and one live request take
    pg.execute("INSERT INTO tokens (user_id, token_hash, created_at, expires_at)"
               " VALUES (%s, %s, now(), now() + make_interval(secs => %s))", (athlete.id, hash_token(short), ttl_s))
    issued = time.monotonic()
    api = shape_client(User(athlete.id, athlete.username, "", short))
    # A live request that returns with a change: the server now holds the token in memory.
    follower, response = held_live(api, pg, athlete.id)
    assert response.status_code == 200 and time.monotonic() - issued < ttl_s, "too slow to test the expiry"
    time.sleep(max(0.0, ttl_s + 0.5 - (time.monotonic() - issued)))
    expired = get_shape(api, offset=follower.offset, handle=follower.handle, live="true")
    assert expired.status_code == 401 and "key" not in expired.text


def test_a_coachs_next_live_request_after_a_revoked_grant_is_409_and_the_refetch_leaves_the_athlete_out(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    coach, athlete, staying = new_user(coach=True), new_user(), new_user()
    for user in (athlete, staying):
        assert shape_client(user).post("/v1/grants", json={"coach": coach.username}).status_code == 201
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (user.id,))
    api = shape_client(coach)
    snapshot_settles(api, pg, athlete.id, staying.id)
    # A live request that returns with a change: the server now holds the coach's scope in memory.
    follower, response = held_live(api, pg, athlete.id)
    assert [m["value"]["user_id"] for m in change_messages(response.json())] == [str(athlete.id)]
    assert shape_client(athlete).delete(f"/v1/grants/{coach.username}").status_code == 204
    pg.execute("UPDATE entries SET steps = 3 WHERE user_id = %s", (athlete.id,))
    # Answered at once if the server already heard of the grant, else held and woken by it: 409 either way.
    again = get_shape(api, offset=follower.offset, handle=follower.handle, live="true", cursor=follower.cursor)
    assert again.status_code == 409 and again.headers["electric-handle"] != follower.handle
    follower.follow()
    assert {r["user_id"] for r in follower.rows.values()} == {str(staying.id)}


# -- live mode over server-sent events ---------------------------------------------------------------


@contextlib.contextmanager
def sse_stream(follower: Follower, flag: str = "live_sse") -> Iterator[tuple[httpx.Response, Iterator[str]]]:
    """A live SSE request from the follower's position: the response (headers in), and its lines."""
    query = {"table": "entries", **follower.params, "offset": follower.offset, "handle": follower.handle,
             "live": "true", flag: "true"}
    with follower.api.http.stream("GET", SHAPE, params=query) as response:
        yield response, response.iter_lines()


def sse_batch(lines: Iterator[str]) -> list[Message]:
    """The events up to and including the next up-to-date (keep-alive comments skipped)."""
    batch: list[Message] = []
    for line in lines:
        if line.startswith("data: "):
            batch.append(json.loads(line[len("data: "):]))
            if batch[-1]["headers"].get("control") == "up-to-date":
                return batch
        else:
            assert line == "" or line.startswith(":"), line
    raise AssertionError(f"the stream ended before an up-to-date: {batch}")


@pytest.mark.parametrize("flag", ["live_sse", "experimental_live_sse"])
def test_an_sse_stream_carries_each_change_once_and_its_up_to_date_gives_an_exclusive_offset(
    flag: str, new_user: Callable[..., User], shape_client: Callable[[User | None], Api],
    pg: psycopg.Connection[Any],
) -> None:
    user = new_user()
    follower = Follower(shape_client(user)).follow()
    with sse_stream(follower, flag) as (response, lines):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["electric-handle"] == follower.handle
        assert response.headers["electric-offset"] == follower.offset and response.headers["electric-cursor"]
        assert "private" in response.headers["cache-control"] and "no-cache" in response.headers["cache-control"]
        with pg.transaction():  # two changes in one transaction: the up-to-date falls after the second
            pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-01', 1)", (user.id,))
            pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-02', 2)", (user.id,))
        first = sse_batch(lines)
        pg.execute("UPDATE entries SET steps = 3 WHERE user_id = %s AND date = '2026-11-01'", (user.id,))
        second = sse_batch(lines)
    assert [(m["key"], m["headers"]["operation"]) for m in change_messages(first)] == [
        (key(user.id, "2026-11-01"), "insert"), (key(user.id, "2026-11-02"), "insert")]
    assert [(m["key"], m["value"]["steps"]) for m in change_messages(second)] == [(key(user.id, "2026-11-01"), "3")]
    # The client resumes from `<global_last_seen_lsn>_0`: past every change it was sent, before any later one.
    last = change_messages(first)[-1]["headers"]
    resume = f'{first[-1]["headers"]["global_last_seen_lsn"]}_0'
    assert last["op_position"] == 1 and resume == f'{int(last["lsn"]) + 1}_0'
    assert [m["value"]["steps"] for m in change_messages(get_shape(
        follower.api, offset=resume, handle=follower.handle).json())] == ["3"]
    single = change_messages(second)[-1]["headers"]
    assert single["op_position"] == 0 and second[-1]["headers"]["global_last_seen_lsn"] == single["lsn"]
    after = get_shape(follower.api, offset=f'{single["lsn"]}_0', handle=follower.handle)
    assert change_messages(after.json()) == [] and "electric-up-to-date" in after.headers


def test_an_sse_stream_never_carries_another_users_changes(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    me, other = new_user(), new_user()
    follower = Follower(shape_client(me)).follow()
    with sse_stream(follower) as (_, lines):
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-03', 1)", (other.id,))
        time.sleep(0.3)
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-03', 2)", (me.id,))
        batch = sse_batch(lines)
    assert [m["key"] for m in change_messages(batch)] == [key(me.id, "2026-11-03")]


def test_a_quiet_sse_stream_sends_a_keep_alive_comment_about_every_15_s(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api]
) -> None:
    follower = Follower(shape_client(new_user())).follow()
    with sse_stream(follower) as (_, lines):
        started = time.monotonic()
        line = next(lines)
        waited = time.monotonic() - started
    assert line == ": keep-alive" and 13 <= waited <= 20, (line, waited)


def test_a_coachs_sse_stream_ends_when_an_athlete_revokes_and_the_next_request_is_409(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    coach, athlete = new_user(coach=True), new_user()
    assert shape_client(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    api = shape_client(coach)
    snapshot_settles(api, pg, athlete.id)
    follower = Follower(api).follow()
    with sse_stream(follower) as (_, lines):
        assert shape_client(athlete).delete(f"/v1/grants/{coach.username}").status_code == 204
        revoked = time.monotonic()
        rest = list(lines)  # until the server ends the stream
        waited = time.monotonic() - revoked
    assert [line for line in rest if line.startswith("data: ")] == [] and waited < 2, (rest, waited)
    again = get_shape(api, offset=follower.offset, handle=follower.handle, live="true", live_sse="true")
    assert again.status_code == 409 and again.headers["electric-handle"] != follower.handle


# -- headers -----------------------------------------------------------------------------------------


ORIGIN = "https://pwa.example"


def _exposed(response: httpx.Response) -> set[str]:
    return {h.strip().lower() for h in response.headers.get("access-control-expose-headers", "").split(",")}


def test_every_electric_header_sent_is_exposed_to_browsers_and_every_200_is_private(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    api = shape_client(user)
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 5)", (user.id,))
    snapshot_settles(api, pg, user.id)
    api.http.headers["Origin"] = ORIGIN
    follower = Follower(api).follow()
    responses = {
        "snapshot": get_shape(api, offset="-1"),
        "catch-up": get_shape(api, offset=follower.offset, handle=follower.handle),
        "now": get_shape(api, offset="now"),
        "409": get_shape(api, offset=follower.offset, handle="stale-1"),
        "400": get_shape(api, offset="bad"),
    }
    responses["live"], _, _ = live_after(follower, lambda: pg.execute(
        "UPDATE entries SET steps = 1 WHERE user_id = %s AND date = '2026-11-27'", (user.id,)))
    for name, response in responses.items():
        assert response.headers.get("access-control-allow-origin") in ("*", ORIGIN), name
        sent = {h for h in response.headers if h.lower().startswith("electric-")}
        assert sent <= _exposed(response), (name, sent - _exposed(response))
        if response.status_code == 200:
            private = "private" in response.headers["cache-control"]
            varies = "authorization" in response.headers.get("vary", "").lower()
            assert private or varies, (name, response.headers)
            assert "etag" in _exposed(response)
    assert {"electric-handle", "electric-offset", "electric-schema", "electric-up-to-date",
            "electric-cursor"} <= _exposed(responses["live"])


def _shape_counts(api: Api) -> dict[str, float]:
    """GET requests to the shape route in the latency histogram, by status."""
    prefix = 'pulse_http_request_duration_seconds_count{method="GET",route="/v1/shape",status="'
    return {line[len(prefix):].split('"')[0]: float(line.split()[-1])
            for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)}


def test_a_live_request_answers_the_same_through_the_fast_path_and_through_the_cors_stack(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    """A live request without an Origin is answered in front of the middleware stack (ShapeFastPath); one
    with an Origin goes through it (CORS). Same statuses, bodies, headers, request ids and metrics."""
    athlete = new_user()
    pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 1)", (athlete.id,))
    api = shape_client(athlete)
    snapshot_settles(api, pg, athlete.id)
    follower = Follower(api).follow()
    pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s", (athlete.id,))
    query = {"table": "entries", "offset": follower.offset, "handle": follower.handle, "live": "true"}
    deadline = time.monotonic() + 10
    while not change_messages(get_shape(api, offset=follower.offset, handle=follower.handle).json()):
        assert time.monotonic() < deadline, "the change never reached the log"
        time.sleep(0.05)
    counted = _shape_counts(api)
    answers: dict[str, list[httpx.Response]] = {}
    for name, headers in (("fast", {}), ("cors", {"origin": ORIGIN})):
        answers[name] = [
            api.http.get(SHAPE, params=query, headers={**headers, "x-request-id": f"rid-{name}"}),
            api.http.get(SHAPE, params=query, headers={**headers, "authorization": "Bearer nope"}),
            api.http.get(SHAPE, params={**query, "offset": "-1"}, headers=headers),  # live with -1: a 400
        ]
    fast, cors = answers["fast"], answers["cors"]
    assert [r.status_code for r in fast] == [r.status_code for r in cors] == [200, 401, 400]
    assert fast[0].headers["x-request-id"] == "rid-fast" and cors[0].headers["x-request-id"] == "rid-cors"
    assert all(re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]) for r in fast[1:] + cors[1:])
    assert [m["value"]["steps"] for m in change_messages(fast[0].json())] == ["2"]
    for one, other in zip(fast, cors, strict=True):
        assert one.content == other.content
        plain = {k: v for k, v in one.headers.items() if k not in ("date", "x-request-id", "electric-cursor")}
        through = {k: v for k, v in other.headers.items()
                   if k not in ("date", "x-request-id", "electric-cursor") and not k.startswith("access-control-")}
        if "vary" in through:  # CORS adds Origin to a response's Vary
            through["vary"] = ", ".join(v for v in through.pop("vary").split(", ") if v != "Origin")
            if not through["vary"]:
                del through["vary"]
        assert plain == through
        assert ("electric-cursor" in one.headers) == ("electric-cursor" in other.headers)
    assert all("access-control-allow-origin" in r.headers for r in cors)
    assert not any("access-control-allow-origin" in r.headers for r in fast)
    now = _shape_counts(api)
    grew = {status: now[status] - counted.get(status, 0) for status in now if now[status] != counted.get(status, 0)}
    assert grew == {"200": 2, "401": 2, "400": 2}


def test_a_cors_preflight_allows_get_with_an_authorization_header(shapes: ServerProcess) -> None:
    with httpx.Client(base_url=shapes.url) as http:
        response = http.options(SHAPE, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match",
        })
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", ORIGIN)
    assert "GET" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "if-none-match" in allowed


def test_cache_lifetimes_are_long_for_the_snapshot_and_short_for_live(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    api = shape_client(athlete_with_entries)
    follower = Follower(api).follow()

    def max_age(response: httpx.Response) -> int:
        found = re.search(r"max-age=(\d+)", response.headers["cache-control"])
        assert found is not None
        return int(found[1])

    snapshot = get_shape(api, offset="-1")
    catch_up = get_shape(api, offset=follower.offset, handle=follower.handle)
    assert max_age(snapshot) >= 3600 > max_age(catch_up) > 0
    assert "authorization" in snapshot.headers["vary"].lower()


def test_an_if_none_match_with_the_etag_of_an_identical_request_is_304(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api]
) -> None:
    api = shape_client(athlete_with_entries)
    follower = Follower(api).follow()
    first = get_shape(api, offset=follower.offset, handle=follower.handle)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = api.get(SHAPE, params={"table": "entries", "offset": follower.offset, "handle": follower.handle},
                    headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["electric-offset"] == first.headers["electric-offset"]
    other = api.get(SHAPE, params={"table": "entries", "offset": follower.offset, "handle": follower.handle},
                    headers={"If-None-Match": '"not-it"'})
    assert other.status_code == 200


def test_another_user_gets_no_304_for_the_same_request_with_my_etag(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api]
) -> None:
    ann, bob = new_user(), new_user()
    ann_api, bob_api = shape_client(ann), shape_client(bob)
    now = get_shape(ann_api, offset="now")
    response = bob_api.get(SHAPE, params={"table": "entries", "offset": "now"}, headers={"If-None-Match": now.headers[
        "etag"]})
    assert response.status_code == 200  # the handle (and so the ETag) names the caller's scope


def test_an_unchanged_snapshot_is_304_even_after_unrelated_transactions(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    api = shape_client(athlete_with_entries)
    first = get_shape(api, offset="-1")
    pg.execute("SELECT pg_current_xact_id()")  # a transaction somewhere: takes an xid, changes no row
    again = api.get(SHAPE, params={"table": "entries", "offset": "-1"},
                    headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


# -- deletes -----------------------------------------------------------------------------------------


def test_deleting_through_the_api_sends_a_tombstone_update(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    api = shape_client(user)
    assert api.put("/v1/entries/2026-11-27", json={"steps": 100}).status_code == 200
    snapshot_settles(api, pg, user.id)
    follower = Follower(api).follow()
    assert api.delete("/v1/entries/2026-11-27").status_code == 204
    (change,) = follower.wait_for(lambda ms: len(ms) >= 1)
    assert change["headers"]["operation"] == "update" and change["key"] == key(user.id, "2026-11-27")
    assert change["value"]["deleted"] == "t"
    assert follower.rows[key(user.id, "2026-11-27")]["deleted"] == "t"


def test_a_hard_delete_in_sql_sends_a_delete_with_only_the_key(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    api = shape_client(user)
    pg.execute("INSERT INTO entries (user_id, date, steps, note) VALUES (%s, '2026-11-27', 5, 'x'), "
               "(%s, '2026-11-26', 6, 'y')", (user.id, user.id))
    snapshot_settles(api, pg, user.id)
    follower = Follower(api).follow()
    pg.execute("DELETE FROM entries WHERE user_id = %s AND date = '2026-11-27'", (user.id,))
    (change,) = follower.wait_for(lambda ms: len(ms) >= 1)
    assert change["headers"]["operation"] == "delete"
    assert change["key"] == key(user.id, "2026-11-27")
    assert change["value"] == {"user_id": str(user.id), "date": "2026-11-27"}
    assert set(follower.rows) == {key(user.id, "2026-11-26")}
    snapshot_settles(api, pg, user.id)  # and the next snapshot no longer has it


def test_several_changes_in_one_transaction_share_an_lsn_and_only_the_last_is_marked_last(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    follower = Follower(shape_client(user)).follow()
    with pg.transaction():
        for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
            pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, %s, 1)", (user.id, day))
    seen = follower.wait_for(lambda ms: len(ms) >= 3)
    assert len({m["headers"]["lsn"] for m in seen}) == 1
    assert [m["headers"]["op_position"] for m in seen] == sorted(m["headers"]["op_position"] for m in seen)
    assert [m["headers"]["last"] for m in seen] == [False, False, True]
    assert len({tuple(m["headers"]["txids"]) for m in seen}) == 1


# -- values the reader must not lose -----------------------------------------------------------------


def test_an_update_that_leaves_a_long_note_alone_keeps_it_in_the_snapshot(
    new_user: Callable[..., User], shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    api = shape_client(user)
    note = secrets.token_hex(6000)  # 12 kB of hex: stored out of line (TOASTed)
    pg.execute("INSERT INTO entries (user_id, date, steps, note) VALUES (%s, '2026-11-27', 1, %s)", (user.id, note))
    snapshot_settles(api, pg, user.id)
    follower = Follower(api).follow()
    pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s", (user.id,))
    follower.wait_for(lambda ms: any(m["value"].get("steps") == "2" for m in ms))
    assert follower.rows[key(user.id, "2026-11-27")]["note"] == note
    snapshot = get_shape(api, offset="-1")
    (row,) = change_messages(snapshot.json())
    assert row["value"].get("note") == note


# -- metrics -----------------------------------------------------------------------------------------


def test_metrics_expose_the_replication_lag_in_bytes(shapes: ServerProcess, client: Callable[..., Api]) -> None:
    assert lag_metric(client(url=shapes.url)) >= 0


def test_the_replication_lag_falls_back_when_the_wal_moves_without_synced_changes(
    shapes: ServerProcess, client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    api = client(url=shapes.url)
    size = 4 * 1024 * 1024
    pg.execute("SELECT pg_logical_emit_message(true, 'pulse-test', repeat('x', %s))", (size,))
    pg.execute("UPDATE entries SET steps = steps WHERE false")  # wakes the reader without changing a row
    deadline = time.monotonic() + 1.5
    while lag_metric(api) >= size:
        assert time.monotonic() < deadline, "the lag never fell below the unrelated WAL just written"
        time.sleep(0.2)


def test_writes_to_entries_fire_no_trigger(shapes: ServerProcess, pg: psycopg.Connection[Any]) -> None:
    """The walsender wakes the reader: a trigger on every write (a NOTIFY, whose commit takes a
    cluster-wide lock, or the write counter the reader once polled) would only cost the writers."""
    triggers = pg.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'entries'::regclass"
                          " AND NOT tgisinternal").fetchall()
    assert triggers == []


def test_a_write_that_fires_no_trigger_still_reaches_the_shape_log(
    new_user: Callable[..., User], shapes: ServerProcess, pg: psycopg.Connection[Any]
) -> None:
    user = new_user()
    time.sleep(1.5)  # no write lately: the reader is idle
    with pg.transaction():
        pg.execute("SET LOCAL session_replication_role = replica")  # as a restore or an apply worker writes
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-05', 77)", (user.id,))
    assert logged_within(pg, user.id, "2026-11-05", 77, 5.0)


# -- a database of our own: rows that predate the slot, TRUNCATE ---------------------------------------


@dataclass
class Early:
    """A server started on a fresh database that already held an entry; its first snapshot."""

    url: str
    server: ServerProcess
    user: User
    first_snapshot: httpx.Response


def fresh_database() -> contextlib.AbstractContextManager[str]:
    """A migrated database of our own (its slot and itself dropped at the end)."""
    return migrated_database("pulse_test_shape")


def shape_server(url: str, log_dir: Path) -> ServerProcess:
    """A server with the reader and the watcher on a database of our own (caller stops it)."""
    env = {"PULSE_DATABASE_URL": url, "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true"}
    return started_server(lambda attempt: log_dir / f"server-{attempt}.log", env)


@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Early]:
    """A fresh migrated database with a user and an entry, then a shape server started on it."""
    with fresh_database() as url:
        database = Database(Settings(database_url=url, pool_size=1))
        try:
            with database.session() as session:
                row = add_user(session, "early-bird", PASSWORD, False)
                token, _ = issue_token(session, row, 1)
                assert row.id is not None
                user = User(row.id, row.username, PASSWORD, token)
        finally:
            database.dispose()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', 42)", (user.id,))
            server = shape_server(url, tmp_path_factory.mktemp("early"))
            try:
                wait_for_live_reader(conn, _probe_user(conn))
                with Api(server.url, user.token) as api:
                    first = get_shape(api, offset="-1")
                yield Early(url, server, user, first)
            finally:
                server.stop()


def test_rows_written_before_the_replication_slot_existed_are_in_the_snapshot(early: Early) -> None:
    assert early.first_snapshot.status_code == 200
    assert [m["value"]["steps"] for m in change_messages(early.first_snapshot.json())] == ["42"]


def test_a_truncate_makes_every_handle_409_and_the_refetch_is_empty(early: Early) -> None:
    with Api(early.server.url, early.user.token) as api, psycopg.connect(early.url, autocommit=True) as conn:
        conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-20', 7)", (early.user.id,))
        follower = Follower(api).follow()
        if key(early.user.id, "2026-11-20") not in follower.rows:
            follower.wait_for(lambda ms: any(m["key"] == key(early.user.id, "2026-11-20") for m in ms))
        old = follower.handle
        conn.execute("TRUNCATE entries")
        deadline = time.monotonic() + 5
        while (response := get_shape(api, offset=follower.offset, handle=old)).status_code == 200:
            assert time.monotonic() < deadline, "the old handle was still served after TRUNCATE"
            time.sleep(0.05)
        assert response.status_code == 409
        assert response.json() == [{"headers": {"control": "must-refetch"}}]
        assert response.headers["electric-handle"] != old
        follower.follow()
        assert follower.handle == response.headers["electric-handle"] and follower.rows == {}
        conn.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-21', 8)", (early.user.id,))
        seen = follower.wait_for(lambda ms: len(ms) >= 1)
        assert [m["key"] for m in seen] == [key(early.user.id, "2026-11-21")]


def test_the_reader_picks_up_each_write_after_idling_between_them(tmp_path: Path) -> None:
    with fresh_database() as url, psycopg.connect(url, autocommit=True) as conn:
        user_id = _probe_user(conn)
        server = shape_server(url, tmp_path)
        try:
            wait_for_slot(conn)
            time.sleep(0.5)  # the reader has backed off to its idle poll
            for steps in (1, 2, 3):
                conn.execute(
                    "INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-27', %s)"
                    " ON CONFLICT (user_id, date) DO UPDATE SET steps = excluded.steps", (user_id, steps))
                assert logged_within(conn, user_id, "2026-11-27", steps, 3.0), f"write {steps} never logged"
        finally:
            server.stop()


# -- hardening, compression, the operations a filtered client is sent, subsets over HTTP ---------------------

def test_only_the_bearer_scheme_carries_a_token(athlete_with_entries: User, shapes: ServerProcess) -> None:
    params = {"table": "entries", "offset": "-1"}
    token = athlete_with_entries.token
    for scheme in ("Basic", "Token", "Digest"):
        with httpx.Client(base_url=shapes.url, headers={"Authorization": f"{scheme} {token}"}) as http:
            assert http.get(SHAPE, params=params).status_code == 401, scheme
    with httpx.Client(base_url=shapes.url, headers={"Authorization": f"bearer {token}"}) as http:
        assert http.get(SHAPE, params=params).status_code == 200  # the scheme is case-insensitive (RFC 7235)


def test_a_column_asked_twice_is_400(athlete_with_entries: User, shape_client: Callable[[User | None], Api]) -> None:
    response = get_shape(shape_client(athlete_with_entries), offset="-1", columns="user_id,date,user_id")
    assert_bad_request(response, "columns")
    assert "user_id" in response.json()["errors"]["columns"][0]


def test_responses_are_gzipped_when_the_client_accepts_it_and_say_the_same(
    athlete_with_entries: User, shapes: ServerProcess
) -> None:
    auth = {"Authorization": f"Bearer {athlete_with_entries.token}"}
    params = {"table": "entries", "offset": "-1"}
    with httpx.Client(base_url=shapes.url) as http:
        plain = http.get(SHAPE, params=params, headers={**auth, "Accept-Encoding": "identity"})
        gzipped = http.get(SHAPE, params=params, headers={**auth, "Accept-Encoding": "gzip"})
        refused = http.get(SHAPE, params=params, headers={**auth, "Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in plain.headers and "content-encoding" not in refused.headers
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.json() == plain.json()  # httpx undoes the gzip
    assert len(gzipped.content) == len(plain.content)
    assert int(gzipped.headers["content-length"]) < len(plain.content) / 2
    assert gzipped.headers["etag"] != plain.headers["etag"]  # another representation
    assert "Accept-Encoding" in gzipped.headers["vary"]


def test_a_streamed_snapshot_is_gzipped_part_by_part(
    new_user: Callable[..., User], shapes: ServerProcess, pg: psycopg.Connection[Any]
) -> None:
    """A filtered snapshot of 6,000 rows streams in three parts; gzipped, each part is flushed, so the
    first bytes decompress to the first rows before the read ends."""
    user = new_user()
    before = head_offset(pg)
    pg.execute("INSERT INTO entries (user_id, date, steps) SELECT %s, '2000-01-01'::date + i, i"
               " FROM generate_series(0, 5999) i", (user.id,))
    assert logged_within(pg, user.id, "2016-06-04", 5999, 60.0)
    headers = {"Authorization": f"Bearer {user.token}", "Accept-Encoding": "gzip"}
    params = {"table": "entries", "where": "steps >= 0"}
    with httpx.Client(base_url=shapes.url, headers=headers) as http:
        with http.stream("GET", SHAPE, params={**params, "offset": "-1"}) as response:
            assert response.headers["content-encoding"] == "gzip" and "content-length" not in response.headers
            chunks = list(response.iter_raw())
        # The same 6,000 rows as one catch-up (megabytes, compressed off the event loop).
        catch_up = http.get(SHAPE, params={**params, "offset": before, "handle": response.headers["electric-handle"]})
    first = zlib.decompressobj(31).decompress(chunks[0])
    assert first.startswith(b'[{"key":') and first.endswith(b",")  # whole messages: a flushed part
    body = json.loads(zlib.decompress(b"".join(chunks), 31))
    assert len(change_messages(body)) == 6000 and control_messages(body) == ["snapshot-end"]
    assert catch_up.headers["content-encoding"] == "gzip"
    assert [m["value"]["steps"] for m in change_messages(catch_up.json())] == [str(i) for i in range(6000)]


def test_a_filtered_client_is_sent_inserts_on_move_in_deletes_on_move_out_and_nothing_outside(
    varied_athlete: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    api = shape_client(varied_athlete)
    busy = Follower(api, {"where": "steps > 5000"}).follow()
    uid = varied_athlete.id
    start = busy.offset
    for day, steps in (("2025-06-01", 7000), ("2025-06-01", 7100), ("2025-12-31", 100), ("2025-12-31", 200),
                       ("2026-02-14", 9999)):
        pg.execute("UPDATE entries SET steps = %s WHERE user_id = %s AND date = %s", (steps, uid, day))
    busy.wait_for(lambda ms: any(m["value"].get("steps") == "9999" for m in ms))
    response = get_shape(api, {"where": "steps > 5000"}, offset=start, handle=busy.handle)
    sent = [(m["headers"]["operation"], m["value"]["date"]) for m in change_messages(response.json())]
    assert sent == [("insert", "2025-06-01"), ("update", "2025-06-01"), ("delete", "2025-12-31"),
                    ("update", "2026-02-14")]


def test_a_subset_snapshot_over_get_and_post_is_metadata_and_data_and_a_bad_subset_is_400(
    athlete_with_entries: User, shape_client: Callable[[User | None], Api], pg: psycopg.Connection[Any]
) -> None:
    api = shape_client(athlete_with_entries)
    subset = {"where": "steps IS NOT NULL", "order_by": "date DESC", "limit": 2}
    got = get_shape(api, offset="-1", **{f"subset__{k}": str(v) for k, v in subset.items()})
    posted = api.post(SHAPE, params={"table": "entries", "offset": "-1"}, json=subset)
    expected = pg.execute("SELECT date::text FROM entries WHERE user_id = %s AND steps IS NOT NULL"
                          " ORDER BY date DESC LIMIT 2", (athlete_with_entries.id,)).fetchall()
    for response in (got, posted):
        assert response.status_code == 200, response.text
        assert response.headers["electric-snapshot"] == "true" and response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"metadata", "data"}
        assert [m["value"]["date"] for m in body["data"]] == [d for (d,) in expected]
        assert all(m["headers"]["snapshot_mark"] == body["metadata"]["snapshot_mark"] for m in body["data"])
    assert_bad_request(api.post(SHAPE, params={"table": "entries", "offset": "-1"}, content=b"[1]"), "body")
    assert_bad_request(get_shape(api, offset="-1", subset__limit="2"), "subset__limit")  # no order: which two?
    assert_bad_request(get_shape(api, offset="-1", subset__order_by="password_hash"), "subset__order_by")
    assert_bad_request(get_shape(api, offset="-1", subset__where="user_id = 1"), "subset__where")
