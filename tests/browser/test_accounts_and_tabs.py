"""One browser profile, several accounts and tabs (docs/pwa.md, "Accounts and tabs").

Each account's rows, queue and cursor live in a database of its own and reach the server only under
that account's token; a tab whose account was signed out or replaced in another tab stops, hides what it
showed and says so; signing in as someone else while the signed-in account has unsynced changes asks
first and keeps them for their owner unless discarded. Every test looks behind the screens: at Postgres
(entries and applied_mutations) and at every IndexedDB store and cache of the profile.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from browser_support import (
    Target,
    database_names,
    everything_stored,
    log_day,
    outbox,
    ready,
    sign_in,
    sign_out,
    wait_pill,
)
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, expect
from sync_support import wait_for

from pulse_server.accounts import add_user, find_user, remove_user
from pulse_server.db.database import Database

REFUSED_WRITE = """(date) => window.pulse.engine.write(date, 'set', { note: 'typed in a stopped tab' })
  .then(() => 'written', (error) => error.name)"""

PG = psycopg.Connection[tuple[Any, ...]]


def applied(pg: PG, *usernames: str) -> list[tuple[str, str, int]]:
    """The server's exactly-once records of these users: (username, client_id, seq)."""
    rows = pg.execute("SELECT u.username, a.client_id, a.seq FROM applied_mutations a JOIN users u ON u.id = a.user_id"
                      " WHERE u.username = ANY(%s) ORDER BY 1, 2, 3", (list(usernames),)).fetchall()
    return [(str(name), str(client), int(seq)) for name, client, seq in rows]


def where(stored: dict[str, Any], text: str) -> set[str]:
    """The databases and caches whose contents (or names) contain `text`."""
    found = {name for name, stores in stored["databases"].items() if text in name + json.dumps(stores)}
    found |= {name for name, entries in stored["caches"].items() if text in json.dumps(entries)}
    return found


def account_db(page: Page, username: str) -> str:
    """The name of an account's database, as the app derives it."""
    name: str = page.evaluate("(u) => import('./js/store.js').then((store) => store.accountDbName(u))", username)
    return name


def screens_text(page: Page, app_url: str) -> str:
    """The text of every screen of the app, visited one after the other."""
    text = []
    for screen in ("today", "history", "sync"):
        page.goto(f"{app_url}#{screen}")
        expect(page.locator(f"#screen-{screen}")).to_be_visible()
        text.append(page.locator("body").inner_text())
    return "\n".join(text)


