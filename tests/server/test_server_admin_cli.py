"""`pulse-server` as an administrator meets it: real processes on real Postgres. Users listed, their
password changed, removed with everything of theirs (asked first); an unmigrated database refused in one
line; `serve` says where it listens, refuses a port in use, and sends a browser at `/` to the web app."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from calendar_days import day
from psycopg import sql
from server_support import (
    PULSE_SERVER,
    Api,
    ServerProcess,
    User,
    clean_env,
    free_port,
    now_ms,
    set_mutation,
    stamp,
)
from throwaway_db import ADMIN_URL, drop_database, url_of

from pulse_server.db.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"  # every test user's (tests/server/conftest.py)
# Every table that holds a user's id (pulse_server/db/models.py and migrations/versions).
USER_TABLES = {"entries": "user_id", "conflicts": "user_id", "applied_mutations": "user_id", "tokens": "user_id",
               "client_high_water": "user_id", "shape_rows": "user_id", "scope_versions": "user_id",
               "erasures": "user_id"}


def admin(database_url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PULSE_SERVER), *args], capture_output=True, text=True, input=input, timeout=120,
                          env=clean_env(PULSE_DATABASE_URL=database_url, COLUMNS="80"))


@pytest.fixture
def bare_database() -> Iterator[str]:
    """A database nobody migrated."""
    name = f"pulse_bare_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        drop_database(name)


def test_help_has_a_short_option_and_version_prints_the_installed_one() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run([str(PULSE_SERVER), "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"pulse-server {version}\n")
    commands = [[], ["user"], ["token"], ["migrate"], ["doctor"], ["maintain"], ["serve"], ["seed-demo"],
                ["grant"], ["revoke"], ["erase"], ["user", "add"], ["user", "list"], ["user", "passwd"],
                ["user", "remove"], ["token", "issue"], ["token", "revoke"]]
    for command in commands:
        shown = subprocess.run([str(PULSE_SERVER), *command, "-h"], capture_output=True, text=True, timeout=60,
                               env=clean_env(COLUMNS="80"))
        assert shown.returncode == 0 and shown.stdout.startswith("Usage: pulse-server"), command
        assert all(len(line) <= 80 for line in shown.stdout.splitlines()), shown.stdout
        assert not re.search(r"<[a-z ]+>|\{[A-Z]+\}", shown.stdout), shown.stdout
        cut = [line for line in shown.stdout.splitlines() if line.endswith("...") and "[ARGS]..." not in line]
        assert cut == [], "a summary cut at 80 columns"
        if command not in ([], ["user"], ["token"]):
            assert "Examples:\n    pulse-server " in shown.stdout, command
    user = subprocess.run([str(PULSE_SERVER), "user", "-h"], capture_output=True, text=True, timeout=60).stdout
    assert [w for w in ("add", "list", "passwd", "remove") if re.search(rf"^  {w} ", user, re.M)] == \
        ["add", "list", "passwd", "remove"]


def test_an_unmigrated_database_is_one_line_asking_for_migrate_and_serve_refuses_it(bare_database: str) -> None:
    url = url_of(bare_database)
    line = f"error: database {bare_database} is not migrated: run pulse-server migrate first\n"
    added = admin(url, "user", "add", "ana", "--password-stdin", input=PASSWORD + "\n")
    assert (added.returncode, added.stderr, added.stdout) == (1, line, "")
    for args in (["user", "list"], ["grant", "kim", "ana"], ["maintain"]):
        done = admin(url, *args)
        assert (done.returncode, done.stderr) == (1, line), args
    port = free_port()
    served = admin(url, "serve", "--port", str(port))
    assert (served.returncode, served.stderr, served.stdout) == (1, line, "")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_a_database_behind_the_code_is_refused_and_one_ahead_of_it_is_not(bare_database: str) -> None:
    from alembic import command

    url = url_of(bare_database)
    revisions = sorted(p.name[:4] for p in (ROOT / "pulse_server" / "migrations" / "versions").glob("0*.py"))
    command.upgrade(alembic_config(url), revisions[-2])
    done = admin(url, "user", "list")
    assert (done.returncode, done.stderr) == (
        1, f"error: database {bare_database} is at migration {revisions[-2]}, this server needs {revisions[-1]}:"
           " run pulse-server migrate first\n")
    command.upgrade(alembic_config(url), "head")
    with psycopg.connect(url, autocommit=True) as conn:  # as during a rolling upgrade to a newer server
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    assert admin(url, "user", "list").returncode == 0


def test_serve_says_where_it_listens_and_sends_a_browser_at_the_root_to_the_app(server: ServerProcess) -> None:
    assert f"listening on {server.url}" in server.log_text(400).splitlines()
    root = httpx.get(f"{server.url}/", timeout=10)
    assert (root.status_code, root.headers["location"]) == (307, "/app/")
    assert httpx.get(f"{server.url}/", timeout=10, follow_redirects=True).status_code == 200


def test_serve_on_a_port_in_use_is_one_line_and_exit_1(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = admin(database_url, "serve", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr == (f"error: cannot listen on 127.0.0.1:{port}: address already in use: choose another with"
                           " --port\n")
    assert time.monotonic() - started < 30


def test_user_list_shows_each_user_with_role_and_days_held(
    database_url: str, make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    athlete, coach = make_user(), make_user(coach=True)
    api = client(athlete)
    for offset in range(3):
        day = (dt.date.today() - dt.timedelta(days=offset + 1)).isoformat()
        assert api.put(f"/v1/entries/{day}", json={"steps": 1000 + offset}).status_code == 200
    assert admin(database_url, "grant", coach.username, athlete.username).returncode == 0
    listed = admin(database_url, "user", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    users = {u["username"]: u for u in json.loads(listed.stdout)["users"]}
    assert (users[athlete.username]["role"], users[athlete.username]["days"], users[athlete.username]["grants"]) == \
        ("athlete", 3, 1)
    assert (users[coach.username]["role"], users[coach.username]["days"], users[coach.username]["grants"]) == \
        ("coach", 0, 1)
    expected_total = pg.execute("SELECT count(*) FROM users").fetchone()
    assert expected_total is not None and len(users) == expected_total[0]
    table = admin(database_url, "user", "list").stdout.splitlines()
    assert table[0].split() == ["USERNAME", "ROLE", "DAYS", "LAST", "WRITE", "GRANTS", "ADDED"]
    row = next(line for line in table if line.startswith(athlete.username + " "))
    assert row.split()[1:3] == ["athlete", "3"]


def test_passwd_sets_a_new_password_and_signs_every_device_out(
    database_url: str, make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    user = make_user()
    old_token = user.token
    assert client(user).get("/v1/me").status_code == 200
    done = admin(database_url, "user", "passwd", user.username, "--password-stdin", input="a n3w passphrase\n")
    assert (done.returncode, done.stdout) == (0, f"password of {user.username} changed; 1 token revoked: each device"
                                                 " signs in again\n")
    assert client(User(user.id, user.username, PASSWORD, old_token)).get("/v1/me").status_code == 401
    anonymous = client()
    assert anonymous.post("/v1/auth/token", json={"username": user.username, "password": PASSWORD}).status_code == 401
    assert anonymous.post("/v1/auth/token", json={"username": user.username,
                                                  "password": "a n3w passphrase"}).status_code == 200
    short = admin(database_url, "user", "passwd", user.username, "--password-stdin", input="short\n")
    assert (short.returncode, short.stderr) == (2, "error: password: too short (allowed 8 or more characters)\n")
    nobody = admin(database_url, "user", "passwd", "no-such-user", "--password-stdin", input="a n3w passphrase\n")
    assert (nobody.returncode, nobody.stderr) == (1, "error: user: no user named no-such-user\n")


def rows_of(pg: psycopg.Connection[Any], user_id: int) -> dict[str, int]:
    found = {table: int(pg.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
        sql.Identifier(table), sql.Identifier(column)), (user_id,)).fetchone()[0])  # type: ignore[index]
        for table, column in USER_TABLES.items()}
    found["grants"] = int(pg.execute("SELECT count(*) FROM grants WHERE athlete_id = %s OR coach_id = %s",
                                     (user_id, user_id)).fetchone()[0])  # type: ignore[index]
    found["failed sign-ins"] = int(pg.execute(
        "SELECT count(*) FROM login_throttle WHERE key LIKE 'pair:%%' AND key LIKE '%%/' || %s",
        (json.dumps(name_of(pg, user_id)),)).fetchone()[0])  # type: ignore[index]
    found["shape_log values"] = int(pg.execute(
        "SELECT count(*) FROM shape_log WHERE user_id = %s AND operation <> 'delete'", (user_id,)).fetchone()[0])  # type: ignore[index]
    return found


NAMES: dict[int, str] = {}


def name_of(pg: psycopg.Connection[Any], user_id: int) -> str:
    """A user's name, remembered from before they were removed."""
    row = pg.execute("SELECT username FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is not None:
        NAMES[user_id] = str(row[0])
    return NAMES[user_id]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def with_data_everywhere(user: User, api: Api, pg: psycopg.Connection[Any]) -> None:
    """Entries, a conflict (two devices at one field), exactly-once records, a high-water mark, and the
    shape log's copy of the rows (written by the server's replication reader)."""
    ms = now_ms()
    api.pushed("phone", [set_mutation(1, day(-3), {"steps": 5000}, stamp(ms, 0, "phone"))])
    api.pushed("watch", [set_mutation(1, day(-3), {"steps": 6000}, stamp(ms + 1, 0, "watch"), base={"steps": None})])
    assert api.put(f"/v1/entries/{day(-3)}", json={"sleep_hours": 7}).status_code == 200
    assert api.post("/v1/auth/token", json={"username": user.username, "password": "not it"}).status_code == 401
    pg.execute("INSERT INTO client_high_water (user_id, client_id, seq) VALUES (%s, 'old-phone', 9)", (user.id,))
    wait_until(lambda: pg.execute("SELECT count(*) FROM shape_rows WHERE user_id = %s AND value->>'sleep_hours'"
                                  " IS NOT NULL", (user.id,)).fetchone() == (1,),
               "the replication reader to copy the row as last written")


def test_remove_asks_first_and_an_answer_other_than_yes_removes_nothing(
    database_url: str, make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    with_data_everywhere(user, client(user), pg)
    before = rows_of(pg, user.id)
    done = admin(database_url, "user", "remove", user.username, input="n\n")
    assert done.returncode == 1 and done.stderr == "nothing removed\n"
    said = " ".join(done.stdout.split())
    assert said.startswith(f"{user.username} (athlete) has on this server: 1 entry, 1 conflict, 3 sync records,"
                           f" 1 token, 0 grants. Removing {user.username} erases all of it here, for good:")
    assert "can no longer sign in or sync, and keep what they hold" in said and said.endswith(f"Remove {user.username}?"
                                                                                            " [y/N]:")
    assert rows_of(pg, user.id) == before


def test_remove_erases_the_users_rows_in_every_table_and_leaves_others_alone(
    database_url: str, make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    gone, kept, coach = make_user(), make_user(), make_user(coach=True)
    for user in (gone, kept):
        with_data_everywhere(user, client(user), pg)
        assert admin(database_url, "grant", coach.username, user.username).returncode == 0
    kept_before = rows_of(pg, kept.id)
    assert min(v for k, v in rows_of(pg, gone.id).items() if k not in ("scope_versions", "erasures")) > 0
    done = admin(database_url, "user", "remove", gone.username, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (f"removed {gone.username}: erased 1 entry, 1 conflict, 3 sync records,"
                                            " 1 token, 1 grant")
    assert pg.execute("SELECT count(*) FROM users WHERE id = %s", (gone.id,)).fetchone() == (0,)
    # The removal is an erasure of the whole account (docs/erasure.md): when the replication reader reads
    # it, it logs the entry's delete and purges the log of the user's earlier changes.
    wait_until(lambda: pg.execute("SELECT count(*) FILTER (WHERE operation = 'delete'), count(*) FROM shape_log"
                                  " WHERE user_id = %s", (gone.id,)).fetchone() == (1, 1),
               "the reader to log the erased entry and purge the rest")
    assert all(count == 0 for count in rows_of(pg, gone.id).values()), rows_of(pg, gone.id)
    # What the reader logs of an erased entry is its key: no value of the user's is left.
    (value,) = pg.execute("SELECT value FROM shape_log WHERE user_id = %s", (gone.id,)).fetchone()  # type: ignore[misc]
    assert all(value.get(f) is None for f in ("steps", "sleep_hours", "hrv_ms", "weight_kg", "note")), value
    assert rows_of(pg, kept.id) == kept_before
    assert client(gone).get("/v1/me").status_code == 401
    signed = client().post("/v1/auth/token", json={"username": gone.username, "password": PASSWORD})
    assert signed.status_code == 401

    # A coach removed: their grants and scope version go; the athletes keep everything of theirs.
    assert rows_of(pg, coach.id)["scope_versions"] == 1
    done = admin(database_url, "user", "remove", coach.username, "--yes")
    assert done.returncode == 0, done.stderr
    assert "The athletes who granted" in " ".join(done.stdout.split())
    assert all(count == 0 for count in rows_of(pg, coach.id).values())
    assert rows_of(pg, kept.id) == {**kept_before, "grants": 0}
