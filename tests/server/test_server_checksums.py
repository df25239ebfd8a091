"""`GET /v1/checksums` and `GET /v1/checksums/rows` against a real server and Postgres: the digests of
real rows are the same read from Postgres and from the device's SQLite store, and both endpoints are
scoped like `GET /v1/entries`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from server_support import Api, User, error_body, now_ms, set_mutation, stamp

from pulse_cli.store.connection import open_store
from pulse_cli.store.entries import SqliteEntryRepository
from pulse_core.importers.fitbit import read_fitbit
from pulse_server.db.entries import PostgresEntryRepository
from sync.checksums import day_digests, month_digests

FITBIT = Path(__file__).resolve().parents[1] / "data" / "fitbit"


def seed_real_rows(api: Api) -> list[str]:
    """Ten real Fitbit days (source fitbit), a manual day with every field, a cleared field and a
    tombstone, through the push endpoint. The days written."""
    days = list(read_fitbit(FITBIT, "1503960366"))[:10]
    ms = now_ms()
    mutations = [
        {**set_mutation(i + 1, d.date.isoformat(), {k: str(v) for k, v in d.fields.items()},
                        stamp(ms, i, "import")), "source": "fitbit"}
        for i, d in enumerate(days)
    ]
    api.pushed("import", mutations)
    first, second = days[0].date.isoformat(), days[1].date.isoformat()
    manual = {"sleep_hours": "7.5", "hrv_ms": "48.5", "hrv_method": "sdnn", "steps": 9000, "weight_kg": "71.4",
              "note": "easy run, café ☕"}
    api.pushed("phone", [
        {**set_mutation(1, "2026-11-20", manual, stamp(ms, 1, "phone")), "source": "manual"},
        {**set_mutation(2, first, {"note": "felt sick"}, stamp(ms, 2, "phone")), "source": "manual"},
        {"seq": 3, "date": second, "op": "delete", "fields": {}, "base": {}, "hlc": stamp(ms, 3, "phone"),
         "source": "manual"},
        {**set_mutation(4, "2026-11-20", {"weight_kg": None}, stamp(ms, 4, "phone")), "source": "manual"},
    ])
    return [d.date.isoformat() for d in days] + ["2026-11-20"]


def test_digests_of_real_rows_read_from_postgres_and_from_sqlite_are_the_same_and_the_servers(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user = make_user()
    api = client(user)
    written = seed_real_rows(api)
    from_postgres = PostgresEntryRepository(pg).list_including_deleted(str(user.id), None, None)
    assert [e.date.isoformat() for e in from_postgres] == sorted(written)
    assert any(e.deleted for e in from_postgres) and any(e.note and "☕" in e.note for e in from_postgres)

    store = open_store(tmp_path)  # the device's store, with its own migrations
    copy = SqliteEntryRepository(store, "server_entries")
    for entry in from_postgres:
        entry.user = ""
        copy.save(entry)
    from_sqlite = [e for e in (copy.get("", e.date) for e in from_postgres) if e is not None]
    assert store.execute("SELECT sleep_hours FROM server_entries WHERE date = '2026-11-20'").fetchone() == ("7.50",)

    ours = day_digests(from_sqlite)
    assert ours == day_digests(from_postgres)
    answered = api.get("/v1/checksums", params={"granularity": "day"}).json()
    assert answered["users"][user.username]["days"] == {d.isoformat(): h for d, h in ours.items()}
    months = api.get("/v1/checksums").json()["users"][user.username]["months"]
    assert months == {m: d.as_json() for m, d in month_digests(ours).items()}
    assert sum(m["days"] for m in months.values()) == 11


def test_a_range_clips_the_months_and_rows_carry_every_stamp_and_source(
    make_user: Callable[..., User], client: Callable[..., Api],
) -> None:
    user = make_user()
    api = client(user)
    seed_real_rows(api)
    body = api.get("/v1/checksums", params={"from": "2016-04-14", "to": "2016-04-16"}).json()
    assert body["from"] == "2016-04-14" and body["to"] == "2016-04-16" and body["granularity"] == "month"
    assert body["users"][user.username]["months"]["2016-04"]["days"] == 3

    rows = api.get("/v1/checksums/rows", params=[("date", "2016-04-12"), ("date", "2016-04-13"),
                                                 ("date", "2026-11-20"), ("date", "2001-01-01")]).json()["rows"]
    by_day = {r["date"]: r for r in rows}
    assert set(by_day) == {"2016-04-12", "2016-04-13", "2026-11-20"}
    assert by_day["2016-04-13"]["deleted"] is True and by_day["2016-04-13"]["deleted_src"] == "manual"
    assert by_day["2016-04-12"]["steps_src"] == "fitbit" and by_day["2016-04-12"]["note_src"] == "manual"
    manual = by_day["2026-11-20"]
    assert (manual["sleep_hours"], manual["hrv_ms"], manual["hrv_method"]) == ("7.50", "48.50", "sdnn")
    assert manual["weight_kg"] is None and manual["weight_kg_hlc"] and manual["user"] == user.username


def test_checksums_are_scoped_like_entries(make_user: Callable[..., User], client: Callable[..., Api]) -> None:
    ana, ben, other = make_user(), make_user(), make_user()
    coach = make_user(coach=True)
    for athlete in (ana, ben):
        assert client(athlete).post("/v1/grants", json={"coach": coach.username}).status_code in (200, 201, 204)
        client(athlete).pushed("p", [set_mutation(1, "2026-11-01", {"steps": 100}, stamp(now_ms(), 0, "p"))])

    assert set(client(ana).get("/v1/checksums").json()["users"]) == {ana.username}
    assert set(client(coach).get("/v1/checksums").json()["users"]) == {ana.username, ben.username}
    assert set(client(coach).get("/v1/checksums", params={"user": ben.username}).json()["users"]) == {ben.username}
    for who, asked in ((ana, ben.username), (coach, other.username), (coach, "no-such-user")):
        for path, params in (("/v1/checksums", {}), ("/v1/checksums/rows", {"date": "2026-11-01"})):
            response = client(who).get(path, params={**params, "user": asked})
            assert response.status_code == 404, response.text
            assert error_body(response)["code"] == "not_found"
    rows = client(coach).get("/v1/checksums/rows", params={"date": "2026-11-01", "user": ana.username}).json()
    assert [(r["user"], r["steps"]) for r in rows["rows"]] == [(ana.username, 100)]
    assert client().get("/v1/checksums").status_code == 401


def test_bad_parameters_are_refused_naming_the_field(make_user: Callable[..., User],
                                                     client: Callable[..., Api]) -> None:
    api = client(make_user())
    for params, field, status in (({"from": "2026-13-01"}, "from", 422), ({"to": "soon"}, "to", 422),
                                  ({"to": "2026-W48-5"}, "to", 422),
                                  ({"from": "2026-02-01", "to": "2026-01-01"}, "from", 422),
                                  ({"granularity": "week"}, "granularity", 400)):
        response = api.get("/v1/checksums", params=params)
        assert response.status_code == status, (params, response.text)
        assert error_body(response)["field"] in (field, f"query.{field}")
    many = [("date", (dt.date(2025, 1, 1) + dt.timedelta(days=i)).isoformat()) for i in range(367)]
    response = api.get("/v1/checksums/rows", params=many)
    assert response.status_code == 400 and error_body(response)["field"] in ("date", "query.date")
    response = api.get("/v1/checksums/rows", params={"date": "20260101"})
    assert response.status_code == 422 and error_body(response)["field"] == "date"
