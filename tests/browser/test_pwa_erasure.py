"""Erasure reaches the PWA as it reaches every device (docs/erasure.md), with the CLI devices beside it.

The PWA, two CLI devices of the same athlete and their coach's device hold the athlete's days; the PWA
then goes offline with a change queued to one of those days. After one device erases the days and each
of the others syncs once (the PWA: when it is back online), no IndexedDB record or cache of the browser,
no table or byte of any device's store and no Postgres table holds a value of those days (searched by
their text: a note no one else writes, a weight with odd hundredths); the PWA's queued change is refused
and listed, never applied. A whole account erased leaves the PWA's database too, at the refusal of its
token.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

import psycopg
from browser_support import Target, eventually, log_day, outbox, sign_in, wait_pill
from calendar_days import day
from erasure_search import postgres_holding, sqlite_holding
from playwright.sync_api import BrowserContext, Page, expect
from sync_support import PASSWORD, PULSE_SERVER, Device, PulseServer, User, clean_env, wait_for

from pulse_server.accounts import add_user, find_user, grant
from pulse_server.db.database import Database


def _values() -> tuple[str, str]:
    return f"erase-me-{secrets.token_hex(5)}", f"1{secrets.randbelow(90) + 10}.{secrets.randbelow(80) + 11}"


def _stored_text(page: Page) -> str:
    """Every IndexedDB record and cached response of the browser profile, as one text."""
    from browser_support import everything_stored

    return json.dumps(everything_stored(page))


def _athlete(target: Target, db: Database) -> User:
    with db.session() as session:
        row = find_user(session, target.username)
        assert row is not None and row.id is not None
        return User(row.id, row.username)


def _coach_device(target: Target, db: Database, server: PulseServer, home: Any) -> Device:
    with db.session() as session:
        row = add_user(session, f"coach-{secrets.token_hex(4)}", PASSWORD, True)
        athlete = find_user(session, target.username)
        assert row.id is not None and athlete is not None
        grant(session, athlete, row.username)
        coach = User(row.id, row.username)
    device = Device("coach", home, server.url)
    assert device.login(coach).returncode == 0
    return device


def test_an_erasure_leaves_nothing_of_its_days_in_the_pwa_or_any_device_and_refuses_the_pwas_queued_change(
    target: Target, page: Page, context: BrowserContext, db: Database, pg: psycopg.Connection[Any],
    cloud_server: PulseServer, tmp_path: Any,
) -> None:
    ana = _athlete(target, db)
    note, weight = _values()
    sign_in(page, target)
    log_day(page, day(-6), weight_kg=weight, note=note)
    wait_pill(page, "Online · synced")
    a, b = target.new_device("A"), target.new_device("B")
    coach = _coach_device(target, db, cloud_server, tmp_path / "coach")
    a.log(day(-5), sleep_hours="7.25", note=note)
    a.log(day(-3), steps=5000)  # after the erased days
    a.synced()
    target.settle()
    for device in (b, coach):
        device.synced()
    eventually(page, "d => window.pulse.engine.view.has(d)", 20, "A's day in the PWA", day(-5))

    context.set_offline(True)
    wait_pill(page, "Offline")
    offline = f"offline-{secrets.token_hex(4)}"
    log_day(page, day(-5), note=offline)  # queued in the browser while the days are erased
    needles = [note, weight]
    assert note in _stored_text(page) and weight in _stored_text(page)
    for device in (a, b, coach):
        assert sqlite_holding(device.home / "pulse.db", needles), f"{device.name} should hold them before"

    a.ok("erase", "--from", day(-6), "--to", day(-4), "--yes")
    b.synced()
    coach.synced()
    context.set_offline(False)  # the PWA's sync: its queue pushed, the erasures fetched, the shape pulled

    queued = eventually(page, "() => window.pulse.engine.outbox.filter((m) => m.status === 'rejected')", 30,
                        "the PWA's queued change refused")
    assert [(m["date"], m["fields"], m["result"]["error"]["code"]) for m in queued] == [
        (day(-5), {"note": offline}, "erased")]
    eventually(page, "([n, w]) => !JSON.stringify([...window.pulse.engine.view.values()]).includes(n)", 30,
               "the erased days to leave the PWA's view", [note, weight])
    wait_for(lambda: note not in _stored_text(page), 30, "the PWA's database to let go of the note")
    stored = _stored_text(page)
    assert note not in stored and weight not in stored
    assert sorted(d for d in page.evaluate("[...window.pulse.engine.view.keys()]")) == [day(-3)]
    wait_for(lambda: not postgres_holding(pg, ana.id, [*needles, offline]), 20, "Postgres to let go of the values")
    for device in (a, b, coach):
        assert sqlite_holding(device.home / "pulse.db", needles) == {}, device.name
    assert target.stored(day(-5)) is None and target.stored(day(-6)) is None

    # The refused change is listed with the server's reason until it is discarded.
    page.goto(target.app_url + "#sync")
    rejected = page.locator("#rejected-list li[data-seq]")
    expect(rejected).to_have_count(1)
    expect(rejected.nth(0).locator(".message")).to_contain_text(f"the entries of {day(-6)} to {day(-4)} were erased")
    rejected.nth(0).get_by_role("button", name="Discard").click()
    expect(rejected).to_have_count(0)
    assert offline not in _stored_text(page)
    assert all(m["status"] == "done" and m["date"] not in (day(-6), day(-5), day(-4)) for m in outbox(page))


def test_a_whole_account_erased_leaves_the_pwa_at_the_refusal_of_its_token(
    target: Target, page: Page, db: Database, database_url: str,
) -> None:
    note, weight = _values()
    sign_in(page, target)
    log_day(page, day(-2), weight_kg=weight, note=note)
    wait_pill(page, "Online · synced")
    done = subprocess.run([str(PULSE_SERVER), "erase", "--user", target.username, "--yes"], capture_output=True,
                          text=True, env=clean_env(PULSE_DATABASE_URL=database_url), timeout=60)
    assert done.returncode == 0, done.stderr
    page.evaluate("window.pulse.engine.exchangeConflicts()")  # its next exchange with the server
    eventually(page, "() => window.pulse.engine.needsSignIn", 30, "the PWA to ask to sign in again")
    wait_for(lambda: note not in _stored_text(page), 30, "the PWA's database to let go of the note")
    assert weight not in _stored_text(page)
    assert page.evaluate("window.pulse.engine.view.size") == 0