def test_a_tab_whose_account_was_replaced_stops_and_bob_gets_nothing_of_ana(
    page: Page, context: BrowserContext, new_tab: Callable[[], Page], target: Target, another_target: Target,
    pg: PG,
) -> None:
    ana, bob = target, another_target
    ana_note, bob_note = f"ana only {secrets.token_hex(4)}", f"bob only {secrets.token_hex(4)}"

    # Tab B waits on the sign-in screen; tab A signs in as ana and B follows without a reload.
    tab_b = new_tab()
    tab_b.goto(ana.app_url)
    ready(tab_b)
    expect(tab_b.get_by_role("heading", name="Sign in")).to_be_visible()
    page.bring_to_front()  # the tab in use (a tab behind gets few animation frames: every click waits)
    sign_in(page, ana)
    expect(tab_b.get_by_role("heading", name="Today")).to_be_visible()

    # A logs a day as ana; B shows it too.
    log_day(page, day(-1), sleep_hours="6.75", weight_kg="83.17", note=ana_note)
    wait_pill(page, "Online · synced")
    tab_b.goto(ana.app_url + "#history")
    expect(tab_b.locator("#history-list")).to_contain_text(ana_note)

    # Tab A: sign out, sign in as bob. B stops at once, hides ana's data and says who is signed in.
    sign_out(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(tab_b.get_by_role("heading", name=f"{ana.username} signed out in another tab")).to_be_visible()
    sign_in(page, bob)
    expect(tab_b.get_by_role("heading", name=f"Signed in as {bob.username} in another tab")).to_be_visible()
    expect(tab_b.get_by_role("button", name=f"Continue as {bob.username}")).to_be_visible()
    assert ana_note not in tab_b.content() and "83.17" not in tab_b.content()  # not even in hidden screens
    expect(tab_b.locator("#tabs")).to_be_hidden()
    expect(tab_b.locator("#sync-pill")).to_have_text("This tab stopped")

    # Online, B cannot reach the log form; offline, a write in B is refused, while A (bob) logs a day.
    tab_b.goto(ana.app_url + f"#log/{day(0)}")
    expect(tab_b.locator("#screen-log")).to_be_hidden()
    expect(tab_b.locator("#screen-locked")).to_be_visible()
    context.set_offline(True)
    assert tab_b.evaluate(REFUSED_WRITE, day(0)) == "AccountChanged"
    log_day(page, day(-2), steps="4321", note=bob_note)
    wait_pill(page, "Offline · 1 change queued")
    context.set_offline(False)
    wait_for(lambda: bob.stored(day(-2)), 20, "bob's day on the server")
    wait_pill(page, "Online · synced")

    # Postgres: each account holds only its own day; no (client, seq) was applied under both.
    assert ana.stored(day(-1)) is not None and ana.stored(day(-1))["note"] == ana_note  # type: ignore[index]
    assert bob.stored(day(-2))["note"] == bob_note  # type: ignore[index]
    for account in (ana, bob):
        assert account.stored(day(0)) is None
    assert bob.stored(day(-1)) is None and ana.stored(day(-2)) is None
    records = applied(pg, ana.username, bob.username)
    assert sorted(r[0] for r in records) == sorted([ana.username, bob.username])
    assert len({client for _, client, _ in records}) == 2  # two accounts never share a client id

    # Reloaded, B is bob's: no screen and no store or cache of the profile holds anything of ana.
    with tab_b.expect_navigation():
        tab_b.get_by_role("button", name=f"Continue as {bob.username}").click()
    ready(tab_b)
    shown = screens_text(tab_b, bob.app_url)
    assert bob_note in shown and bob.username in shown
    assert ana_note not in shown and "83.17" not in shown and ana.username not in shown
    stored = everything_stored(tab_b)
    assert where(stored, bob_note) == {account_db(tab_b, bob.username)}  # the search sees the stores
    for text in (ana_note, "83.17", ana.username):
        assert where(stored, text) == set(), text
    assert all("/v1/" not in url for entries in stored["caches"].values() for url in entries)


def test_signing_in_as_someone_else_asks_and_keeps_the_unsynced_changes_for_their_owner(
    page: Page, context: BrowserContext, new_tab: Callable[[], Page], target: Target, another_target: Target,
    pg: PG,
) -> None:
    assert target.revoke_sign_ins is not None
    cal1, cal2 = target, another_target
    note = f"cal1 only {secrets.token_hex(4)}"
    sign_in(page, cal1)
    wait_pill(page, "Online · synced")
    # Tab B (cal1's) hears nothing from the other tab, as a browser without BroadcastChannel would not:
    # it must notice the change of account by itself before writing.
    tab_b = new_tab()
    tab_b.goto(cal1.app_url)
    ready(tab_b)
    expect(tab_b.get_by_role("heading", name="Today")).to_be_visible()
    tab_b.evaluate("window.pulse.engine.channel.onmessage = null")
    page.bring_to_front()  # the tab in use (a tab behind gets few animation frames: every click waits)

    context.set_offline(True)
    log_day(page, day(-1), sleep_hours="7.25", note=note)
    cal1.revoke_sign_ins()
    context.set_offline(False)
    wait_pill(page, "Sign in again to sync")

    # "Sign in again", as cal2: the app asks first. Cancel changes nothing.
    page.get_by_role("link", name="Sync").click()
    page.get_by_role("link", name="Sign in again").click()
    expect(page.get_by_role("heading", name="Sign in again")).to_be_visible()
    page.get_by_label("Username").fill(cal2.username)
    page.get_by_label("Password").fill(cal2.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text(f"{cal1.username} has changes that are not synced")
    expect(dialog).to_contain_text("1 change has not reached the server")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("heading", name="Sign in again")).to_be_visible()
    assert page.evaluate("window.pulse.engine.username") == cal1.username
    assert [m["status"] for m in outbox(page)] == ["pending"]

    # Keep: cal2 is signed in with nothing of cal1's; cal1's change waits in cal1's own database.
    page.get_by_role("button", name="Sign in", exact=True).click()
    dialog.get_by_role("button", name=f"Keep them for {cal1.username} and sign in").click()
    expect(page.get_by_role("heading", name="Today")).to_be_visible()
    wait_pill(page, "Online · synced")
    assert outbox(page) == []
    assert cal1.stored(day(-1)) is None and cal2.stored(day(-1)) is None
    stored = everything_stored(page)
    assert where(stored, note) == {account_db(page, cal1.username)}
    kept_db = stored["databases"][account_db(page, cal1.username)]
    assert kept_db["rows"]["values"] == [] and "token" not in kept_db["meta"]["keys"]

    # Tab B never heard of it: its write is refused when it checks, and it says so.
    assert tab_b.evaluate(REFUSED_WRITE, day(0)) == "AccountChanged"
    expect(tab_b.get_by_role("heading", name=f"Signed in as {cal2.username} in another tab")).to_be_visible()
    assert note not in tab_b.locator("body").inner_text()

    # cal2 signs out; the sign-in screen lists what waits for cal1; cal1 signs in and it is sent, as cal1.
    sign_out(page)
    kept = page.locator("#kept-list li")
    expect(kept).to_have_count(1)
    expect(kept).to_contain_text(f"{cal1.username} · 1 change not synced")
    kept.get_by_role("button", name=f"Sign in as {cal1.username}").click()
    expect(page.get_by_label("Username")).to_have_value(cal1.username)
    expect(page.get_by_label("Password")).to_be_focused()
    page.get_by_label("Password").fill(cal1.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    wait_for(lambda: cal1.stored(day(-1)), 20, "cal1's kept change on the server")
    assert cal1.stored(day(-1))["note"] == note  # type: ignore[index]
    assert cal2.stored(day(-1)) is None
    wait_pill(page, "Online · synced")
    assert [r[0] for r in applied(pg, cal1.username, cal2.username)] == [cal1.username]
    assert page.evaluate("window.pulse.engine.keptAccounts()") == []


def test_signing_out_with_unsynced_changes_keeps_them_or_discards_them_as_chosen(
    page: Page, context: BrowserContext, target: Target
) -> None:
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    mine = account_db(page, target.username)

    # Keep: signed out, the change waits on the device and is sent at the next sign-in.
    context.set_offline(True)
    log_day(page, day(-1), steps="1111")
    sign_out(page)
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("1 change has not reached the server")
    dialog.get_by_role("button", name="Keep them and sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#kept-list li")).to_contain_text(f"{target.username} · 1 change not synced")
    context.set_offline(False)
    sign_in(page, target)
    wait_for(lambda: target.stored(day(-1)), 20, "the kept change on the server")
    wait_pill(page, "Online · synced")

    # Discard at sign-out: the account's database goes, and the change never reaches the server.
    context.set_offline(True)
    log_day(page, day(0), steps="2222")
    sign_out(page)
    dialog.get_by_role("button", name="Discard them and sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#kept")).to_be_hidden()
    page.wait_for_function("(name) => indexedDB.databases().then((all) => !all.some((d) => d.name === name))",
                           arg=mine)

    # Keep, then discard from the sign-in screen's list.
    sign_in_offline_is_refused(page, target)
    context.set_offline(False)
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    context.set_offline(True)
    log_day(page, day(-2), steps="3333")
    sign_out(page)
    dialog.get_by_role("button", name="Keep them and sign out").click()
    page.locator("#kept-list li").get_by_role("button", name="Discard").click()
    expect(dialog).to_contain_text(f"1 change of {target.username} has not reached the server")
    dialog.get_by_role("button", name="Discard them").click()
    expect(page.locator("#kept")).to_be_hidden()
    assert mine not in database_names(page)

    context.set_offline(False)
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    assert target.stored(day(0)) is None and target.stored(day(-2)) is None
    assert target.stored(day(-1))["steps"] == "1111"  # type: ignore[index]


