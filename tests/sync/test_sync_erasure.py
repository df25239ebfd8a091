"""Erasure reaching every device (docs/erasure.md), with real `pulse` processes and a real server.

An athlete's two devices, a third device that goes offline with changes queued, and a coach's device all
hold the athlete's days; after the erasure and one sync each, no table of Postgres, no table of any
device's store and no byte of any store's files holds a value of the erased days (searched by their text:
a note no one else writes and a weight with odd hundredths), and the offline device's queued changes to
those days are refused, not brought back, while its change to another day is taken.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from erasure_search import postgres_holding, sqlite_holding
from sync_support import PULSE_SERVER, Device, PulseServer, ServedDevice, User, clean_env, day, wait_for

from pulse_server.accounts import add_user, find_user, grant
from pulse_server.db.database import Database

pytestmark = pytest.mark.e2e


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


def values() -> tuple[str, str]:
    """A note no other test writes, and a weight with odd hundredths, as `pulse log` takes and stores them."""
    return f"erase-me-{secrets.token_hex(5)}", f"1{secrets.randbelow(90) + 10}.{secrets.randbelow(80) + 11}"


def store(device: Device) -> Any:
    return device.home / "pulse.db"


def coach_days(coach_device: Device, athlete: User) -> set[str]:
    """The days of an athlete in a coach's local view (what its reports read)."""
    with coach_device.store() as conn:
        rows = conn.execute("SELECT date FROM entries WHERE user_id = ? AND deleted = 0", (athlete.username,))
        return {str(r[0]) for r in rows}


def erased_from_postgres(pg: psycopg.Connection[Any], user: User, needles: list[str]) -> None:
    """Wait until no table holds the needles (the replication reader logs the deletes after the erasure)."""
    wait_for(lambda: not postgres_holding(pg, user.id, needles), 20, "Postgres to let go of the erased values")


def test_an_erasure_leaves_no_value_of_its_days_on_any_device_and_refuses_the_offline_devices_changes(
    make_device: Callable[..., Device], make_user: Callable[..., User], db: Database, pg: psycopg.Connection[Any],
) -> None:
    ana = make_user()
    coach = make_coach(db, ana)
    a, b, c, k = make_device("A"), make_device("B"), make_device("C"), make_device("coach")
    for device, who in ((a, ana), (b, ana), (c, ana), (k, coach)):
        assert device.login(who).returncode == 0
    note, weight = values()
    kept_note = f"kept-{secrets.token_hex(4)}"
    first, last = day(-6), day(-4)
    a.log(day(-7), steps=4000, note=kept_note)  # before the range
    a.log(day(-6), weight_kg=weight, note=note)
    a.log(day(-5), sleep_hours=7.25, note=note)
    a.synced()
    b.log(day(-5), note=f"{note}-b")  # without having seen A's note: the audit records both
    b.synced()
    b.log(day(-4), steps=7321, weight_kg=weight)
    b.log(day(-3), steps=5000)  # after the range
    b.synced()
    for device in (a, c, k):
        device.synced()
    offline = f"offline-{secrets.token_hex(4)}"
    c.log(day(-6), note=offline)  # queued on C, which now stays offline while A erases
    c.log(day(-3), steps=6100)
    assert coach_days(k, ana) >= {day(-6), day(-5), day(-4)}
    needles = [note, weight]
    for device in (a, b, c, k):
        assert sqlite_holding(store(device), needles), f"{device.name} should hold the values before"
    assert postgres_holding(pg, ana.id, needles)

    refused = k.run("erase", "--from", first, "--to", last, "--yes")
    assert refused.returncode == 1 and "coach" in refused.stderr
    done = a.json("erase", "--from", first, "--to", last, "--yes")
    assert (done["erasure"]["from"], done["erasure"]["to"]) == (first, last)
    assert done["removed"]["entries"] == 3 and done["removed"]["conflicts"] >= 1
    assert sqlite_holding(store(a), needles) == {}, "the erasing device drops the days at once"

    for device in (b, k, a, c):
        device.synced()
    erased_from_postgres(pg, ana, needles)
    for device in (a, b, c, k):
        assert sqlite_holding(store(device), needles) == {}, device.name

    # C's change to an erased day was made before the erasure: refused, listed, never applied.
    rejected = c.json("rejected")["rejected"]
    assert [(r["date"], r["fields"], r["error"]["code"]) for r in rejected] == [(first, {"note": offline}, "erased")]
    assert not postgres_holding(pg, ana.id, [offline])
    # Its change to another day was taken; the days outside the range are everywhere still.
    expected = {day(-7): kept_note, day(-3): None}
    for device in (a, b, c):
        assert {e["date"]: e["note"] for e in device.history(day(-8), day(-1))} == expected, device.name
    assert coach_days(k, ana) == set(expected)
    assert [e["steps"] for e in c.history(day(-3), day(-3))] == [6100]
    for device in (a, b, k):
        verified = device.run("verify")
        assert verified.returncode == 0, f"{device.name}: {verified.stdout}{verified.stderr}"

    # A write to an erased day made now is taken, on any device.
    b.log(first, steps=1001)
    b.synced()
    a.synced()
    assert [e["steps"] for e in a.history(first, first)] == [1001]


