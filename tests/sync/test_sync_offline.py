"""Offline and account behaviour of the CLI: nothing typed is ever lost, and nothing waits for nothing.

- With the server unreachable, `pulse log` works at once without the network; `pulse sync` exits 3 with
  "offline: N changes queued"; while the persisted breaker is open, a `pulse sync` costs one short probe,
  and the first one after the server is back goes through.
- An expired or revoked token stops sync with "log in again" (exit 1) and keeps the outbox; after
  `pulse login` everything lands.
- `pulse logout` refuses while changes are pending (exit 4) unless --discard; a home holding one user's data
  refuses another user's login.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fault_proxy import HttpFaultProxy
from sync_support import (
    PASSWORD,
    PULSE_SERVER,
    Device,
    PulseServer,
    User,
    applied_mutations,
    clean_env,
    day,
    server_entries,
)

from pulse_server.accounts import add_user, remove_user
from pulse_server.db.database import Database

pytestmark = pytest.mark.e2e

@pytest.fixture
def proxy(server: PulseServer) -> Iterator[HttpFaultProxy]:
    proxy = HttpFaultProxy(("127.0.0.1", server.port))
    yield proxy
    proxy.close()


def run_watching_imports(device: Device, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`pulse ARGS` with Python's import log on (PYTHONPROFILEIMPORTTIME): its result, with the import log
    taken out of its stderr, and the top-level packages it imported."""
    watched = Device(device.name, device.home, device.server_url, {**device.env, "PYTHONPROFILEIMPORTTIME": "1"})
    done = watched.run(*args)
    log = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    modules = {line.rpartition("|")[2].strip().split(".")[0] for line in log}
    stderr = "".join(line + "\n" for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, stderr), modules


def test_offline_the_cli_answers_at_once_and_keeps_every_change_queued(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    proxy: HttpFaultProxy, server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a = make_device("A", proxy.url)
    assert a.login(user).returncode == 0
    a.log(day(-3), steps=100)
    a.synced()
    proxy.blackhole()  # a server that would keep anyone who connects waiting

    attempts = proxy.connections
    done, modules = run_watching_imports(a, "log", "--date", day(-2), "--sleep", "7.5")
    assert done.returncode == 0, done.stderr
    assert "pulse_cli" in modules and "httpx" not in modules, "logging does not even load the HTTP stack"
    a.log(day(-1), note="written offline")
    assert proxy.connections == attempts, "logging never touches the network"

    proxy.down()  # refused at once: the first sync finds out quickly (its retries, then exit 3)
    done = a.sync()
    assert done.returncode == 3, done.stderr
    assert "offline: 2 changes queued" in done.stderr
    assert not done.stderr.startswith("error"), "offline is not an error: one plain line"
    assert a.status()["breaker"] == "open"
    # From now on a connection attempt would hang until the client's 10 s timeout.
    proxy.blackhole()
    attempts = proxy.connections

    # `pulse status` never touches the network (nor loads httpx); `pulse sync` the user types always
    # tries, but while the breaker is open it first sends one short probe, so a server still away costs
    # one connection and about two seconds, not a whole round of retries against a 10 s timeout: the
    # probe's answer names no cause, a round's would ("timed out").
    for command in ("status", "sync", "status", "sync"):
        done, modules = run_watching_imports(a, command)
        assert done.returncode == (3 if command == "sync" else 0), done.stderr
        if command == "sync":
            assert done.stderr.strip() == f"offline: 2 changes queued (cannot reach {proxy.url})", done.stderr
        else:
            assert "httpx" not in modules, "pulse status loaded the HTTP stack"
    assert proxy.connections == attempts + 2, "exactly one probe per pulse sync, none for pulse status"
    status = a.status()
    assert (status["pending"], status["breaker"]) == (2, "open")
    assert status["breaker_retry_in_s"] > 0

    # The server is back: the very next `pulse sync` goes through, breaker or not.
    proxy.up()
    a.synced()
    assert a.outbox_counts() == {"applied": 3}
    on_server = server_entries(server.url, token_for(user), day(-3), day(0))
    assert [(e["date"], e["steps"], e["sleep_hours"], e["note"]) for e in on_server] == [
        (day(-3), 100, None, None), (day(-2), None, 7.5, None), (day(-1), None, None, "written offline")]
    assert a.status()["breaker"] == "closed"


def test_an_expired_or_revoked_token_stops_sync_keeps_the_outbox_and_login_resumes(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any], database_url: str,
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-6), steps=600)
    a.synced()

    # Expired, with nothing to push: the pull is refused.
    pg.execute("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE user_id = %s", (user.id,))
    done = a.sync()
    assert done.returncode == 1, done.stderr
    assert "log in again" in done.stderr
    assert a.login(user).returncode == 0
    a.synced()

    # Revoked, with changes queued: the push is refused, the changes stay.
    a.log(day(-5), steps=500)
    a.log(day(-4), note="kept through a revoked token")
    revoke = subprocess.run([str(PULSE_SERVER), "token", "revoke", user.username], capture_output=True, text=True,
                            env=clean_env(PULSE_DATABASE_URL=database_url), timeout=60)
    assert revoke.returncode == 0, revoke.stderr
    for _ in range(2):
        done = a.sync()
        assert done.returncode == 1, done.stderr
        assert "log in again" in done.stderr
        assert "2 queued changes are kept" in done.stderr
    assert a.outbox_counts() == {"applied": 1, "pending": 2}
    assert a.status()["breaker"] == "closed", "a refused token is not an outage"

    login = a.login(user)
    assert login.returncode == 0, login.stderr
    assert "2 changes to sync" in login.stdout
    a.synced()
    assert a.outbox_counts() == {"applied": 3}
    assert len(applied_mutations(pg, user.id)) == 3
    notes = [e["note"] for e in server_entries(server.url, token_for(user), day(-6), day(0))]
    assert notes == [None, None, "kept through a revoked token"]


