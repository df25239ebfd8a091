"""The shape client (sync.shape_client) against a real `pulse-server` with the replication reader on.

Every change here reaches the client the way it would in production: Postgres WAL -> replication
reader -> shape log -> shape watcher -> `GET /v1/shape`. Writes come from the REST API, the push
endpoint and plain SQL on the `pg` connection.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql
from server_support import Api, ServerProcess, User, now_ms, set_mutation, stamp
from tcp_proxy import TcpProxy
from throwaway_db import PG_HOST, PG_PORT, PG_USER

from sync import stamps_column
from sync.shape_client import (
    RetryPolicy,
    ShapeAuthError,
    ShapeBatch,
    ShapeCursor,
    ShapeRequestError,
    ShapeStream,
    apply_batch,
)

Rows = dict[str, dict[str, Any]]
LIVE_LATENCY_S = 1.0


@pytest.fixture(scope="module")
def shape_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(replication_reader="true", shape_watcher="true")


@pytest.fixture(scope="module")
def marker(make_user: Callable[..., User], shape_server: ServerProcess) -> User:
    """A user whose writes mark how far the replication reader (of `shape_server`) has got (see `settle`)."""
    return make_user(prefix="marker")


@pytest.fixture
def stream_for(shape_server: ServerProcess) -> Iterator[Callable[..., ShapeStream]]:
    opened: list[ShapeStream] = []

    def open_stream(user: User, **options: Any) -> ShapeStream:
        stream = ShapeStream(shape_server.url, user.token, **options)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


@pytest.fixture
def api_for(shape_server: ServerProcess, client: Callable[..., Api]) -> Callable[[User], Api]:
    return lambda user: client(user, url=shape_server.url)


# -- helpers ---------------------------------------------------------------------------------------


def settle(pg: psycopg.Connection[Any], marker: User, timeout_s: float = 10.0) -> None:
    """Wait until the shape log holds every change committed before now.

    The reader logs whole transactions in commit order, so once a transaction committed after
    everything else is in the log, so is everything else."""
    with pg.transaction():
        pg.execute(
            "INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-01-01', 1)"
            " ON CONFLICT (user_id, date) DO UPDATE SET steps = entries.steps + 1", (marker.id,))
        row = pg.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout_s
    while pg.execute("SELECT 1 FROM shape_log WHERE txid = %s", (row[0],)).fetchone() is None:
        assert time.monotonic() < deadline, "the replication reader did not log a change within 10 s"
        time.sleep(0.02)


def synced(stream: ShapeStream, rows: Rows | None = None) -> tuple[Rows, list[ShapeBatch]]:
    """Follow the stream until up to date, applying each batch."""
    rows = {} if rows is None else rows
    batches = []
    for batch in stream.follow():
        apply_batch(rows, batch)
        batches.append(batch)
    return rows, batches


def as_text(value: Any) -> str | None:
    """A client's typed value back in the form Postgres gives for `column::text`."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)  # int, Decimal (keeps its scale: "7.50"), str


def postgres_rows(pg: psycopg.Connection[Any], user_ids: list[int], columns: list[str]) -> dict[tuple[str, str], Any]:
    """The users' entries as Postgres renders them (`::text`), keyed by (user_id, date)."""
    query = sql.SQL("SELECT {} FROM entries WHERE user_id = ANY(%s)").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns))
    rows = pg.execute(query, (user_ids,)).fetchall()
    return {(r[columns.index("user_id")], r[columns.index("date")]): dict(zip(columns, r, strict=True)) for r in rows}


def client_rows(rows: Rows, columns: list[str]) -> dict[tuple[str | None, str | None], Any]:
    """The client's rows, `stamps` unfolded into the twelve columns it holds, as text."""
    unfolded = [stamps_column.expand(row) for row in rows.values()]
    texts = [{c: as_text(row.get(c)) for c in columns} for row in unfolded]
    return {(t["user_id"], t["date"]): t for t in texts}


def table_columns(stream: ShapeStream) -> list[str]:
    """The table's columns, from the schema the server sent (`username` is the shape's own addition;
    `stamps` stands for the twelve stamp and source columns)."""
    assert stream.cursor.schema is not None
    return [x for c in stream.cursor.schema if c != "username"
            for x in (stamps_column.COLUMNS if c == "stamps" else (c,))]


def assert_same_as_postgres(pg: psycopg.Connection[Any], stream: ShapeStream, rows: Rows, user_ids: list[int]) -> None:
    columns = table_columns(stream)
    assert client_rows(rows, columns) == postgres_rows(pg, user_ids, columns)


