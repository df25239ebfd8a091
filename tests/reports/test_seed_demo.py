"""`pulse-server seed-demo`: the real sample users as athletes of one coach, written exactly once."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
from typing import Any

import httpx
import psycopg
from raw_figures import DATA, fitbit_days
from report_support import COACH, FITBIT_USERS, PASSWORD, WELLTORY_USERS, server_cli

ATHLETES = FITBIT_USERS + WELLTORY_USERS


def _state(pg: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything the seeding writes, fingerprinted: entries with stamps, exactly-once records, users, grants."""
    entries = pg.execute("SELECT md5(string_agg(e::text, '|' ORDER BY user_id, date)) FROM entries e").fetchone()
    applied = pg.execute("SELECT count(*), md5(string_agg(a.result::text, '|' ORDER BY user_id, client_id, seq))"
                         " FROM applied_mutations a").fetchone()
    users = pg.execute("SELECT count(*) FROM users").fetchone()
    grants = pg.execute("SELECT count(*) FROM grants").fetchone()
    return {"entries": entries, "applied": applied, "users": users, "grants": grants}


def test_seed_demo_makes_every_fitbit_and_welltory_user_an_athlete_of_the_coach(
    seeded: subprocess.CompletedProcess[str], pg: psycopg.Connection[Any]
) -> None:
    assert f"{ATHLETES} athletes ({ATHLETES} new, {ATHLETES} new grants)" in seeded.stdout
    with (DATA / "fitbit" / "dailyActivity_merged.csv").open(newline="") as f:
        fitbit_ids = {row["Id"] for row in csv.DictReader(f)}
    with (DATA / "welltory" / "hrv_measurements_no_rr.csv").open(newline="") as f:
        welltory_ids = {row["user_code"] for row in csv.DictReader(f)}
    assert (len(fitbit_ids), len(welltory_ids)) == (FITBIT_USERS, WELLTORY_USERS)
    rows = pg.execute(
        "SELECT u.username, u.is_coach FROM grants g JOIN users u ON u.id = g.athlete_id"
        " JOIN users c ON c.id = g.coach_id WHERE c.username = %s", (COACH,)).fetchall()
    expected = {f"fitbit-{i}" for i in fitbit_ids} | {f"welltory-{c}" for c in welltory_ids}
    assert {name for name, _ in rows} == expected
    assert not any(is_coach for _, is_coach in rows)
    assert "fitbit-1503960366" in expected and "welltory-6be5033971" in expected


def test_seeded_days_are_the_raw_files_days_with_their_source(seeded: Any, pg: psycopg.Connection[Any]) -> None:
    for user in ("1503960366", "6962181067"):
        rows = pg.execute(
            "SELECT e.date, e.steps, e.sleep_hours, e.weight_kg, e.steps_src, e.sleep_hours_src, e.weight_kg_src"
            " FROM entries e JOIN users u ON u.id = e.user_id WHERE u.username = %s ORDER BY e.date",
            (f"fitbit-{user}",)).fetchall()
        raw = fitbit_days(user)
        assert [r[0] for r in rows] == sorted(raw)
        for date, steps, sleep, weight, *sources in rows:
            day = raw[date]
            assert (steps, sleep, weight) == (day.get("steps"), day.get("sleep_hours"), day.get("weight_kg")), date
            assert {s for s in sources if s is not None} == {"fitbit"}
    welltory = pg.execute("SELECT DISTINCT hrv_ms_src, hrv_method FROM entries e JOIN users u ON u.id = e.user_id"
                          " WHERE u.username LIKE 'welltory-%%' AND hrv_ms IS NOT NULL").fetchall()
    assert welltory == [("welltory", "rmssd")]


def test_seeding_goes_through_the_exactly_once_path_one_mutation_per_day(
    seeded: Any, pg: psycopg.Connection[Any]
) -> None:
    rows = pg.execute(
        "SELECT a.client_id, a.seq, a.result->>'status', e.date FROM applied_mutations a"
        " JOIN users u ON u.id = a.user_id JOIN entries e ON e.user_id = a.user_id AND e.date = %s"
        " WHERE u.username = 'fitbit-1503960366' AND a.seq = %s",
        (dt.date(2016, 4, 12), dt.date(2016, 4, 12).toordinal())).fetchall()
    assert rows == [("seed-fitbit", dt.date(2016, 4, 12).toordinal(), "applied", dt.date(2016, 4, 12))]
    counts = pg.execute("SELECT (SELECT count(*) FROM applied_mutations), (SELECT count(*) FROM entries)").fetchone()
    assert counts is not None and counts[0] == counts[1] > 4000


def test_running_seed_demo_again_changes_nothing(
    seeded: Any, database_url: str, pg: psycopg.Connection[Any]
) -> None:
    before = _state(pg)
    again = server_cli(database_url, "seed-demo", "--coach", COACH)  # the coach exists: no password asked
    assert again.returncode == 0, again.stderr
    assert f"{ATHLETES} athletes (0 new, 0 new grants); days: 0 written" in again.stdout
    assert _state(pg) == before


def test_a_second_coach_gets_the_same_athletes_and_no_entry_is_written_twice(
    seeded: Any, database_url: str, pg: psycopg.Connection[Any]
) -> None:
    entries = _state(pg)["entries"]
    done = server_cli(database_url, "seed-demo", "--coach", "coach-second", "--password-stdin", input=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert f"coach coach-second (new): {ATHLETES} athletes (0 new, {ATHLETES} new grants); days: 0 written" \
        in done.stdout
    assert _state(pg)["entries"] == entries


def test_seed_demo_refuses_a_coach_name_that_belongs_to_an_athlete(seeded: Any, database_url: str) -> None:
    done = server_cli(database_url, "seed-demo", "--coach", "fitbit-1503960366")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: coach: fitbit-1503960366 exists and is not a coach" \
                                  " (allowed a coach or a new name)"


def test_demo_athletes_cannot_sign_in(demo_server: Any) -> None:
    for password in ("", PASSWORD, "!demo athlete: no password can match this"):
        response = httpx.post(f"{demo_server.url}/v1/auth/token",
                              json={"username": "fitbit-1503960366", "password": password}, timeout=30)
        assert response.status_code in (400, 401), response.text


def test_seed_demo_help_has_examples() -> None:
    done = server_cli("postgresql://unused", "seed-demo", "--help")
    assert done.returncode == 0
    assert "Examples:" in done.stdout and "pulse-server seed-demo --coach coach" in done.stdout


def test_seed_demo_adopts_no_account_that_signs_in_even_with_a_demo_athletes_name(
    seeded: Any, database_url: str, pg: psycopg.Connection[Any]
) -> None:
    # Someone signed up as fitbit-1503960366 before the demo ran: the demo must not give a coach their data.
    name = "fitbit-1503960366"
    (demo_hash,) = pg.execute("SELECT password_hash FROM users WHERE username = %s", (name,)).fetchone() or ("",)
    made = server_cli(database_url, "user", "passwd", name, "--password-stdin", input="a-real-person-1\n")
    assert made.returncode == 0, made.stderr
    try:
        done = server_cli(database_url, "seed-demo", "--coach", "coach-third", "--password-stdin",
                          input=PASSWORD + "\n")
        assert done.returncode == 2
        assert done.stderr.strip() == f"error: username: {name} is an account that signs in, not a demo athlete" \
            " (allowed a name the demo created or a new one; rename or remove that account first)"
        assert pg.execute("SELECT count(*) FROM users WHERE username = 'coach-third'").fetchone() == (0,)
    finally:
        pg.execute("UPDATE users SET password_hash = %s WHERE username = %s", (demo_hash, name))