def test_logout_refuses_while_changes_are_pending_unless_discarded(
    make_device: Callable[..., Device], make_user: Callable[..., User],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-2), steps=1)
    a.synced()
    a.log(day(-1), steps=2)

    done = a.run("logout")
    assert done.returncode == 4, done.stderr  # docs/cli.md: refused, because it would lose data
    assert "1 change is not synced yet and would be lost" in done.stderr
    assert a.status()["logged_in"] is True

    done = a.run("logout", "--discard")
    assert done.returncode == 0, done.stderr
    assert "1 unsynced change discarded" in done.stdout
    assert a.status()["logged_in"] is False
    assert a.outbox_counts() == {"applied": 1, "discarded": 1}

    assert a.login(user).returncode == 0
    a.synced()
    assert a.outbox_counts() == {"applied": 1, "discarded": 1}, "a discarded change is never pushed"
    assert a.run("logout").returncode == 0, "nothing pending: logout just works"


def test_a_change_discarded_at_logout_leaves_the_local_view_at_once(
    make_device: Callable[..., Device], make_user: Callable[..., User],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-2), steps=1)
    a.synced()
    a.log(day(-2), steps=2)
    a.log(day(-1), note="never synced")
    assert a.run("logout", "--discard").returncode == 0

    shown = [(e["date"], e["steps"], e["note"]) for e in a.history(day(-3), day(0))]
    assert shown == [(day(-2), 1, None)], "the view is the server's state plus pending changes, and none is pending"


def test_a_home_with_one_users_data_refuses_another_users_login(
    make_device: Callable[..., Device], make_user: Callable[..., User],
) -> None:
    ana, bob = make_user("ana"), make_user("bob")
    a = make_device("A")
    a.log(day(-1), steps=1234)  # logged before any login: adopted by the first one
    assert a.login(ana).returncode == 0
    a.synced()
    assert a.run("logout").returncode == 0

    done = a.login(bob)
    assert done.returncode == 1
    assert f"this home holds the data of {ana.username}" in done.stderr
    assert "use another --home" in done.stderr
    status = a.status()
    assert (status["logged_in"], status["username"]) == (False, ana.username)

    assert a.login(ana).returncode == 0, "its own user may come back"
    assert [e["steps"] for e in a.history(day(-1), day(-1))] == [1234]


def test_a_home_of_a_removed_account_refuses_the_login_of_whoever_is_given_its_name_later(
    make_device: Callable[..., Device], make_user: Callable[..., User], db: Database, database_url: str,
) -> None:
    ana = make_user("ana")
    a = make_device("A")
    assert a.login(ana).returncode == 0
    a.log(day(-1), note="the first ana's")
    a.synced()
    a.log(day(0), note="the first ana's, not synced")
    with psycopg.connect(database_url) as conn:  # the operator removes the account...
        remove_user(conn, ana.id, ana.username, int(time.time() * 1000))
    with db.session() as session:  # ...and later gives its name to someone else
        new = add_user(session, ana.username, PASSWORD, False)

    done = a.login(User(int(new.id or 0), ana.username))
    assert done.returncode == 1
    assert f"this home holds the data of an earlier account named {ana.username}" in done.stderr
    assert "use another --home" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert a.run("sync").returncode != 0  # the first ana's token is refused, and no other was kept
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM entries WHERE user_id = %s", (new.id,)).fetchone() == (0,)


def test_with_nothing_queued_sync_also_answers_offline_within_seconds(
    make_device: Callable[..., Device], make_user: Callable[..., User], proxy: HttpFaultProxy,
) -> None:
    user = make_user()
    a = make_device("A", proxy.url)
    assert a.login(user).returncode == 0
    a.log(day(-1), steps=1)
    a.synced()
    proxy.down()

    started = time.perf_counter()
    try:
        done = a.run("sync", timeout=12)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pulse sync was still waiting for the server after {time.perf_counter() - started:.0f} s")
    assert done.returncode == 3, done.stderr
    assert "offline: 0 changes queued" in done.stderr
