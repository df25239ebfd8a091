"""A coach's device holds every granting athlete's entries, and loses one athlete's at the sync after a revoke.

End to end: Postgres seeded by `pulse-server seed-demo`, a real `pulse-server` (replication reader and
shape watcher on), and the installed `pulse` on the coach's side (login, sync, coach athletes, report).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
from decimal import Decimal
from typing import Any

import psycopg
from raw_figures import fitbit_days
from report_support import COACH, FITBIT_USERS, PASSWORD, WELLTORY_USERS, Pulse, server_cli

AS_OF = "2016-05-12"


def _local_rows(device: Pulse, table: str = "entries") -> dict[str, int]:
    with sqlite3.connect(device.home / "pulse.db") as conn:
        rows = conn.execute(f"SELECT user_id, count(*) FROM {table} WHERE deleted = 0 GROUP BY user_id").fetchall()
    return {str(user): int(count) for user, count in rows}


def _server_rows(pg: psycopg.Connection[Any], usernames: list[str] | None = None) -> dict[str, int]:
    """Live entries per athlete who granted the demo coach, on the server (or of the athletes named)."""
    rows = pg.execute("SELECT u.username, count(*) FROM entries e JOIN users u ON u.id = e.user_id"
                      " JOIN grants g ON g.athlete_id = u.id JOIN users c ON c.id = g.coach_id"
                      " WHERE NOT e.deleted AND c.username = %s GROUP BY u.username", (COACH,)).fetchall()
    found = {str(name): int(count) for name, count in rows}
    return found if usernames is None else {n: found[n] for n in usernames}


def test_the_coachs_device_holds_every_granting_athletes_entries(
    coach_device: Pulse, pg: psycopg.Connection[Any]
) -> None:
    local = _local_rows(coach_device)
    assert len(local) == FITBIT_USERS + WELLTORY_USERS
    assert local == _server_rows(pg)
    assert _local_rows(coach_device, "server_entries") == local
    with sqlite3.connect(coach_device.home / "pulse.db") as conn:
        row = conn.execute("SELECT steps, sleep_hours, weight_kg FROM entries WHERE user_id = 'fitbit-1503960366'"
                           " AND date = '2016-05-02'").fetchone()
    raw = fitbit_days("1503960366")[dt.date(2016, 5, 2)]
    assert row == (int(raw["steps"]), str(raw["sleep_hours"]), str(raw["weight_kg"]))


def test_coach_athletes_lists_last_entry_last_sync_days_logged_and_open_flags(
    coach_device: Pulse, pg: psycopg.Connection[Any]
) -> None:
    listing = coach_device.json("coach", "athletes", "--to", AS_OF)
    assert listing["as_of"] == AS_OF and listing["device_last_sync"]
    rows = {r["athlete"]: r for r in listing["athletes"]}
    assert len(rows) == FITBIT_USERS + WELLTORY_USERS
    first = rows["fitbit-1503960366"]
    assert (first["last_entry"], first["days_7"], first["days_28"]) == ("2016-05-11", 6, 27)
    assert [f["code"] for f in first["flags"]] == ["short_sleep"] and first["open_flags"] == 1
    gone = rows["fitbit-1844505072"]
    assert gone["last_entry"] == "2016-05-06" and [f["code"] for f in gone["flags"]] == ["no_entry"]
    assert gone["flags"][0]["numbers"] == {"last_entry": "2016-05-06", "days_without": 6}
    # "Last sync": when the athlete's newest change was made, which for the seeded data is the seeding.
    seeded_at = pg.execute("SELECT min(applied_at) FROM applied_mutations").fetchone()
    assert seeded_at is not None
    last_sync = dt.datetime.fromisoformat(first["last_sync"].replace("Z", "+00:00"))
    assert abs((last_sync - seeded_at[0]).total_seconds()) < 120
    welltory = rows["welltory-6be5033971"]
    assert (welltory["days_7"], welltory["days_28"]) == (0, 0)  # as of 2016: nothing logged yet


def test_coach_athletes_in_a_terminal_table(coach_device: Pulse) -> None:
    out = coach_device.ok("coach", "athletes", "--to", AS_OF).stdout
    assert f"{FITBIT_USERS + WELLTORY_USERS} athletes as of {AS_OF}" in out
    assert "fitbit-1503960366" in out and "short_sleep" in out


def test_a_revoked_grant_removes_that_athletes_data_at_the_next_sync(
    demo_server: Any, database_url: str, tmp_path: Any, pg: psycopg.Connection[Any]
) -> None:
    kept, revoked = "fitbit-1624580081", "fitbit-1503960366"
    add = server_cli(database_url, "user", "add", "coach-revoke", "--coach", "--password-stdin",
                     input=PASSWORD + "\n")
    assert add.returncode == 0, add.stderr
    for athlete in (kept, revoked):
        assert server_cli(database_url, "grant", "coach-revoke", athlete).returncode == 0
    device = Pulse(tmp_path / "home")
    device.login(demo_server.url, "coach-revoke")
    device.ok("sync")
    assert _local_rows(device) == _server_rows(pg, [kept, revoked])
    names = [r["athlete"] for r in device.json("coach", "athletes", "--to", AS_OF)["athletes"]]
    assert names == sorted([kept, revoked])

    done = server_cli(database_url, "revoke", "coach-revoke", revoked)
    assert done.stdout.strip() == f"coach-revoke can no longer read {revoked}"
    report = device.json("sync")
    assert report["refetched"] is True
    assert _local_rows(device) == _server_rows(pg, [kept])
    assert _local_rows(device, "server_entries") == _server_rows(pg, [kept])
    assert [r["athlete"] for r in device.json("coach", "athletes", "--to", AS_OF)["athletes"]] == [kept]
    team = device.json("report", "--team", "--from", "2016-04-12", "--to", AS_OF)
    assert [a["athlete"] for a in team["athletes"]] == [kept]
    refused = device("report", "--athlete", revoked, "--to", AS_OF)
    assert refused.returncode == 2 and f"athlete: '{revoked}' matches no athlete on this device" in refused.stderr

    # Granted again, the athlete's data comes back with the next sync.
    assert server_cli(database_url, "grant", "coach-revoke", revoked).returncode == 0
    device.ok("sync")
    assert _local_rows(device) == _server_rows(pg, [kept, revoked])


def test_the_team_report_works_offline_from_the_replica(coach_device: Pulse, demo_server: Any) -> None:
    """The server is not asked: a report of a device whose server is unreachable is the same report."""
    online = coach_device.json("report", "--athlete", "fitbit-1503960366", "--from", "2016-04-12", "--to", AS_OF)
    offline_home = coach_device.home.parent / "offline-copy"
    subprocess.run(["cp", "-a", str(coach_device.home), str(offline_home)], check=True)
    (offline_home / "credentials.json").write_text((offline_home / "credentials.json").read_text().replace(
        demo_server.url, "http://127.0.0.1:9"))
    offline = Pulse(offline_home).json("report", "--athlete", "fitbit-1503960366", "--from", "2016-04-12",
                                       "--to", AS_OF)
    assert {k: v for k, v in offline.items() if k != "generated_at"} == \
        {k: v for k, v in online.items() if k != "generated_at"}
    assert Decimal(str(online["athletes"][0]["range_means"]["steps"])) > 0
