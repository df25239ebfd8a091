"""Clocks and calendars, with real processes whose clocks are shifted (libfaketime) or zoned (TZ=):

- a device whose clock runs behind still makes an edit after the value it saw outrank it (its clock
  takes in every stamp it pulls);
- a device whose clock runs ahead learns its offset at login, stamps and dates by the corrected clock,
  and says how far off it is;
- "one day ahead" is the user's day, not the server's: the device sends its zone with its pushes, and a
  date that is merely early is held and sent again, not rejected for good.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sync_support import (
    Device,
    PulseServer,
    User,
    applied_mutations,
    day,
    server_entries,
    shifted_clock,
    wait_replicated,
)

pytestmark = pytest.mark.e2e


def steps_on(pg: psycopg.Connection[Any], user: User, date: str) -> int | None:
    row = pg.execute("SELECT steps FROM entries WHERE user_id = %s AND date = %s", (user.id, date)).fetchone()
    return None if row is None else row[0]


def test_an_edit_made_after_seeing_a_value_wins_on_a_device_whose_clock_runs_behind(
    make_user: Callable[..., User], server: PulseServer, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user = make_user()
    a = Device("A", tmp_path / "A", server.url)
    b = Device("B", tmp_path / "B", server.url, env=shifted_clock("-3h"))
    for device in (a, b):
        assert device.login(user).returncode == 0
    # B's store as one from before login learned offsets: its clock is 3 h behind and it does not know.
    b.set_meta("clock_offset_ms", "0")
    a.log(day(-1), steps=5000)
    a.synced()
    wait_replicated(pg, user.id)
    b.synced()  # nothing to push: B only pulls A's value
    assert b.history(day(-1), day(-1))[0]["steps"] == 5000
    b.log(day(-1), steps=6000)
    done = b.synced()
    assert "conflict" not in done.stdout, done.stdout
    assert steps_on(pg, user, day(-1)) == 6000
    wait_replicated(pg, user.id)
    a.synced()
    for device in (a, b):
        assert device.history(day(-1), day(-1))[0]["steps"] == 6000, device


def test_a_device_whose_clock_runs_ahead_stamps_and_dates_by_the_servers_time(
    make_user: Callable[..., User], server: PulseServer, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user = make_user()
    a = Device("A", tmp_path / "A", server.url)
    c2 = Device("C2", tmp_path / "C2", server.url, env=shifted_clock("+2d"))
    assert a.login(user).returncode == 0
    login = c2.login(user)
    assert login.returncode == 0, login.stderr
    assert "2 days ahead of the server's" in login.stdout
    status = c2.status()
    assert abs(status["clock_offset_ms"] + 2 * 86_400_000) < 60_000, status
    assert status["clock"].startswith("this device's clock is 2 days ahead")

    # Offline, C2 writes a note dated by its corrected clock (today, not two days on); A corrects it after.
    noted = c2.json("log", "--note", "from C2")
    assert noted["entry"]["date"] == day(0)
    a.log(day(0), note="the correction")
    a.synced()
    done = c2.synced()
    assert "rejected" not in done.stdout, done.stdout
    wait_replicated(pg, user.id)
    for device in (a, c2):
        device.synced()
        assert device.history(day(0), day(0))[0]["note"] == "the correction", device
    (entry,) = server_entries(a.server_url, a_token(a), day(0), day(0))
    assert entry["note"] == "the correction"


def a_token(device: Device) -> str:
    import json

    return str(json.loads((device.home / "credentials.json").read_text())["token"])


# -- the user's calendar ----------------------------------------------------------------------------
EVENING_UTC = "2026-12-03 20:00:00"  # in Kiritimati (UTC+14) already 2026-12-04 10:00
# A server on a set clock issues tokens that expire 30 days after *its* date, while Postgres checks them
# against the real one: tokens good for a century keep these tests working on any day they run.
FAR_TOKENS = {"PULSE_TOKEN_TTL_DAYS": "36500"}


@pytest.fixture
def evening_server(database_url: str, tmp_path: Path) -> Iterator[Callable[[str], PulseServer]]:
    """`pulse-server` whose clock starts at the given UTC time (and runs), on the session's database."""
    started: list[PulseServer] = []

    def start(at: str) -> PulseServer:
        env = {"PULSE_DATABASE_URL": database_url, "PULSE_LOGIN_FREE_FAILURES": "100000",
               "PULSE_LOGIN_ADDRESS_FREE_FAILURES": "100000",
               "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", "TZ": "UTC",
               **FAR_TOKENS, **shifted_clock(f"@{at}")}
        server = PulseServer(tmp_path / f"server-{len(started)}.log", env,
                             port=started[-1].port if started else None)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.close()


