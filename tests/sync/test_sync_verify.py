"""`pulse verify`: a device's copy of the server's rows checked against the server by checksums, with real
`pulse` processes and a real server (docs/verify.md).

The device's copy (`server_entries`) is corrupted by hand in SQLite, one way per day: a value, a stamp,
a row gone, a row the server never had, a tombstone brought back to life. Verification must name each
day and what kind of difference it is; a repair must make the copy equal, column for column, to the
rows in Postgres (read directly, not through the code under test); a clean device verifies in one request.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sync_support import PULSE, STAMPED, Device, User, clean_env, day, wait_for

from pulse_server.accounts import add_user, find_user, grant
from pulse_server.db.database import Database

pytestmark = pytest.mark.e2e

VALUES = ("sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "score_version", "deleted")
STAMP_COLUMNS = tuple(c for f in STAMPED for c in (f"{f}_hlc", f"{f}_src"))


def postgres_rows(pg: psycopg.Connection[Any], user_id: int) -> dict[str, tuple[str | None, ...]]:
    """Every row of the user in Postgres, each column as text (numeric(4,2) -> '7.50', true -> 'true')."""
    columns = ", ".join([f"{c}::text" for c in VALUES] + list(STAMP_COLUMNS))
    rows = pg.execute(f"SELECT date::text, {columns} FROM entries WHERE user_id = %s", (user_id,)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def device_rows(device: Device, key: str = "") -> dict[str, tuple[str | None, ...]]:
    """The device's copy of the server's rows of one user key, each column as the same text."""
    def text(column: str) -> str:
        if column == "deleted":
            return "CASE deleted WHEN 1 THEN 'true' ELSE 'false' END"
        return f"CAST({column} AS TEXT)"

    columns = ", ".join([text(c) for c in VALUES] + list(STAMP_COLUMNS))
    with device.store() as conn:
        rows = conn.execute(f"SELECT date, {columns} FROM server_entries WHERE user_id = ?", (key,)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def verify(device: Device, *args: str) -> tuple[int, dict[str, Any], str]:
    """`pulse verify --json` (exit code, JSON) and the same without --json (its lines)."""
    done = device.run("verify", *args, "--json")
    assert done.returncode in (0, 1), f"pulse verify -> {done.returncode}: {done.stderr}"
    return done.returncode, json.loads(done.stdout), done.stderr


def kinds(report: dict[str, Any]) -> dict[str, str]:
    return {d["date"]: d["kind"] for d in report["differences"]}


def test_verify_names_each_corrupted_day_and_repair_makes_the_copy_equal_to_postgres(
    make_device: Callable[..., Device], make_user: Callable[..., User], pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-40), sleep_hours=7.5, steps=9000, hrv_ms=62, weight_kg=71.4, note="long run")
    for offset in (-12, -11, -10, -9, -8):
        a.log(day(offset), sleep_hours=6.25, steps=8000 + offset)
    a.delete(day(-8))  # a tombstone: the device's copy holds it too, and it counts
    a.synced()
    a.log(day(-1), steps=1234)  # pending, never pushed: not drift

    code, clean, _ = verify(a)
    assert code == 0 and clean["clean"] and clean["differences"] == []
    assert clean["requests"] == 1, "a clean device verifies in one request"
    assert clean["days_checked"] == 6 and clean["months"] in (1, 2, 3)

    changed, stamped, missing, extra, revived = day(-12), day(-11), day(-10), day(-3), day(-8)
    with a.store() as conn:
        conn.execute("UPDATE server_entries SET steps = steps + 1 WHERE user_id = '' AND date = ?", (changed,))
        conn.execute("UPDATE server_entries SET sleep_hours_hlc = '0000000000001:00000:forged'"
                     " WHERE user_id = '' AND date = ?", (stamped,))
        conn.execute("DELETE FROM server_entries WHERE user_id = '' AND date = ?", (missing,))
        conn.execute("INSERT INTO server_entries (user_id, date, steps, steps_hlc, steps_src, deleted)"
                     " VALUES ('', ?, 5, '0000000000002:00000:forged', 'manual', 0)", (extra,))
        conn.execute("UPDATE server_entries SET deleted = 0 WHERE user_id = '' AND date = ?", (revived,))

    code, found, _ = verify(a)
    assert code == 1 and not found["clean"] and not found["repaired"]
    assert kinds(found) == {changed: "different", stamped: "different", missing: "missing", extra: "extra",
                            revived: "different"}
    lines = a.run("verify").stdout.splitlines()
    assert f"{changed}: differs from the server" in lines
    assert f"{missing}: missing on this device (the server has this day)" in lines
    assert f"{extra}: on this device only (the server has no such day)" in lines
    assert lines[-1].startswith("5 days differ from the server")

    code, repaired, _ = verify(a, "--repair")
    assert code == 0 and repaired["repaired"] and repaired["clean"] and repaired["remaining"] == []
    parts = {d["date"]: d["differences"] for d in repaired["differences"]}
    assert parts[changed] == ["steps"] and parts[stamped] == ["sleep_hours stamp"] and parts[revived] == ["deleted"]
    assert device_rows(a) == postgres_rows(pg, user.id), "the repaired copy is the server's, column for column"

    history = {e["date"]: e for e in a.history(day(-45), day(0))}
    assert history[missing]["steps"] == 7990 and history[changed]["steps"] == 7988
    assert extra not in history and revived not in history
    assert history[day(-1)]["steps"] == 1234, "the pending change is still in the local view"
    code, again, _ = verify(a)
    assert code == 0 and again["requests"] == 1


def test_verify_of_a_narrow_range_and_bad_input(
    make_device: Callable[..., Device], make_user: Callable[..., User],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-20), steps=100)
    a.log(day(-5), steps=200)
    a.synced()
    with a.store() as conn:
        conn.execute("UPDATE server_entries SET steps = 7 WHERE user_id = '' AND date = ?", (day(-20),))
    code, narrow, _ = verify(a, "--from", day(-6), "--to", day(0))
    assert code == 0 and narrow["days_checked"] == 1, "a day outside the range is not compared"
    code, wide, _ = verify(a, "--from", day(-30))
    assert code == 1 and kinds(wide) == {day(-20): "different"}

    bad = a.run("verify", "--from", day(-1), "--to", day(-3))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "from:" in bad.stderr
    assert a.run("verify", "--from", "soon").returncode == 2


def test_offline_verify_exits_3(make_device: Callable[..., Device], make_user: Callable[..., User]) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    credentials = a.home / "credentials.json"  # the account's server moves to a port nobody listens on
    data = json.loads(credentials.read_text())
    data["server"] = "http://127.0.0.1:9"
    credentials.write_text(json.dumps(data))
    done = a.run("verify")
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("offline: cannot verify") and done.stderr.count("\n") == 1


def make_coach(db: Database, *athletes: User) -> User:
    with db.session() as session:
        row = add_user(session, f"coach-{secrets.token_hex(4)}", "correct horse battery", True)
        assert row.id is not None
        coach = User(row.id, row.username)
        for athlete in athletes:
            found = find_user(session, athlete.username)
            assert found is not None
            grant(session, found, coach.username)
    return coach


def test_a_coach_verifies_every_athlete_and_a_change_not_pulled_yet_is_not_drift(
    make_device: Callable[..., Device], make_user: Callable[..., User], db: Database, pg: psycopg.Connection[Any],
) -> None:
    ana, ben = make_user("ana"), make_user("ben")
    for athlete, steps in ((ana, 1000), (ben, 2000)):
        phone = make_device(athlete.username)
        assert phone.login(athlete).returncode == 0
        phone.log(day(-3), steps=steps, sleep_hours=8)
        phone.log(day(-2), steps=steps + 1)
        phone.synced()
    coach = make_coach(db, ana, ben)
    kim = make_device("coach")
    assert kim.login(coach).returncode == 0
    kim.synced()
    code, clean, _ = verify(kim)
    assert code == 0 and clean["requests"] == 1 and clean["days_checked"] == 4

    # Ana logs again after the coach's last sync: the month differs, but once the shape has caught up
    # the day matches. Not drift.
    phone = make_device(ana.username)
    phone.log(day(-2), steps=4321)
    phone.synced()
    with kim.store() as conn:
        conn.execute("UPDATE server_entries SET steps = 1 WHERE user_id = ? AND date = ?", (ben.username, day(-3)))
    code, found, _ = verify(kim)
    assert code == 1 and [(d["user"], d["date"], d["kind"]) for d in found["differences"]] == [
        (ben.username, day(-3), "different")]
    assert device_rows(kim, ana.username) == postgres_rows(pg, ana.id), "the catch-up pulled Ana's change"
    assert f"{ben.username} {day(-3)}: differs from the server" in kim.run("verify").stdout

    code, repaired, _ = verify(kim, "--repair")
    assert code == 0 and repaired["clean"]
    assert device_rows(kim, ben.username) == postgres_rows(pg, ben.id)


class AgentProcess:
    def __init__(self, device: Device, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen([str(PULSE), "agent", "--interval", "30"],
                                     env=clean_env(PULSE_HOME=str(device.home), NO_COLOR="1"),
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def agent_of(tmp_path: Path) -> Iterator[Callable[[Device], AgentProcess]]:
    started: list[AgentProcess] = []

    def start(device: Device) -> AgentProcess:
        started.append(AgentProcess(device, tmp_path / f"agent-{device.name}.log"))
        return started[-1]

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait(timeout=30)
        agent._log.close()


def test_the_agent_verifies_at_start_and_repairs_what_differs(
    make_device: Callable[..., Device], make_user: Callable[..., User], pg: psycopg.Connection[Any],
    agent_of: Callable[[Device], AgentProcess],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-4), steps=4000, weight_kg=70)
    a.log(day(-3), steps=3000)
    a.synced()
    with a.store() as conn:
        conn.execute("UPDATE server_entries SET weight_kg = '99.00' WHERE user_id = '' AND date = ?", (day(-4),))
        conn.execute("DELETE FROM server_entries WHERE user_id = '' AND date = ?", (day(-3),))

    agent = agent_of(a)
    wait_for(lambda: "verify: repaired 2 days" in agent.text(), 60, "the agent's verification", every_s=0.2)
    log = agent.text()
    assert f"verify: {day(-4)}: differs from the server: weight_kg - fetched again" in log
    assert f"verify: {day(-3)}: missing on this device (the server has this day) - fetched again" in log
    assert device_rows(a) == postgres_rows(pg, user.id)
