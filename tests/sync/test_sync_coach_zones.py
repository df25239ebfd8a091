"""A coach's views count each athlete's days in the athlete's own calendar, with real processes: a
`pulse-server` whose clock is set to 2026-12-03 20:00 UTC (libfaketime), athletes' devices under
TZ=Pacific/Kiritimati (UTC+14: already 2026-12-04 10:00) and TZ=Pacific/Pago_Pago (UTC-11: still
2026-12-03 09:00), and coaches' devices under TZ=UTC and TZ=Pacific/Kiritimati. Every device learns the
server's time at login, so "today" on each is the server's instant read in the device's zone.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sync_support import PASSWORD, Device, PulseServer, User, shifted_clock, wait_replicated

from pulse_server.accounts import add_user, find_user, grant
from pulse_server.db.database import Database

pytestmark = pytest.mark.e2e

EVENING_UTC = "2026-12-03 20:00:00"
KIRITIMATI, PAGO_PAGO, UTC = "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"


@dataclass
class Team:
    server: PulseServer
    kira: User  # in Kiritimati: logged her today, 2026-12-04
    pago: User  # in Pago Pago: last logged 2026-12-01, and her 2026-12-03 is not over
    nora: User  # logged 2026-12-01; her zone is not known (as for devices from before zones were kept)
    coach_utc: Device
    coach_kiritimati: Device
    coach_users: list[User]
    home: Path


def new_user(db: Database, prefix: str, coach: bool = False) -> User:
    with db.session() as session:
        row = add_user(session, f"{prefix}-{secrets.token_hex(4)}", PASSWORD, coach)
    assert row.id is not None
    return User(row.id, row.username)


def grant_all(db: Database, coach: User, *athletes: User) -> None:
    with db.session() as session:
        for athlete in athletes:
            found = find_user(session, athlete.username)
            assert found is not None
            grant(session, found, coach.username)


def athlete_logs(server: PulseServer, home: Path, user: User, zone: str, pg: psycopg.Connection[Any],
                 *dates: str) -> Device:
    """The athlete's own device in `zone` logs steps on each date ("today" is its today) and syncs."""
    device = Device(user.username, home / user.username, server.url, env={"TZ": zone})
    assert device.login(user).returncode == 0
    for date in dates:
        device.log(date, steps=6000, sleep_hours=7.5)
    device.synced()
    wait_replicated(pg, user.id)
    return device