def test_tomorrow_is_the_users_tomorrow_where_the_user_is(
    make_user: Callable[..., User], evening_server: Callable[[str], PulseServer], pg: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    server = evening_server(EVENING_UTC)
    user = make_user()
    device = Device("K", tmp_path / "K", server.url, env={"TZ": "Pacific/Kiritimati"})
    assert device.login(user).returncode == 0  # learns the server's time: its "today" is 2026-12-04
    logged = device.json("log", "--date", "tomorrow", "--steps", "4321")
    assert logged["entry"]["date"] == "2026-12-05"
    done = device.synced()
    assert "1 applied" in done.stdout and "held" not in done.stdout, done.stdout
    assert steps_on(pg, user, "2026-12-05") == 4321  # the server's own date is still 2026-12-03
    row = pg.execute("SELECT utc_offset_min FROM users WHERE id = %s", (user.id,)).fetchone()
    assert row == (14 * 60,)


def test_a_date_merely_early_is_held_and_lands_once_its_day_comes(
    make_user: Callable[..., User], evening_server: Callable[[str], PulseServer], pg: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    server = evening_server(EVENING_UTC)
    user = make_user()
    # A device a day ahead that has not heard from the server since (a store from before logins learned
    # the server's time): it dates "tomorrow" two days past the server's today.
    device = Device("D", tmp_path / "D", server.url, env={"TZ": "UTC", **shifted_clock("@2026-12-04 20:00:00")})
    assert device.login(user).returncode == 0
    device.set_meta("clock_offset_ms", "0")
    logged = device.json("log", "--date", "tomorrow", "--steps", "1111")
    assert logged["entry"]["date"] == "2026-12-05"
    for _ in range(2):
        done = device.synced()  # exit 0: nothing refused for good
        assert "1 change held" in done.stdout, done.stdout
        assert device.outbox_counts() == {"pending": 1}
        assert device.json("rejected")["rejected"] == []
    assert applied_mutations(pg, user.id) == []  # never recorded: welcome again once its day comes
    assert steps_on(pg, user, "2026-12-05") is None

    server.close()
    server = evening_server("2026-12-04 20:00:00")  # a day later on the server
    done = device.synced()
    assert "1 applied" in done.stdout, done.stdout
    assert steps_on(pg, user, "2026-12-05") == 1111
    assert device.outbox_counts() == {"applied": 1}
    assert [status for _, _, status in applied_mutations(pg, user.id)] == ["applied"]


def test_the_clock_tests_use_a_clock_that_really_moves() -> None:
    """faketime's "@" start time runs on: a server started at EVENING_UTC is not frozen there."""
    import subprocess
    import sys

    env = {**shifted_clock(f"@{EVENING_UTC}"), "TZ": "UTC"}
    code = "import time, datetime as d; a = time.time(); time.sleep(0.3); print(time.time() - a, d.datetime.now())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    elapsed, _, when = done.stdout.strip().partition(" ")
    assert float(elapsed) >= 0.25, done.stdout
    assert when.startswith("2026-12-03 20:00:0"), done.stdout
    assert dt.date.fromisoformat(when[:10]) == dt.date(2026, 12, 3)
