"""One browser database, one client id (docs/sync.md, "One store, one id"; docs/pwa.md).

A browser profile copied whole (here: every IndexedDB record of one context written into another's) holds
the same client id and seq counter as the original. Both keep logging; the server tells the second one to
push that its id is another's (a `clash`, or a high-water mark past every seq it ever issued, whose
`duplicate` answers are then the other database's records). It takes a new id, moves its pending changes
to it and pushes again: Postgres ends with every change exactly once, and both pages show the same days.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from browser_support import Target, copy_profile, log_day, outbox, sign_in
from calendar_days import day
from playwright.sync_api import Page, expect
from sync_support import wait_for

PG = psycopg.Connection[tuple[Any, ...]]


def applied_stamps(pg: PG, username: str) -> list[tuple[str, int, str]]:
    """(client_id, seq, stamp) of every mutation the server recorded for the user."""
    rows = pg.execute("SELECT a.client_id, a.seq, a.result->>'hlc' FROM applied_mutations a"
                      " JOIN users u ON u.id = a.user_id WHERE u.username = %s ORDER BY 1, 2", (username,)).fetchall()
    return [(str(client), int(seq), str(stamp)) for client, seq, stamp in rows]


def client_id(page: Page) -> str:
    value: str = page.evaluate("window.pulse.engine.store.getMeta('client_id')")
    return value


SAME_DAYS = """(days) => {
  const shown = Object.fromEntries([...document.querySelectorAll('#history-list li')].map(
    (li) => [li.dataset.date, li.querySelector('.facts').textContent]));
  return JSON.stringify(Object.entries(shown).sort()) === JSON.stringify(Object.entries(days).sort());
}"""


def all_sent(page: Page) -> None:
    """Every change of the page has its answer from the server."""
    page.wait_for_function("window.pulse.engine.outbox.every((m) => m.status !== 'pending')", timeout=30_000)


def converged(pages: list[Page], target: Target, expected: dict[str, str]) -> None:
    """Every page's History shows exactly these days, each with its facts."""
    for page in pages:
        page.goto(target.app_url + "#history")
        page.wait_for_function(SAME_DAYS, arg=expected, timeout=30_000)


def copied_pair(new_profile: Callable[..., Page], target: Target) -> tuple[Page, Page]:
    """`a` signed in with one day synced, and `b`: a copy of a's profile taken then."""
    a = new_profile()
    sign_in(a, target)
    log_day(a, day(-4), steps="4000")
    all_sent(a)
    b = new_profile()
    b.goto(target.app_url)
    copy_profile(a, b)
    expect(b.locator("#sync-pill")).to_contain_text("Online · synced")
    assert client_id(b) == client_id(a)
    return a, b


def test_a_copied_profile_that_clashes_takes_a_new_id_and_nothing_is_lost_or_applied_twice(
    new_profile: Callable[..., Page], target: Target, pg: PG
) -> None:
    a, b = copied_pair(new_profile, target)
    first_id = client_id(a)
    log_day(a, day(-3), steps="3000")  # seq 2 of the shared id, on the server first
    all_sent(a)

    # b's seq 2 is another change: the server answers `clash`; b moves it to a new id and pushes again.
    log_day(b, day(-2), steps="2000")
    all_sent(b)
    second_id = client_id(b)
    assert second_id != first_id and client_id(a) == first_id
    assert b.evaluate("window.pulse.engine.store.getMeta('former_client_ids')") == [first_id]
    moved = [m for m in outbox(b) if m["date"] == day(-2)]
    assert [(m["seq"], m["status"], m["client_id"]) for m in moved] == [(2, "done", second_id)]
    assert moved[0]["hlc"].endswith(f":{first_id}")  # the stamp it was made with is kept
    b.goto(target.app_url + "#sync")
    expect(b.locator("#sync-identity")).to_contain_text("also used by another browser")

    # Both go on logging, each under its own id now.
    log_day(a, day(-1), steps="1000")
    log_day(b, day(0), steps="500")
    for page in (a, b):
        all_sent(page)

    stamps = {m["hlc"] for page in (a, b) for m in outbox(page)}
    recorded = applied_stamps(pg, target.username)
    assert sorted(s for _, _, s in recorded) == sorted(stamps)  # every change exactly once
    assert {(c, n) for c, n, _ in recorded} == {(first_id, 1), (first_id, 2), (first_id, 3),
                                                (second_id, 2), (second_id, 3)}
    expected = {day(-4): "Steps 4,000", day(-3): "Steps 3,000", day(-2): "Steps 2,000", day(-1): "Steps 1,000",
                day(0): "Steps 500"}
    target.settle()
    converged([a, b], target, expected)


def test_a_copy_whose_seqs_the_server_pruned_does_not_take_their_duplicates_as_its_own(
    new_profile: Callable[..., Page], target: Target, pg: PG
) -> None:
    a, b = copied_pair(new_profile, target)
    first_id = client_id(a)
    log_day(a, day(-3), steps="3000")
    log_day(a, day(-2), steps="2000")
    all_sent(a)
    assert [(c, n) for c, n, _ in applied_stamps(pg, target.username)] == [(first_id, 1), (first_id, 2), (first_id, 3)]
    # The server's retention prunes those results, keeping only their high-water mark (docs/sync.md,
    # "Exactly once, by content"): a replay of seqs 1-3 is now a `duplicate` whatever its content.
    pg.execute("INSERT INTO client_high_water (user_id, client_id, seq) SELECT id, %s, 3 FROM users"
               " WHERE username = %s", (first_id, target.username))
    pg.execute("DELETE FROM applied_mutations a USING users u WHERE u.id = a.user_id AND u.username = %s",
               (target.username,))

    # b's seq 2 is answered `duplicate` (pruned), but the high-water mark, 3, is past every seq b issued (2):
    # that duplicate is a's record, not b's change, which goes under a new id.
    log_day(b, day(-1), steps="1000", note="from the copy")
    all_sent(b)
    second_id = client_id(b)
    assert second_id != first_id
    wait_for(lambda: target.stored(day(-1)), 20, "b's change on the server")
    assert (target.stored(day(-1)) or {})["note"] == "from the copy"
    (b_change,) = [m for m in outbox(b) if m["date"] == day(-1)]
    assert applied_stamps(pg, target.username) == [(second_id, 2, b_change["hlc"])]

    expected = {day(-4): "Steps 4,000", day(-3): "Steps 3,000", day(-2): "Steps 2,000", day(-1): "Steps 1,000"}
    target.settle()
    converged([a, b], target, expected)