@pytest.fixture(scope="module")
def team(database_url: str, db: Database, pg: psycopg.Connection[Any],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    home = tmp_path_factory.mktemp("coach-zones")
    env = {"PULSE_DATABASE_URL": database_url, "PULSE_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
           "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "TZ": "UTC",
           # tokens good for a century: the server's set clock dates them, Postgres checks the real one
           "PULSE_TOKEN_TTL_DAYS": "36500", **shifted_clock(f"@{EVENING_UTC}")}
    server = PulseServer(home / "server.log", env)
    try:
        server.wait_ready()
        kira, pago, nora = (new_user(db, name) for name in ("kira", "pago", "nora"))
        athlete_logs(server, home, kira, KIRITIMATI, pg, "today")
        athlete_logs(server, home, pago, PAGO_PAGO, pg, "2026-11-30", "2026-12-01")
        athlete_logs(server, home, nora, UTC, pg, "2026-12-01")
        pg.execute("UPDATE users SET utc_offset_min = NULL WHERE id = %s", (nora.id,))
        coaches, devices = [], []
        for zone in (UTC, KIRITIMATI):
            coach = new_user(db, "coach", coach=True)
            grant_all(db, coach, kira, pago, nora)
            device = Device(f"coach in {zone}", home / coach.username, server.url, env={"TZ": zone})
            assert device.login(coach).returncode == 0
            device.synced()
            coaches.append(coach)
            devices.append(device)
        yield Team(server, kira, pago, nora, devices[0], devices[1], coaches, home)
    finally:
        server.close()


def athletes(coach: Device, *args: str) -> dict[str, dict[str, Any]]:
    listing = coach.json("coach", "athletes", *args)
    return {row["athlete"]: row for row in listing["athletes"]}


def reported(coach: Device, *args: str) -> dict[str, dict[str, Any]]:
    report = coach.json("report", *args)
    return {a["athlete"]: a for a in report["athletes"]}


def codes(row: dict[str, Any]) -> list[str]:
    return [flag["code"] for flag in row["flags"]]


def test_the_coachs_sync_keeps_each_athletes_zone_from_their_pushes(
    team: Team, token_for: Callable[[User], str]
) -> None:
    expected = {team.kira.username: 840, team.pago.username: -660, team.nora.username: None}
    with httpx.Client(base_url=team.server.url, timeout=30,
                      headers={"authorization": f"Bearer {token_for(team.coach_users[0])}"}) as http:
        grants = http.get("/v1/grants").json()["grants"]
    assert {g["athlete"]: g["utc_offset_min"] for g in grants} == expected
    with team.coach_utc.store() as conn:
        zones = dict(conn.execute("SELECT username, utc_offset_min FROM athlete_zones").fetchall())
    assert zones == expected


def test_a_coach_in_utc_sees_the_entry_an_athlete_in_kiritimati_made_on_her_today(team: Team) -> None:
    """The coach's day is 2026-12-03; hers is 2026-12-04, the day she logged (was: "no entries at all")."""
    kira = athletes(team.coach_utc)[team.kira.username]
    assert (kira["last_entry"], kira["days_7"], kira["days_28"], codes(kira)) == ("2026-12-04", 1, 1, [])
    assert (kira["today"], kira["as_of"], kira["utc_offset_min"], kira["calendar"]) == \
        ("2026-12-04", "2026-12-04", 840, "athlete")
    report = reported(team.coach_utc, "--athlete", team.kira.username)[team.kira.username]
    assert (report["to"], report["last_entry"], report["days_logged"], report["flags"]) == \
        ("2026-12-04", "2026-12-04", 1, [])
    assert report["rolling_7d"]["steps"] == 6000


def test_a_coach_in_kiritimati_does_not_flag_an_athlete_in_pago_pago_whose_day_is_not_over(team: Team) -> None:
    """The coach's day is 2026-12-04, hers 2026-12-03: two days since 12-01 (was: "no entry for 3 days")."""
    pago = athletes(team.coach_kiritimati)[team.pago.username]
    assert (pago["last_entry"], pago["flags"]) == ("2026-12-01", [])
    assert (pago["today"], pago["as_of"], pago["utc_offset_min"]) == ("2026-12-03", "2026-12-03", -660)
    team_report = team.coach_kiritimati.json("report", "--team")
    rows = {row["athlete"]: row for row in team_report["team"]}
    assert rows[team.pago.username]["flag_codes"] == []
    figures = {a["athlete"]: a for a in team_report["athletes"]}[team.pago.username]
    assert (figures["from"], figures["to"], figures["flags"]) == ("2026-11-06", "2026-12-03", [])
    # The report spans every athlete's range: Kiritimati's 2026-12-04 is its last day.
    assert team_report["to"] == "2026-12-04"


def test_an_athlete_whose_zone_is_unknown_is_counted_in_the_coachs_calendar(team: Team) -> None:
    """Nora last logged 2026-12-01: three days before the Kiritimati coach's 12-04, two before UTC's 12-03."""
    ahead = athletes(team.coach_kiritimati)[team.nora.username]
    assert (ahead["today"], ahead["as_of"], ahead["utc_offset_min"], ahead["calendar"]) == \
        ("2026-12-04", "2026-12-04", None, "coach")
    assert [f["numbers"] for f in ahead["flags"]] == [{"last_entry": "2026-12-01", "days_without": 3}]
    behind = athletes(team.coach_utc)[team.nora.username]
    assert (behind["today"], behind["calendar"], codes(behind)) == ("2026-12-03", "coach", [])
    table = team.coach_utc.ok("coach", "athletes").stdout
    # Most athletes are seen as of the coach's 12-03; the one in UTC+14 as of her own 12-04, under her name.
    assert "as of 2026-12-03, their own today (others as marked)" in table, table
    lines = table.splitlines()
    kira = lines[next(i for i, line in enumerate(lines) if team.kira.username[:12] in line) + 1]
    assert kira.strip().startswith("as of 2026-12-04"), table
    assert "zone not known here: that athlete's days are counted in this device's calendar" in table
    markdown = team.coach_utc.ok("report", "--athlete", team.nora.username, "--format", "md").stdout
    assert "in this device's calendar (today 2026-12-03): the athlete's zone is not known here" in markdown


def test_a_coach_may_ask_for_any_to(team: Team) -> None:
    """Was: --to refused past the coach's today + 1. Each athlete ends on her today when --to is later."""
    rows = athletes(team.coach_utc, "--to", "2026-12-05")
    assert {name: row["as_of"] for name, row in rows.items()} == \
        {team.kira.username: "2026-12-04", team.pago.username: "2026-12-03", team.nora.username: "2026-12-03"}
    assert team.coach_utc.json("coach", "athletes", "--to", "2026-12-05")["as_of"] == "2026-12-05"
    figures = reported(team.coach_utc, "--from", "2026-12-01", "--to", "2027-06-30")
    kira, pago = figures[team.kira.username], figures[team.pago.username]
    assert (kira["from"], kira["to"], kira["days_in_range"], kira["days_logged"]) == \
        ("2026-12-01", "2026-12-04", 4, 1)
    assert (pago["from"], pago["to"], pago["days_in_range"], pago["days_logged"], pago["flags"]) == \
        ("2026-12-01", "2026-12-03", 3, 1, [])
    earlier = athletes(team.coach_utc, "--to", "2026-12-02")  # an earlier --to is taken as asked
    assert {row["as_of"] for row in earlier.values()} == {"2026-12-02"}
    bad = team.coach_utc.run("coach", "athletes", "--to", "2026-02-30")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: to: '2026-02-30' is not a date") and bad.stderr.count("\n") == 1
    backwards = team.coach_utc.run("report", "--from", "2027-01-02", "--to", "2027-01-01")
    assert backwards.returncode == 2 and backwards.stderr.startswith("error: from: 2027-01-02 is after to 2027-01-01")


def test_an_athlete_who_travels_is_counted_in_her_new_zone_after_her_next_push(
    team: Team, db: Database, pg: psycopg.Connection[Any]
) -> None:
    tara = new_user(db, "tara")
    device = athlete_logs(team.server, team.home, tara, PAGO_PAGO, pg, "2026-12-02")
    grant_all(db, team.coach_users[0], tara)
    team.coach_utc.synced()
    before = athletes(team.coach_utc)[tara.username]
    assert before["last_entry"] == "2026-12-02"

    flown = Device(device.name, device.home, device.server_url, env={"TZ": KIRITIMATI})  # same home, new zone
    assert flown.json("log", "--steps", "7000")["entry"]["date"] == "2026-12-04"
    flown.synced()
    wait_replicated(pg, tara.id)
    team.coach_utc.synced()
    after = athletes(team.coach_utc)[tara.username]
    assert (after["last_entry"], after["days_7"]) == ("2026-12-04", 2)
    assert (before["today"], before["utc_offset_min"]) == ("2026-12-03", -660)
    assert (after["today"], after["utc_offset_min"]) == ("2026-12-04", 840)
