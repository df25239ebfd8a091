"""The rest of Electric's protocol, with Electric's own client (`@electric-sql/client` 1.5.x under Node):
rows moving into and out of a filtered shape, `log=changes_only`, subset snapshots (`requestSnapshot`,
`fetchSnapshot` over GET and POST), `replica=full`'s `old_value`, and the txid a REST write returns.

The harness and fixtures are test_electric_client.py's (`shape_stream.mjs` under Node, a real server with
the replication reader on); every expectation is read from Postgres.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from server_support import Api, ServerProcess, User
from test_electric_client import (  # noqa: F401 (fixtures)
    DAYS,
    NodeStream,
    _changes,
    _put,
    _wait_until_served,
    follow,
    node,
    shape_server,
)

Event = dict[str, Any]


def _key(user: User, day: str) -> str:
    return f'"public"."entries"/"{user.id}"/"{day}"'


def _ops(stream: NodeStream, since: int) -> list[tuple[str, str]]:
    """(operation, date) of every change message the client delivered after `since`."""
    return [(m["headers"]["operation"], m["key"].rsplit("/", 1)[1].strip('"'))
            for e in stream.of("messages", since) for m in _changes(e)]


def _message_at(stream: NodeStream, since: int, day: str, steps: int) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "messages" and any(
        m["key"].endswith(f'"{day}"') and m["value"].get("steps") == steps for m in _changes(e))


def _snapshot_answer(stream: NodeStream, ident: int, since: int) -> Event:
    event = stream.wait_for(f"snapshot {ident}", lambda e: e["event"] == "snapshot" and e["id"] == ident, since)
    assert "error" not in event, (event.get("error"), stream.transcript(4))
    return event


@pytest.fixture
def athlete_with_days(shape_server: ServerProcess, make_user: Callable[..., User],  # noqa: F811
                      pg: psycopg.Connection[Any]) -> Iterator[User]:
    """An athlete with four days: steps 3000, 8000, 6000, 1000."""
    athlete = make_user()
    for day, steps in zip(DAYS, (3000, 8000, 6000, 1000), strict=True):
        _put(shape_server, athlete, day, {"steps": steps})
    _wait_until_served(shape_server, pg, athlete)
    yield athlete


@pytest.mark.parametrize("log", ["full", "changes_only"])
def test_rows_move_into_and_out_of_a_filtered_shape_as_inserts_and_deletes(
    log: str, athlete_with_days: User, pg: psycopg.Connection[Any], follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    athlete = athlete_with_days
    stream = follow(athlete, f"filter-{log}", "--where", "steps > 5000", "--log", log)
    in_filter = [{"date": DAYS[1], "steps": 8000}, {"date": DAYS[2], "steps": 6000}]
    if log == "full":
        stream.wait_for("the filtered snapshot", lambda e: e["event"] == "rows"
                        and [{"date": r["date"], "steps": r["steps"]} for r in e["rows"]] == in_filter)
    else:
        stream.wait_for("up to date", lambda e: e["event"] == "messages" and e["up_to_date"])
    mark = stream.mark()

    def update(day: str, steps: int) -> None:
        pg.execute("UPDATE entries SET steps = %s WHERE user_id = %s AND date = %s", (steps, athlete.id, day))

    update(DAYS[0], 7000)  # moves in
    update(DAYS[0], 7500)  # changes inside
    update(DAYS[1], 100)  # moves out
    update(DAYS[3], 2000)  # changes outside: nothing
    update(DAYS[1], 200)  # changes outside (after moving out): nothing
    update(DAYS[2], 6500)  # changes inside: the last one, so every earlier one has been served
    stream.wait_for("the last change", _message_at(stream, mark, DAYS[2], 6500), mark)
    assert _ops(stream, mark) == [("insert", DAYS[0]), ("update", DAYS[0]), ("delete", DAYS[1]),
                                  ("update", DAYS[2])]
    # full: every row in the filter, as Postgres has it; changes_only: the Shape keeps only the rows it
    # saw inserted (the moved-in one).
    expected = [(DAYS[0], 7500), (DAYS[2], 6500)] if log == "full" else [(DAYS[0], 7500)]
    stream.wait_for("the rows", lambda e: e["event"] == "rows"
                    and sorted((r["date"], r["steps"]) for r in e["rows"]) == expected, mark)


def test_changes_only_sends_no_snapshot_and_has_its_own_handle(
    shape_server: ServerProcess, athlete_with_days: User, pg: psycopg.Connection[Any],  # noqa: F811
    follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    athlete = athlete_with_days
    full = follow(athlete, "full")
    full.wait_for("the full snapshot", lambda e: e["event"] == "rows" and len(e["rows"]) == 4)
    stream = follow(athlete, "changes-only", "--log", "changes_only")
    first = stream.wait_for("up to date", lambda e: e["event"] == "messages" and e["up_to_date"])
    assert _changes(first) == []  # no snapshot
    requests = stream.of("http")
    assert requests[0]["params"]["log"] == "changes_only" and requests[0]["params"]["offset"] == "-1"
    assert requests[0]["headers"]["electric-handle"] != full.of("http")[0]["headers"]["electric-handle"]
    mark = stream.mark()
    _put(shape_server, athlete, "2026-11-24", {"steps": 4444})  # a new day: an insert
    rows = stream.wait_for("the new day", lambda e: e["event"] == "rows" and len(e["rows"]) == 1, mark)
    assert [(r["date"], r["steps"]) for r in rows["rows"]] == [("2026-11-24", 4444)]

    with Api(shape_server.url, athlete.token) as api:
        bad = api.get("/v1/shape", params={"table": "entries", "offset": "-1", "log": "everything"})
    assert bad.status_code == 400 and list(bad.json()["errors"]) == ["log"], bad.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_request_snapshot_brings_a_subset_into_a_changes_only_stream_and_later_changes_follow(
    method: str, athlete_with_days: User, pg: psycopg.Connection[Any],
    follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    athlete = athlete_with_days
    stream = follow(athlete, f"subset-{method}", "--log", "changes_only", "--subset-method", method)
    stream.wait_for("up to date", lambda e: e["event"] == "messages" and e["up_to_date"])
    mark = stream.mark()
    stream.send({"cmd": "requestSnapshot", "id": 1, "params": {
        "where": "steps > $1", "params": {"1": "2000"}, "orderBy": "steps DESC", "limit": 2}})
    answer = _snapshot_answer(stream, 1, mark)
    # The two days with most steps over 2000, as Postgres orders them.
    expected = pg.execute("SELECT date::text, steps FROM entries WHERE user_id = %s AND steps > 2000"
                          " ORDER BY steps DESC LIMIT 2", (athlete.id,)).fetchall()
    assert sorted((r["date"], r["steps"]) for r in answer["rows"]) == sorted(expected)
    sent = [e for e in stream.of("http", mark) if e["params"].get("log") == "changes_only"
            and ("subset__where" in e["params"] or e.get("status") == 200)]
    assert sent, stream.transcript()
    # A later change of a row of the subset reaches the Shape; a change of a row outside it does not.
    mark = stream.mark()
    pg.execute("UPDATE entries SET steps = 9999 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[1]))
    pg.execute("UPDATE entries SET steps = 1111 WHERE user_id = %s AND date = %s", (athlete.id, DAYS[3]))
    rows = stream.wait_for("the subset's row updated", lambda e: e["event"] == "rows"
                           and any(r["steps"] == 9999 for r in e["rows"]), mark)
    assert sorted(r["date"] for r in rows["rows"]) == sorted(d for d, _ in expected)


def test_fetch_snapshot_over_get_and_post_answers_metadata_and_data_within_the_scope_and_the_where(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],  # noqa: F811
    follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    first, second, outsider, coach = make_user(), make_user(), make_user(), make_user(coach=True)
    for user, steps in ((first, 7000), (second, 9000), (outsider, 8000)):
        _put(shape_server, user, DAYS[0], {"steps": steps})
        _put(shape_server, user, DAYS[1], {"steps": steps // 10})
    _wait_until_served(shape_server, pg, first, second, outsider)
    for athlete in (first, second):
        with Api(shape_server.url, athlete.token) as api:
            assert api.post("/v1/grants", json={"coach": coach.username}).status_code == 201
    stream = follow(coach, "coach-fetch", "--where", "steps > 100")
    stream.wait_for("the coach's snapshot", lambda e: e["event"] == "rows" and len(e["rows"]) == 4)
    mark = stream.mark()
    params = {"where": "username = $1 OR steps >= $2", "params": {"1": second.username, "2": "700"},
              "orderBy": "steps ASC"}
    stream.send({"cmd": "fetchSnapshot", "id": 1, "params": params, "method": "GET"})
    stream.send({"cmd": "fetchSnapshot", "id": 2, "params": params, "method": "POST"})
    got = _snapshot_answer(stream, 1, mark), _snapshot_answer(stream, 2, mark)
    # The shape's where (steps > 100) and the subset's, within the coach's scope (never the outsider).
    expected = [(u.username, d, s) for u, d, s in (
        (first, DAYS[0], 7000), (first, DAYS[1], 700), (second, DAYS[1], 900), (second, DAYS[0], 9000))]
    expected.sort(key=lambda r: r[2])
    for answer in got:
        assert [(r["value"]["username"], r["value"]["date"], r["value"]["steps"]) for r in answer["data"]] == expected
        metadata = answer["metadata"]
        assert {"snapshot_mark", "xmin", "xmax", "xip_list", "database_lsn"} <= set(metadata), metadata
        assert int(metadata["xmin"]) <= int(metadata["xmax"]) and int(metadata["database_lsn"]) > 0
        assert {m["headers"]["snapshot_mark"] for m in answer["data"]} == {metadata["snapshot_mark"]}
    posts = [e for e in stream.of("http", mark) if "subset__where" not in e["params"]]
    assert posts and all(e["status"] == 200 for e in posts)
    # A subset where outside the grammar is the client's error (a 400 naming it), not data.
    stream.send({"cmd": "fetchSnapshot", "id": 3, "params": {"where": "user_id = 1"}, "method": "GET"})
    refused = stream.wait_for("the refused subset", lambda e: e["event"] == "snapshot" and e["id"] == 3, mark)
    assert refused["error"]["status"] == 400, refused


def test_replica_full_sends_the_previous_values_of_the_changed_columns(
    athlete_with_days: User, pg: psycopg.Connection[Any], follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    athlete = athlete_with_days
    stream = follow(athlete, "replica-full", "--replica", "full", "--columns", "user_id,date,steps,note")
    stream.wait_for("the snapshot", lambda e: e["event"] == "rows" and len(e["rows"]) == 4)
    mark = stream.mark()
    pg.execute("UPDATE entries SET steps = 8001, note = 'sore' WHERE user_id = %s AND date = %s",
               (athlete.id, DAYS[1]))
    pg.execute("UPDATE entries SET note = 'better' WHERE user_id = %s AND date = %s", (athlete.id, DAYS[1]))
    stream.wait_for("the second update", lambda e: e["event"] == "messages" and any(
        m["value"].get("note") == "better" for m in _changes(e)), mark)
    updates = [m for e in stream.of("messages", mark) for m in _changes(e)]
    assert [m.get("old_value") for m in updates] == [{"steps": 8000, "note": None}, {"note": "sore"}]
    assert updates[1]["value"] == {"user_id": str(athlete.id), "date": DAYS[1], "steps": 8001, "note": "better"}


def test_a_rest_write_returns_the_txid_its_shape_message_carries(
    shape_server: ServerProcess, athlete_with_days: User, follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    athlete = athlete_with_days
    stream = follow(athlete, "txid")
    stream.wait_for("the snapshot", lambda e: e["event"] == "rows" and len(e["rows"]) == 4)
    mark = stream.mark()
    with Api(shape_server.url, athlete.token) as api:
        put = api.put(f"/v1/entries/{DAYS[0]}", json={"steps": 3333})
        deleted = api.delete(f"/v1/entries/{DAYS[3]}")
    assert put.status_code == 200 and deleted.status_code == 204
    put_txid, delete_txid = put.json()["txid"], deleted.headers["x-txid"]
    assert put.headers["x-txid"] == put_txid and put_txid.isdigit() and delete_txid.isdigit()  # decimal strings
    stream.wait_for("the delete's tombstone", lambda e: e["event"] == "messages" and any(
        m["key"] == _key(athlete, DAYS[3]) for m in _changes(e)), mark)
    carried = {m["key"]: m["headers"]["txids"] for e in stream.of("messages", mark) for m in _changes(e)}
    assert carried == {_key(athlete, DAYS[0]): [int(put_txid)], _key(athlete, DAYS[3]): [int(delete_txid)]}


def test_the_official_client_takes_gzipped_snapshots_and_changes(
    shape_server: ServerProcess, make_user: Callable[..., User], pg: psycopg.Connection[Any],  # noqa: F811
    follow: Callable[..., NodeStream],  # noqa: F811
) -> None:
    """Node's fetch asks for gzip by default: a coach's snapshot (streamed: more athletes than one part)
    and a catch-up of many changes arrive compressed, and the client's rows are Postgres's."""
    coach, athletes = make_user(coach=True), [make_user() for _ in range(10)]
    for athlete in athletes:
        pg.execute("INSERT INTO entries (user_id, date, steps, note) SELECT %s, '2026-01-01'::date + i, i, 'a note'"
                   " FROM generate_series(0, 29) i", (athlete.id,))
        with Api(shape_server.url, athlete.token) as api:
            assert api.post("/v1/grants", json={"coach": coach.username}).status_code == 201
    _wait_until_served(shape_server, pg, *athletes)
    stream = follow(coach, "gzip", "--columns", "user_id,date,steps,note")
    stream.wait_for("the coach's rows", lambda e: e["event"] == "rows" and len(e["rows"]) == 300)
    snapshot = stream.of("http")[0]
    assert snapshot["params"]["offset"] == "-1" and snapshot["headers"].get("content-encoding") == "gzip", snapshot
    mark = stream.mark()
    pg.execute("UPDATE entries SET note = repeat('y', 200) WHERE user_id = %s", (athletes[0].id,))
    rows = stream.wait_for("the 30 changes", lambda e: e["event"] == "rows"
                           and sum(r["note"] == "y" * 200 for r in e["rows"]) == 30, mark)
    assert len(rows["rows"]) == 300
    assert any(e["headers"].get("content-encoding") == "gzip" for e in stream.of("http", mark)), stream.transcript()