def live_poll_during(stream: ShapeStream, write: Callable[[], None], delay_s: float = 0.3) -> tuple[ShapeBatch, float]:
    """A live poll held while another thread writes after `delay_s`: the batch and its latency after the write."""
    written_at: list[float] = []
    failures: list[BaseException] = []

    def writer() -> None:
        time.sleep(delay_s)
        try:
            write()
        except BaseException as exc:  # surfaced in the test's thread below
            failures.append(exc)
        written_at.append(time.monotonic())

    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    batch = stream.poll(live=True)
    returned = time.monotonic()
    thread.join(timeout=30)
    assert not failures, failures
    assert returned - started >= delay_s * 0.8, "the live request answered before the write: it was not held"
    return batch, returned - written_at[0]


def key_of(user: User, day: str) -> str:
    return f'"public"."entries"/"{user.id}"/"{day}"'


# -- snapshot ----------------------------------------------------------------------------------------


def test_the_first_sync_is_a_snapshot_of_exactly_the_users_rows_in_postgres_with_typed_values(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    user = make_user()
    api = api_for(user)
    assert api.put("/v1/entries/2026-11-20", json={"sleep_hours": 7.5, "steps": 8000, "note": "long run"}).is_success
    hrv = {"hrv_ms": 48.25, "hrv_method": "rmssd", "weight_kg": 71.4}
    assert api.put("/v1/entries/2026-11-21", json=hrv).is_success
    assert api.put("/v1/entries/2026-11-22", json={"steps": 100}).is_success
    assert api.delete("/v1/entries/2026-11-22").status_code == 204  # a tombstone: still a row
    pg.execute("INSERT INTO entries (user_id, date, note) VALUES (%s, '2026-11-23', 'by hand, it''s fine')",
               (user.id,))
    settle(pg, marker)

    stream = stream_for(user)
    first = stream.poll()
    assert first.snapshot_end and not first.up_to_date and not first.must_refetch
    assert {c.operation for c in first.changes} == {"insert"}
    rows, _ = synced(stream, apply_batch({}, first))

    assert_same_as_postgres(pg, stream, rows, [user.id])
    assert len(rows) == 4
    day = rows[key_of(user, "2026-11-20")]
    assert day["user_id"] == user.id and day["date"] == dt.date(2026, 11, 20) and day["username"] == user.username
    assert day["sleep_hours"] == Decimal("7.50") and day["steps"] == 8000 and day["note"] == "long run"
    assert day["weight_kg"] is None and day["deleted"] is False and isinstance(day["score"], int)
    assert rows[key_of(user, "2026-11-21")]["hrv_ms"] == Decimal("48.25")
    assert rows[key_of(user, "2026-11-22")]["deleted"] is True
    assert stream.cursor.schema is not None and stream.cursor.schema["user_id"]["type"] == "int8"


def test_a_bad_token_is_an_auth_error_and_not_retried(
    stream_for: Callable[..., ShapeStream], make_user: Callable[..., User]
) -> None:
    user = make_user()
    waits: list[float] = []
    stream = stream_for(User(user.id, user.username, user.password, "not-a-token"), sleep=waits.append)
    with pytest.raises(ShapeAuthError) as caught:
        stream.poll()
    assert caught.value.status == 401 and waits == [], "a refused token is never waited on and asked again"


# -- live changes -------------------------------------------------------------------------------------


def test_changes_from_put_push_and_hand_written_sql_arrive_through_a_live_poll_within_a_second(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    user = make_user()
    api = api_for(user)
    assert api.put("/v1/entries/2026-11-10", json={"steps": 1000}).is_success
    settle(pg, marker)
    stream = stream_for(user)
    rows, _ = synced(stream)
    hlc = stamp(now_ms(), 0, "phone")

    def put() -> None:
        api.put("/v1/entries/2026-11-10", json={"steps": 2500}).raise_for_status()

    def push() -> None:
        api.pushed("phone", [set_mutation(1, "2026-11-11", {"sleep_hours": 6.75}, hlc)])

    def by_hand() -> None:
        pg.execute("UPDATE entries SET steps = 4321, note = 'psql' WHERE user_id = %s AND date = '2026-11-10'",
                   (user.id,))

    writes: list[tuple[str, Callable[[], None], str, dict[str, Any]]] = [
        ("PUT", put, "2026-11-10", {"steps": 2500}),
        ("push", push, "2026-11-11", {"sleep_hours": Decimal("6.75")}),
        ("SQL", by_hand, "2026-11-10", {"steps": 4321, "note": "psql"}),
    ]
    for writer, write, day, expected in writes:
        batch, latency = live_poll_during(stream, write)
        assert latency < LIVE_LATENCY_S, f"{writer}: the change arrived {latency:.3f} s after the write"
        assert batch.up_to_date
        # One transaction (a push inserts the day, then sets its fields): one lsn, `last` on its final change.
        assert {c.key for c in batch.changes} == {key_of(user, day)}, writer
        assert len({c.headers["lsn"] for c in batch.changes}) == 1
        assert [c.headers["last"] for c in batch.changes][-1] is True
        transaction: Rows = {}
        row = apply_batch(transaction, batch)[key_of(user, day)]
        assert {k: row[k] for k in expected} == expected, writer
        apply_batch(rows, batch)
    assert_same_as_postgres(pg, stream, rows, [user.id])


def test_a_live_poll_is_not_woken_by_another_users_change_and_never_carries_other_users_rows(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    me, other = make_user(), make_user()
    assert api_for(other).put("/v1/entries/2026-11-12", json={"steps": 999}).is_success
    assert api_for(me).put("/v1/entries/2026-11-12", json={"steps": 111}).is_success
    settle(pg, marker)
    stream = stream_for(me)
    rows, _ = synced(stream)
    assert {r["user_id"] for r in rows.values()} == {me.id}

    def others_then_mine() -> None:
        pg.execute("UPDATE entries SET steps = 1000 WHERE user_id = %s", (other.id,))
        time.sleep(0.5)
        pg.execute("UPDATE entries SET steps = 222 WHERE user_id = %s", (me.id,))

    batch, _ = live_poll_during(stream, others_then_mine, delay_s=0.2)
    assert [(c.value["user_id"], c.value["steps"]) for c in batch.changes] == [(me.id, 222)]


# -- resuming -----------------------------------------------------------------------------------------


def test_a_saved_cursor_resumes_in_a_new_client_without_a_snapshot_and_without_missing_or_repeating_changes(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    user = make_user()
    api = api_for(user)
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        assert api.put(f"/v1/entries/{day}", json={"steps": 1000}).is_success
    settle(pg, marker)
    first = stream_for(user)
    rows, _ = synced(first)
    assert api.put("/v1/entries/2026-11-01", json={"steps": 1111}).is_success  # seen by the first client
    settle(pg, marker)
    synced(first, rows)
    saved = json.dumps(first.cursor.to_dict())
    first.close()

    # While no client runs: an update, an insert, a tombstone and a hard delete by hand.
    assert api.put("/v1/entries/2026-11-02", json={"sleep_hours": 8}).is_success
    assert api.put("/v1/entries/2026-11-04", json={"steps": 4000}).is_success
    assert api.delete("/v1/entries/2026-11-04").status_code == 204
    pg.execute("DELETE FROM entries WHERE user_id = %s AND date = '2026-11-03'", (user.id,))
    settle(pg, marker)

    second = stream_for(user, cursor=ShapeCursor.from_dict(json.loads(saved)))
    rows, batches = synced(second, rows)
    changes = [c for b in batches for c in b.changes]
    assert not any(b.snapshot_end or b.must_refetch for b in batches)
    saved_lsn = int(json.loads(saved)["offset"].split("_")[0])
    assert all(int(c.headers["lsn"]) > saved_lsn for c in changes)  # nothing the first client had seen
    positions = [(int(c.headers["lsn"]), c.headers["op_position"]) for c in changes]
    assert positions == sorted(set(positions))  # in log order, none twice
    transactions: dict[str, list[tuple[str, str]]] = {}
    for c in changes:
        transactions.setdefault(c.headers["lsn"], []).append((c.key, c.operation))
    assert list(transactions.values()) == [
        [(key_of(user, "2026-11-02"), "update")],
        [(key_of(user, "2026-11-04"), "insert")],  # PUT of a new day: one change
        [(key_of(user, "2026-11-04"), "update")],  # the tombstone
        [(key_of(user, "2026-11-03"), "delete")],
    ]
    assert_same_as_postgres(pg, second, rows, [user.id])

    third = stream_for(user, cursor=ShapeCursor.from_dict(json.loads(json.dumps(second.cursor.to_dict()))))
    again = list(third.follow())
    assert [c for b in again for c in b.changes] == [] and again[-1].up_to_date


def test_a_wrong_or_stale_handle_is_answered_with_must_refetch_and_the_refetch_is_the_full_shape(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    user = make_user()
    assert api_for(user).put("/v1/entries/2026-11-05", json={"steps": 5555}).is_success
    settle(pg, marker)
    good = stream_for(user)
    rows, _ = synced(good)
    narrow = stream_for(user, where="steps > 10000")
    synced(narrow)

    for wrong in ("no-such-handle-1", narrow.cursor.handle):  # made up; another shape's (stale for this one)
        stale = stream_for(user, cursor=ShapeCursor(wrong, good.cursor.offset, None, good.cursor.schema))
        batch = stale.poll()
        assert batch.must_refetch and batch.changes == []
        assert batch.cursor.offset == "-1" and batch.cursor.handle == good.cursor.handle
        copy = {"left over": {"x": 1}}
        apply_batch(copy, batch)
        assert copy == {}
        refetched, batches = synced(stale, copy)
        assert batches[0].snapshot_end and refetched == rows


# -- coaches --------------------------------------------------------------------------------------------


def test_a_coachs_stream_holds_only_granting_athletes_and_each_grant_or_revoke_refetches_the_new_scope(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    coach = make_user(coach=True)
    ann, ben, cat = make_user(), make_user(), make_user()
    for n, athlete in enumerate((ann, ben, cat)):
        api = api_for(athlete)
        assert api.put("/v1/entries/2026-11-15", json={"steps": 1000 + n}).is_success
        assert api.put("/v1/entries/2026-11-16", json={"sleep_hours": 7 + n}).is_success
    for athlete in (ann, ben):
        assert api_for(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    settle(pg, marker)
    names = {a.id: a.username for a in (ann, ben, cat)}

    stream = stream_for(coach)
    rows, _ = synced(stream)
    assert {r["user_id"] for r in rows.values()} == {ann.id, ben.id}
    assert all(r["username"] == names[r["user_id"]] for r in rows.values())
    assert_same_as_postgres(pg, stream, rows, [ann.id, ben.id])

    def grant_by_cat() -> httpx.Response:
        return api_for(cat).post("/v1/grants", json={"coach": coach.username})

    def revoke_by_ann() -> httpx.Response:
        return api_for(ann).delete(f"/v1/grants/{coach.username}")

    for change, scope in ((grant_by_cat, {ann.id, ben.id, cat.id}), (revoke_by_ann, {ben.id, cat.id})):
        assert change().is_success
        batch = stream.poll()
        assert batch.must_refetch
        apply_batch(rows, batch)
        synced(stream, rows)
        assert {r["user_id"] for r in rows.values()} == scope
        assert all(r["username"] == names[r["user_id"]] for r in rows.values())
        assert_same_as_postgres(pg, stream, rows, sorted(scope))

    # Changes of a revoked athlete no longer reach the coach; a granting one's do.
    pg.execute("UPDATE entries SET steps = 7 WHERE user_id = ANY(%s)", ([ann.id, ben.id],))
    settle(pg, marker)
    batches = list(stream.follow())
    assert {c.value["user_id"] for b in batches for c in b.changes} == {ben.id}


def test_a_live_request_held_across_a_revoke_does_not_deliver_the_revoked_athletes_changes(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    coach = make_user(coach=True)
    ann, ben = make_user(), make_user()
    for athlete in (ann, ben):
        assert api_for(athlete).put("/v1/entries/2026-11-15", json={"steps": 1000}).is_success
        assert api_for(athlete).post("/v1/grants", json={"coach": coach.username}).status_code == 201
    settle(pg, marker)
    stream = stream_for(coach)
    synced(stream)

    def revoke_then_write() -> None:
        assert api_for(ann).delete(f"/v1/grants/{coach.username}").status_code == 204
        pg.execute("UPDATE entries SET note = 'after the revoke' WHERE user_id = %s", (ann.id,))
        time.sleep(0.3)
        pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s", (ben.id,))  # ends the hold either way

    batch, _ = live_poll_during(stream, revoke_then_write, delay_s=0.2)
    assert batch.must_refetch or ann.id not in {c.value["user_id"] for c in batch.changes}


# -- where ------------------------------------------------------------------------------------------------


def test_a_where_clause_narrows_the_shape_and_rows_move_in_and_out_of_it(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    user = make_user()
    api = api_for(user)
    for day, steps in (("2026-11-06", 3000), ("2026-11-07", 8000), ("2026-11-08", 12000)):
        assert api.put(f"/v1/entries/{day}", json={"steps": steps}).is_success
    assert api.put("/v1/entries/2026-11-09", json={"note": "no steps"}).is_success
    settle(pg, marker)

    stream = stream_for(user, where="steps > $1", params=["5000"])
    rows, _ = synced(stream)
    assert sorted(r["steps"] for r in rows.values()) == [8000, 12000]

    pg.execute("UPDATE entries SET steps = 9000 WHERE user_id = %s AND date = '2026-11-06'", (user.id,))  # in
    pg.execute("UPDATE entries SET steps = 100 WHERE user_id = %s AND date = '2026-11-08'", (user.id,))  # out
    settle(pg, marker)
    synced(stream, rows)
    wanted = {k: v for k, v in postgres_rows(pg, [user.id], table_columns(stream)).items()
              if v["steps"] is not None and int(v["steps"]) > 5000}
    assert client_rows(rows, table_columns(stream)) == wanted
    assert sorted(r["steps"] for r in rows.values()) == [8000, 9000]


@pytest.mark.parametrize("where", ["password_hash = 'x'", "user_id = 1", "steps > 1; DROP TABLE entries"])
def test_a_where_clause_on_a_column_outside_the_allow_list_is_a_request_error(
    make_user: Callable[..., User], stream_for: Callable[..., ShapeStream], where: str
) -> None:
    with pytest.raises(ShapeRequestError) as caught:
        stream_for(make_user(), where=where).poll()
    assert caught.value.status == 400 and list(caught.value.errors) == ["where"]


def test_a_where_clause_may_name_a_column_that_the_columns_projection_leaves_out(
    make_user: Callable[..., User], api_for: Callable[[User], Api], stream_for: Callable[..., ShapeStream],
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    user = make_user()
    api = api_for(user)
    assert api.put("/v1/entries/2026-11-06", json={"steps": 3000, "sleep_hours": 6}).is_success
    assert api.put("/v1/entries/2026-11-07", json={"steps": 8000, "sleep_hours": 8}).is_success
    settle(pg, marker)
    stream = stream_for(user, where="steps > 5000", columns=["user_id", "date", "sleep_hours"])
    rows, _ = synced(stream)
    assert list(rows.values()) == [{"user_id": user.id, "date": dt.date(2026, 11, 7), "sleep_hours": Decimal("8.00")}]


# -- values the reader must carry over --------------------------------------------------------------------


def test_a_long_note_written_by_hand_survives_an_update_of_another_column_in_the_next_snapshot(
    make_user: Callable[..., User], stream_for: Callable[..., ShapeStream], pg: psycopg.Connection[Any],
    marker: User,
) -> None:
    user = make_user()
    note = secrets.token_hex(4000)  # 8000 characters that do not compress: stored out of line (TOAST)
    pg.execute("INSERT INTO entries (user_id, date, note, steps) VALUES (%s, '2026-11-14', %s, 1)", (user.id, note))
    pg.execute("UPDATE entries SET steps = 2 WHERE user_id = %s", (user.id,))
    settle(pg, marker)
    rows, _ = synced(stream_for(user))
    assert rows[key_of(user, "2026-11-14")]["note"] == note


# -- an unreachable database ---------------------------------------------------------------------------------


class RecordingTransport(httpx.HTTPTransport):
    """Real HTTP, remembering each answer's status and Retry-After."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[int, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.answers.append((response.status_code, response.headers.get("retry-after")))
        return response


def test_while_postgres_is_unreachable_the_client_waits_out_retry_after_and_resumes_when_it_is_back(
    start_server: Callable[..., ServerProcess], make_user: Callable[..., User], database_url: str,
    pg: psycopg.Connection[Any], marker: User,
) -> None:
    proxy = TcpProxy((PG_HOST, PG_PORT))
    via_proxy = urlunsplit(urlsplit(database_url)._replace(netloc=f"{PG_USER}@127.0.0.1:{proxy.port}"))
    try:
        server = start_server(database_url=via_proxy, breaker_reset_s="1", breaker_failures="2")
        user = make_user()
        pg.execute("INSERT INTO entries (user_id, date, steps) VALUES (%s, '2026-11-18', 1800)", (user.id,))
        settle(pg, marker)
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:  # waits a little for real; the database is back after two waits
            sleeps.append(seconds)
            if len(sleeps) == 2:
                proxy.up()
            time.sleep(0.25)

        transport = RecordingTransport()
        with ShapeStream(server.url, user.token, transport=transport, sleep=sleep,
                         retry=RetryPolicy(attempts=30, initial_s=0.05, jitter_s=0.05)) as stream:
            proxy.down()
            rows, _ = synced(stream)
        assert [r["steps"] for r in rows.values()] == [1800]
        refused = [(status, after) for status, after in transport.answers if status != 200]
        assert len(refused) >= 2 and {status for status, _ in refused} == {503}
        assert all(after is not None for _, after in refused), "a 503 without Retry-After"
        assert len(sleeps) == len(refused)
        assert all(slept >= float(after or 0) for slept, (_, after) in zip(sleeps, refused, strict=True))
    finally:
        proxy.close()
