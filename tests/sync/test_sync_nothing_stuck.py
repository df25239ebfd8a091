"""Nothing stuck: a refused change never blocks a sync, conflicts reach every device and move on, the
agent notices a server back within seconds, and `pulse login` fails in one line.

Real `pulse` processes against real `pulse-server` processes and Postgres.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sync_support import (
    PULSE,
    Device,
    PulseServer,
    User,
    clean_env,
    day,
    fitbit_export,
    free_port,
    wait_for,
    wait_replicated,
)

from pulse_server.accounts import add_user, find_user, grant
from pulse_server.db.database import Database

pytestmark = pytest.mark.e2e


def make_coach(db: Database, athlete: User) -> User:
    with db.session() as session:
        row = add_user(session, f"coach-{athlete.username}", "correct horse battery", True)
        assert row.id is not None
        coach = User(row.id, row.username)
        found = find_user(session, athlete.username)
        assert found is not None
        grant(session, found, coach.username)
    return coach


def test_a_coachs_home_refuses_writes_up_front_and_a_refused_batch_never_blocks_the_pull(
    make_device: Callable[..., Device], make_user: Callable[..., User], db: Database, pg: psycopg.Connection[Any],
) -> None:
    athlete = make_user()
    coach = make_coach(db, athlete)
    kim = make_device("coach")
    assert kim.login(coach).returncode == 0
    refused = kim.run("log", "--steps", "5000")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "coach" in refused.stderr, refused.stderr
    assert kim.outbox() == []

    # A change that reached the outbox before the device knew (logged before this release, or the
    # account became a coach's): the server refuses it for good, and the sync goes on.
    kim.set_meta("account_role", "athlete")
    kim.log(day(-1), steps=5000)
    kim.set_meta("account_role", "coach")
    ana = make_device("ana")
    assert ana.login(athlete).returncode == 0
    ana.log(day(-2), steps=1234)
    ana.synced()
    wait_replicated(pg, athlete.id)
    for _ in range(2):  # and again: a rejected change is never pushed twice
        done = kim.synced()
        assert "1 rejected change" in done.stdout, done.stdout
    rejected = kim.json("rejected")["rejected"]
    assert len(rejected) == 1 and rejected[0]["date"] == day(-1)
    assert rejected[0]["error"]["code"] == "forbidden" and "coach" in rejected[0]["error"]["message"]
    with kim.store() as conn:  # the athlete's day was pulled all the same
        pulled = conn.execute("SELECT steps FROM server_entries WHERE user_id = ? AND date = ?",
                              (athlete.username, day(-2))).fetchall()
    assert pulled == [(1234,)]
    assert kim.outbox_counts() == {"rejected": 1}
    assert kim.ok("rejected", "--discard", str(rejected[0]["seq"])).returncode == 0
    assert kim.outbox_counts() == {"discarded": 1}


def test_every_device_sees_each_conflict_and_its_state_and_a_dismissal_reaches_them_all(
    make_device: Callable[..., Device], make_user: Callable[..., User], pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    a.log(day(-4), steps=1000, note="a")
    b.log(day(-4), steps=2000, note="b")  # later: B's values win, A's lose
    a.synced()
    b.synced()
    wait_replicated(pg, user.id)
    a.synced()
    for device in (a, b):
        found = {c["field"]: c for c in device.conflicts()}
        assert {f: (c["kept"], c["lost"], c["state"]) for f, c in found.items()} == {
            "steps": (2000, 1000, "open"), "note": ("b", "a", "open")}, device
        assert device.status()["conflicts"] == 2
    steps = next(c for c in a.conflicts() if c["field"] == "steps")
    note = next(c for c in a.conflicts() if c["field"] == "note")

    # A (whose value lost) makes it win again; B dismisses the note's conflict.
    a.ok("conflicts", "--reassert", str(steps["id"]))
    b.ok("conflicts", "--dismiss", str(note["id"]))
    # At once on the device that dismissed it; the steps conflict is still open until A's edit arrives.
    assert [c["field"] for c in b.conflicts()] == ["steps"] and b.status()["conflicts"] == 1
    a.synced()
    b.synced()
    wait_replicated(pg, user.id)
    for device in (a, b):
        device.synced()
        assert device.conflicts() == [], device  # nothing open any more
        assert device.status()["conflicts"] == 0
        states = {c["field"]: c["state"] for c in device.json("conflicts", "--all")["conflicts"]}
        assert states == {"steps": "reasserted", "note": "dismissed"}, device
        history = {e["date"]: e for e in device.history(day(-4), day(-4))}
        assert history[day(-4)]["steps"] == 1000


def test_the_agent_pushes_within_seconds_of_the_server_coming_back(
    make_user: Callable[..., User], start_server: Callable[..., PulseServer], pg: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    server = start_server()
    user = make_user()
    device = Device("A", tmp_path / "A", server.url)
    assert device.login(user).returncode == 0
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen([str(PULSE), "agent", "--interval", "60"], stdout=log, stderr=subprocess.STDOUT,
                             env=clean_env(PULSE_HOME=str(device.home), NO_COLOR="1"))
    try:
        wait_for(lambda: device.meta("last_sync"), 30, "the agent's first round", every_s=0.1)
        server.kill()
        device.log(day(-1), steps=4242)
        wait_for(lambda: device.breaker().get("open_until", 0) > time.time(), 30,
                 "the agent to find the server away", every_s=0.1)
        server.restart()
        back = time.monotonic()

        def pushed() -> bool:
            row = pg.execute("SELECT steps FROM entries WHERE user_id = %s AND date = %s",
                             (user.id, day(-1))).fetchone()
            return row is not None and row[0] == 4242

        wait_for(pushed, 30, "the change to reach Postgres")
        took = time.monotonic() - back
        # Probes every 1.5-3 s: typically 2 s. Far below the breaker's cool-down (15 s, growing) or the
        # 60 s between rounds, which is what the agent waited for before.
        assert took < 10, f"the agent took {took:.1f} s to push after the server came back"
    finally:
        agent.kill()
        agent.wait(timeout=10)
        log.close()


class _NotPulse(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_web_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotPulse)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("wrong password", 1, "username or password is wrong"),
        ("unknown user", 1, "username or password is wrong"),
        ("server down", 3, "connection refused"),
        ("no scheme", 2, "is not a server URL"),
        ("https against http", 3, "TLS handshake failed"),
        ("unknown host", 3, "unknown host"),
        ("the app's URL", 2, "the web app's address"),
        ("another web server", 1, "that is not an NGX Pulse server"),
    ],
)
def test_pulse_login_fails_in_one_line_with_its_exit_code(
    case: str, code: int, says: str, make_device: Callable[..., Device], make_user: Callable[..., User],
    server: PulseServer, other_web_server: str,
) -> None:
    user = make_user()
    port = server.url.rsplit(":", 1)[1]
    url, name, password = {
        "wrong password": (server.url, user.username, "not the password"),
        "unknown user": (server.url, "nobody-at-all", user.password),
        "server down": (f"http://127.0.0.1:{free_port()}", user.username, user.password),
        "no scheme": (f"127.0.0.1:{port}", user.username, user.password),
        "https against http": (f"https://127.0.0.1:{port}", user.username, user.password),
        "unknown host": ("http://pulse.invalid:8000", user.username, user.password),
        "the app's URL": (f"{server.url}/app/", user.username, user.password),
        "another web server": (other_web_server, user.username, user.password),
    }[case]
    device = make_device("A")
    done = device.run("login", "--server", url, "--username", name, "--password-stdin", input=password + "\n")
    assert done.returncode == code, (done.returncode, done.stderr)
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (device.home / "credentials.json").exists()


def test_a_deleted_day_restored_by_an_import_reaches_the_server_and_every_device(
    make_device: Callable[..., Device], make_user: Callable[..., User], pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    export = str(fitbit_export(tmp_path / "fitbit", 3))
    a.ok("import", "fitbit", export, "--source-user", "1")
    a.synced()
    (first, *_) = a.history(day(-10), day(0))
    a.delete(first["date"])
    a.synced()
    skipped = a.json("import", "fitbit", export, "--source-user", "1")
    assert sum(skipped["skipped"].values()) == 1
    a.ok("import", "fitbit", export, "--source-user", "1", "--restore-deleted")
    a.synced()
    wait_replicated(pg, user.id)
    for device in (a, b):
        device.synced()
        restored = {e["date"]: e for e in device.history(day(-10), day(0))}
        assert restored[first["date"]]["steps"] == first["steps"], device
        assert restored[first["date"]]["sources"]["steps"] == "manual"  # brought back by hand
    assert a.conflicts() == []
    row = pg.execute("SELECT steps, deleted FROM entries WHERE user_id = %s AND date = %s",
                     (user.id, first["date"])).fetchone()
    assert row == (first["steps"], False)