def sign_in_offline_is_refused(page: Page, target: Target) -> None:
    page.get_by_label("Username").fill(target.username)
    page.get_by_label("Password").fill(target.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signin-error")).to_have_text("cannot reach the server: signing in needs a connection")


def test_the_database_of_earlier_versions_moves_to_its_account_with_its_pending_change(
    page: Page, target: Target, pg: PG
) -> None:
    """An install of the version before accounts had databases of their own: one database `ngx-pulse`,
    signed in, with a change not yet pushed. The new version moves it and sends it under that account."""
    token = httpx.post(f"{target.base_url}/v1/auth/token",
                       json={"username": target.username, "password": target.password}).json()["access_token"]
    client = f"legacy{secrets.token_hex(5)}"
    stamp = f"{time.time_ns() // 1_000_000:016d}:00000:{client}"
    mutation = {"seq": 1, "date": day(-1), "op": "set", "fields": {"note": "from before", "steps": 1234},
                "base": {"note": None, "steps": None}, "hlc": stamp, "status": "pending", "result": None,
                "lsn": None, "created_ms": 0}
    meta = {"client_id": client, "next_seq": 2, "hlc_last": stamp, "token": token, "username": target.username,
            "role": "athlete"}
    page.goto(target.app_url + "manifest.webmanifest")  # the app's origin, without the app running
    page.evaluate("""([meta, mutation]) => new Promise((resolve, reject) => {
      const request = indexedDB.open('ngx-pulse', 1);
      request.onupgradeneeded = () => {
        const db = request.result;
        db.createObjectStore('meta');
        db.createObjectStore('rows');
        db.createObjectStore('outbox', { keyPath: 'seq' });
      };
      request.onsuccess = () => {
        const db = request.result;
        const tx = db.transaction(['meta', 'outbox'], 'readwrite');
        for (const [key, value] of Object.entries(meta)) tx.objectStore('meta').put(value, key);
        tx.objectStore('outbox').put(mutation);
        tx.oncomplete = () => { db.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
    })""", [meta, mutation])

    page.goto(target.app_url)
    ready(page)
    expect(page.get_by_role("heading", name="Today")).to_be_visible()  # still signed in
    wait_for(lambda: target.stored(day(-1)), 20, "the moved change on the server")
    assert target.stored(day(-1))["note"] == "from before"  # type: ignore[index]
    assert applied(pg, target.username) == [(target.username, client, 1)]
    wait_pill(page, "Online · synced")
    page.wait_for_function("indexedDB.databases().then((all) => !all.some((d) => d.name === 'ngx-pulse'))")
    # The account keeps numbering from where the old database stopped, with the same client id.
    log_day(page, day(0), steps="4321")
    wait_for(lambda: target.stored(day(0)), 20, "the next change on the server")
    assert applied(pg, target.username) == [(target.username, client, 1), (target.username, client, 2)]


def test_a_name_removed_and_given_to_someone_else_gets_nothing_of_the_account_that_held_it(
    page: Page, target: Target, db: Database, pg: PG
) -> None:
    # ana uses the app on a shared tablet; the operator removes her account and later gives the name to
    # another person, who signs in on the same tablet. Its database is named after the username.
    synced, unsynced = f"old ana synced {secrets.token_hex(4)}", f"old ana unsynced {secrets.token_hex(4)}"
    sign_in(page, target)
    log_day(page, day(-1), note=synced)
    wait_for(lambda: target.stored(day(-1)), 20, "the first holder's day on the server")
    wait_pill(page, "Online · synced")
    with db.session() as session:
        old = find_user(session, target.username)
    assert old is not None and old.id is not None
    with pg.transaction():
        remove_user(pg, old.id, target.username, int(time.time() * 1000))
    with db.session() as session:
        new = add_user(session, target.username, target.password, False)
    log_day(page, day(0), note=unsynced)  # the first holder's token is refused now: it stays queued
    wait_pill(page, "Sign in again to sync")

    page.get_by_role("link", name="Sync").click()
    page.get_by_role("link", name="Sign in again").click()
    page.get_by_label("Password").fill(target.password)
    page.get_by_role("button", name="Sign in").click()
    wait_pill(page, "Online · synced")
    assert outbox(page) == []
    text = screens_text(page, target.app_url)
    assert synced not in text and unsynced not in text
    assert where(everything_stored(page), "old ana") == set()
    assert pg.execute("SELECT count(*) FROM entries WHERE user_id = %s", (new.id,)).fetchone() == (0,)
    assert applied(pg, target.username) == []
