"""axe-core finds nothing on any screen of the app, in the states people meet: sign-in (with its error and
with an account's changes kept on the device), the sign-out question, Today with a warning, the log form
with errors, History, Sync with a rejected change and a conflict (and every conflict shown), and a tab
stopped by a sign-out in another. Each screen is kept as an image in tests/artefacts/pwa/.
"""

from __future__ import annotations

from collections.abc import Callable

from artefacts import artefact_dir
from axe_check import assert_accessible, violations
from browser_support import Target, log_day, sign_in, wait_pill
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, expect


def check(page: Page, screen: str) -> None:
    page.evaluate("scrollTo(0, 0)")  # the whole page from its top (a sticky bar scrolled would cut it)
    page.screenshot(path=artefact_dir("pwa") / f"axe-{screen}.png", full_page=True)
    assert_accessible(page, screen)


def test_no_screen_has_an_axe_violation(
    page: Page, context: BrowserContext, target: Target, new_tab: Callable[[], Page]
) -> None:
    page.goto(target.app_url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check(page, "signin")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signin-error")).to_have_text("Enter your username and password.")
    check(page, "signin-error")

    sign_in(page, target)
    today = page.evaluate("window.pulse.engine.today()")
    log_day(page, today, sleep_hours="2.5", steps="9000", weight_kg="70")
    page.goto(target.app_url + "#today")
    expect(page.locator("#today-warnings li")).to_have_count(1)
    check(page, "today-warning")

    page.goto(target.app_url + f"#log/{today}")
    page.get_by_label("Sleep").fill("25")
    page.get_by_label("Steps").fill("-1")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#log-status")).to_contain_text("2 fields need fixing")
    check(page, "log-errors")

    log_day(page, day(-1), sleep_hours="7", steps="5000", note="start")
    page.evaluate("(day) => window.pulse.engine.write(day, 'set', { steps: 200000 })", day(-2))  # the server refuses it
    wait_pill(page, "1 rejected")
    page.goto(target.app_url + "#history")
    expect(page.locator("#history-list li")).to_have_count(2)
    expect(page.locator("#history-position")).to_have_text("2 days logged, newest first.")  # one page: no pager
    expect(page.locator("#history-pages")).to_be_hidden()
    check(page, "history")

    # A conflict: the page's edit of yesterday loses to a CLI device's later one.
    page.wait_for_function("window.pulse.engine.outbox.every((m) => m.status !== 'pending')", timeout=30_000)
    target.settle()
    phone = target.new_device("phone")
    phone.synced()
    context.set_offline(True)
    log_day(page, day(-1), steps="6000")
    phone.log(day(-1), steps="7000")
    phone.synced()
    target.settle()
    context.set_offline(False)
    page.goto(target.app_url + "#sync")
    expect(page.locator("#conflicts-list li[data-state]")).to_have_count(1, timeout=30_000)
    expect(page.locator("#rejected-list li[data-seq]")).to_have_count(1)
    check(page, "sync-rejected-conflict")
    page.get_by_role("button", name="Show all (1)").click()
    check(page, "sync-all-conflicts")

    # Another tab of the same profile stops when this one signs out.
    other = new_tab()
    other.goto(target.app_url + "#today")
    expect(other.get_by_role("heading", name=f"Today, {today}")).to_be_visible()
    page.bring_to_front()
    context.set_offline(True)
    log_day(page, today, steps="9500")
    page.goto(target.app_url + "#sync")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    check(page, "signout-question")
    page.get_by_role("button", name="Keep them and sign out").click()
    expect(page.locator("#kept-list li")).to_have_count(1)
    check(page, "signin-kept")
    other.bring_to_front()
    expect(other.locator("#screen-locked")).to_be_visible()
    check(other, "locked")


def test_axe_does_see_a_violation(page: Page, target: Target) -> None:
    """The check above can fail: a field without a label added to the page is reported."""
    page.goto(target.app_url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.evaluate("document.querySelector('#signin-form').append(Object.assign(document.createElement('input'),"
                  " { id: 'unlabelled' }))")
    found = violations(page)
    assert [v["rule"] for v in found] == ["label"]
    assert [n["target"] for n in found[0]["nodes"]] == ["#unlabelled"]