def _erase_account(database_url: str, username: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PULSE_SERVER), "erase", "--user", username, "--yes"], capture_output=True, text=True,
                          env=clean_env(PULSE_DATABASE_URL=database_url), timeout=60)


def test_a_whole_account_erased_is_dropped_by_its_devices_at_the_refused_sync_and_by_its_coach(
    make_device: Callable[..., Device], make_user: Callable[..., User], db: Database, pg: psycopg.Connection[Any],
    database_url: str,
) -> None:
    ana = make_user()
    coach = make_coach(db, ana)
    a, k = make_device("A"), make_device("coach")
    assert a.login(ana).returncode == 0 and k.login(coach).returncode == 0
    note, weight = values()
    a.log(day(-3), note=note, weight_kg=weight)
    a.synced()
    k.synced()
    a.log(day(-2), note=f"{note}-queued")  # queued when the account is erased
    done = _erase_account(database_url, ana.username)
    assert done.returncode == 0, done.stderr
    assert "revoked 1 token and removed 1 grant" in done.stdout

    refused = a.sync()
    assert refused.returncode == 1
    assert f"every entry of {ana.username} was erased on the server" in refused.stderr
    k.synced()
    erased_from_postgres(pg, ana, [note, weight])
    assert sqlite_holding(store(a), [weight]) == {}
    # The queued change (it holds the note's text) is refused, and kept for the user to see and discard.
    assert [(r["date"], r["error"]["code"]) for r in a.json("rejected")["rejected"]] == [(day(-2), "erased")]
    assert a.history(day(-9), day(0)) == []
    assert sqlite_holding(store(k), [note, weight]) == {}

    assert a.login(ana).returncode == 0  # the account stays: signing in again starts afresh
    a.log(day(-1), steps=4242)
    a.synced()
    assert [(e["date"], e["steps"]) for e in a.history(day(-9), day(0))] == [(day(-1), 4242)]


def test_the_device_app_serves_its_erasures_and_refuses_a_browsers_earlier_write_to_an_erased_day(
    make_device: Callable[..., Device], make_user: Callable[..., User], tmp_path: Any, server: PulseServer,
) -> None:
    ana = make_user()
    a = make_device("A")
    assert a.login(ana).returncode == 0
    a.log(day(-2), steps=1234)
    a.synced()
    served = ServedDevice(a, tmp_path / "serve.log")
    try:
        token = served.token(ana)
        before = _stamp_ms(a) - 1_000  # a browser's change made before the erasure
        erasure = a.json("erase", "--from", day(-2), "--to", day(-2), "--yes")["erasure"]
        listed = _get(served, token, "/v1/erasures")
        assert listed == {"erasures": [erasure], "last": erasure["id"]}
        assert _get(served, token, "/v1/erasures", after=str(erasure["id"])) == {
            "erasures": [], "last": erasure["id"]}
        pushed = served.push(token, [
            {"seq": 1, "date": day(-2), "op": "set", "fields": {"steps": 99}, "base": {"steps": None},
             "hlc": f"{before:016d}:00000:browser0000000001"},
            {"seq": 2, "date": day(-2), "op": "set", "fields": {"steps": 98}, "base": {"steps": None},
             "hlc": f"{erasure['erased_at_ms'] + 5:016d}:00000:browser0000000001"},
        ])
        assert pushed.status_code == 200, pushed.text
        results = pushed.json()["results"]
        assert [r["status"] for r in results] == ["rejected", "applied"]
        assert results[0]["error"]["code"] == "erased"
    finally:
        served.close()
    a.synced()
    assert [e["steps"] for e in a.history(day(-2), day(-2))] == [98]


def _stamp_ms(device: Device) -> int:
    last = device.meta("hlc_last")
    assert last is not None
    return int(last.split(":")[0])


def _get(served: ServedDevice, token: str, path: str, **params: str) -> Any:
    import httpx

    response = httpx.get(f"{served.url}{path}", params=params, headers={"authorization": f"Bearer {token}"},
                         timeout=10)
    assert response.status_code == 200, response.text
    return json.loads(response.text)
