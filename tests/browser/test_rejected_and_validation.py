"""Writes the server refuses stay visible until fixed or discarded; bad input never reaches the outbox;
the screens work with labels, the keyboard and a 360 px wide screen.

A refused write is queued here through the app's own engine with a value the form would not let
through (as a write queued under looser rules, or by an older version of the app, would be).
"""

from __future__ import annotations

import datetime as dt

import pytest
from browser_support import Target, log_day, outbox, sign_in, wait_pill
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, expect
from sync_support import wait_for


def queue_unchecked(page: Page, date: str, fields: dict[str, object]) -> None:
    page.evaluate("([date, fields]) => window.pulse.engine.write(date, 'set', fields)", [date, fields])


def test_rejected_writes_are_listed_with_their_message_then_discarded_or_fixed(page: Page, target: Target) -> None:
    sign_in(page, target)
    queue_unchecked(page, day(-2), {"steps": 200000})
    queue_unchecked(page, day(-1), {"weight_kg": 600, "note": "new scale"})
    wait_pill(page, "2 rejected")
    page.get_by_role("link", name="Sync").click()
    rejected = page.locator("#rejected-list li")
    expect(rejected).to_have_count(2)
    expect(rejected.nth(0)).to_contain_text(day(-2))
    expect(rejected.nth(0).locator(".message")).to_have_text(
        "steps: 200000 is out of range (allowed 0 to 100000 steps)")
    expect(rejected.nth(1).locator(".message")).to_have_text("weight_kg: 600 is out of range (allowed 20 to 500 kg)")
    assert target.stored(day(-2)) is None and target.stored(day(-1)) is None
    assert [m["status"] for m in outbox(page)] == ["rejected", "rejected"]

    # Discard: gone from the list and from the outbox.
    rejected.nth(0).get_by_role("button", name="Discard").click()
    expect(rejected).to_have_count(1)
    assert [m["date"] for m in outbox(page)] == [day(-1)]

    # Fix: the form opens with the refused values and the server's message, and the fix is delivered.
    rejected.nth(0).get_by_role("button", name="Fix").click()
    expect(page.locator("#log-title")).to_have_text(f"Fix the change for {day(-1)}")
    weight = page.get_by_label("Weight")
    expect(weight).to_have_value("600")
    expect(page.get_by_label("Note")).to_have_value("new scale")
    expect(page.locator("#e-weight_kg")).to_have_text("weight_kg: 600 is out of range (allowed 20 to 500 kg)")
    expect(weight).to_be_focused()
    weight.fill("72")
    page.get_by_role("button", name="Save").click()

    wait_for(lambda: target.stored(day(-1)), 20, "the fixed entry on the server")
    stored = target.stored(day(-1))
    assert stored is not None and stored["weight_kg"] == "72.00" and stored["note"] == "new scale"
    wait_pill(page, "Online · synced")
    assert [m["status"] for m in outbox(page)] == ["done"]
    assert target.stored(day(-2)) is None


def test_invalid_input_shows_the_cli_message_and_queues_nothing(page: Page, target: Target) -> None:
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="7,5", steps="9000", queued=False)
    message = "sleep_hours: '7,5' is not a number (allowed 0 to 24 h)"
    expect(page.locator("#log-status")).to_have_text(message)
    expect(page.locator("#e-sleep_hours")).to_have_text(message)
    sleep = page.get_by_label("Sleep")
    expect(sleep).to_have_attribute("aria-invalid", "true")
    expect(sleep).to_be_focused()
    assert outbox(page) == []

    # Leaving a field checks it at once.
    page.get_by_label("Steps").fill("100001")
    page.get_by_label("Steps").press("Tab")
    expect(page.locator("#e-steps")).to_have_text("steps: 100001 is out of range (allowed 0 to 100000 steps)")
    page.get_by_label("Date").fill((dt.date.today() + dt.timedelta(days=3)).isoformat())
    expect(page.get_by_label("Sleep")).to_have_value("7,5")  # another date keeps what was typed
    page.get_by_label("Sleep").fill("7.5")
    page.get_by_label("Steps").fill("9000")
    page.get_by_role("button", name="Save").click()
    latest = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    future = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    expect(page.locator("#log-status")).to_have_text(f"date: {future} is in the future (allowed up to {latest})")
    assert outbox(page) == []

    page.get_by_label("Date").fill(day(0))
    page.get_by_label("Sleep").fill("2.5")
    page.get_by_label("Steps").fill("9000")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#log-status")).to_contain_text("sleep_hours: 2.5 h is unusually low (warning below 3 h)")
    assert len(outbox(page)) == 1


def test_a_day_can_be_logged_with_the_keyboard_alone(page: Page, target: Target) -> None:
    sign_in(page, target)
    page.goto(target.app_url + f"#log/{day(0)}")
    page.get_by_label("Sleep").focus()  # the date input keeps Tab for its own day, month and year parts
    page.keyboard.type("8")  # sleep
    page.keyboard.press("Tab")
    page.keyboard.type("55")  # HRV
    page.keyboard.press("Tab")  # method: keep RMSSD
    page.keyboard.press("Tab")
    page.keyboard.type("10000")  # steps
    page.keyboard.press("Enter")
    expect(page.locator("#log-status")).to_contain_text("Saved")
    wait_for(lambda: target.stored(day(0)), 20, "the entry on the server")
    stored = target.stored(day(0))
    assert stored is not None
    assert (stored["sleep_hours"], stored["hrv_ms"], stored["steps"]) == ("8.00", "55.00", "10000")


def test_every_screen_labels_its_fields_and_fits_a_360_px_screen(page: Page, target: Target) -> None:
    page.goto(target.app_url)
    unlabelled = ("[...document.querySelectorAll('input, select, textarea')]"
                  ".filter(e => !e.labels.length).map(e => e.id)")
    overflow = "document.documentElement.scrollWidth > document.documentElement.clientWidth"
    assert page.evaluate(unlabelled) == []
    assert page.evaluate(overflow) is False
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="7.5", steps="9000", note="a rather long note " * 8)
    for screen in ("today", "log", "history", "sync"):
        page.goto(target.app_url + f"#{screen}")
        expect(page.locator(f"#screen-{screen}")).to_be_visible()
        assert page.evaluate(overflow) is False, screen
    assert page.evaluate(unlabelled) == []
    live = page.evaluate("[...document.querySelectorAll('[aria-live], [role=alert], [role=status]')].map(e => e.id)")
    assert {"sync-pill", "log-status", "signin-error", "sync-error"} <= set(live)


def test_signing_out_forgets_the_account_and_its_data_on_this_device(page: Page, target: Target) -> None:
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="7", steps="8000")
    wait_pill(page, "Online · synced")
    page.get_by_role("link", name="Sync").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("window.pulse.engine.view.size") == 0
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert target.stored(day(0)) is not None  # still on the server, only this device forgot it


def test_a_write_this_devices_storage_refuses_is_said_on_every_screen_not_lost_in_silence(
    page: Page, target: Target
) -> None:
    """The device's own storage failing a save (here its IndexedDB connection closed under the page, a
    real refusal of the transaction) shows an error at the top of every screen, no "Saved.", and nothing
    queued; after a reload (storage open again) the same save goes through and the error is gone."""
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    page.evaluate("window.pulse.engine.store.db.close()")
    log_day(page, day(-1), queued=False, steps="4321")
    notice = page.locator("#write-error")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Not saved: this device's storage refused the change (InvalidStateError")
    expect(page.locator("#log-status")).not_to_contain_text("Saved")
    page.get_by_role("link", name="History").click()
    expect(notice).to_be_visible()  # said on every screen, not only where it happened
    assert outbox(page) == []

    page.reload()
    log_day(page, day(-1), steps="4321")
    expect(page.locator("#log-status")).to_contain_text("Saved")
    expect(notice).to_be_hidden()
    assert [m["fields"] for m in outbox(page)] == [{"steps": 4321}]


def test_a_fix_and_the_end_of_the_refused_change_it_fixes_are_one_write(page: Page, target: Target) -> None:
    """Saving a fix queued the fix, then dropped the refused change in a second write: when that second
    write failed, the page said "Not saved" for a fix that was queued and kept the refused change beside
    it. Now both are one transaction (here the separate drop fails whenever it is called: it is not)."""
    sign_in(page, target)
    queue_unchecked(page, day(-1), {"weight_kg": 600})
    wait_pill(page, "1 rejected")
    page.evaluate("() => { window.pulse.engine.discard = async () => { throw new Error('the drop failed'); }; }")
    page.get_by_role("link", name="Sync").click()
    page.locator("#rejected-list li").nth(0).get_by_role("button", name="Fix").click()
    page.get_by_label("Weight").fill("72")
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#log-status")).to_contain_text("Saved")
    expect(page.locator("#write-error")).to_be_hidden()
    wait_for(lambda: target.stored(day(-1)), 20, "the fix on the server")
    wait_pill(page, "Online · synced")
    assert [(m["status"], m["fields"]) for m in outbox(page)] == [("done", {"weight_kg": 72})]



AGE_OUTBOX = """([seqs, days]) => window.pulse.engine.store.transact(['outbox'], 'readwrite', async (s) => {
  for (const seq of seqs) {
    const m = await s.outbox.get(seq);
    await s.outbox.put({ ...m, sent_at: Date.now() - days * 86400000 });
  }
})"""


def test_acknowledged_changes_leave_the_outbox_after_their_window_refused_ones_stay(
    page: Page, target: Target
) -> None:
    """The page's outbox kept every change ever acknowledged, read whole at every refresh. Now a change the
    server took leaves it 30 days on, once the pull is past it (then the view no longer needs it: here when
    today's change is pulled), as the CLI's do; a refused one stays until fixed or discarded, however old."""
    sign_in(page, target)
    log_day(page, day(-2), steps="5000")
    queue_unchecked(page, day(-1), {"steps": 200000})
    wait_pill(page, "1 rejected")
    old = [m["seq"] for m in outbox(page)]
    page.evaluate(AGE_OUTBOX, [old, 31])

    log_day(page, day(0), steps="6000")
    wait_for(lambda: target.stored(day(0)), 20, "today's write on the server")
    page.wait_for_function("window.pulse.engine.outbox.length === 2")

    assert sorted((m["date"], m["status"]) for m in outbox(page)) == [(day(-1), "rejected"), (day(0), "done")]
    page.goto(page.url.split("#")[0] + "#history")
    expect(page.locator("#history-list")).to_contain_text("5,000")  # the pruned change's day, from the shape


@pytest.mark.parametrize("target", ["agent"], indirect=True)
def test_a_change_the_device_took_and_the_server_refused_is_shown_rejected_not_lost(
    page: Page, target: Target
) -> None:
    """Behind `pulse agent --serve`, the device takes a change (answered `applied`) that the sync server then
    refuses (a note with a NUL: SQLite holds it, Postgres cannot). Before, the page marked it done and the
    value left its view an hour later with no word; now the page learns the refusal at its next exchange and
    lists the change as rejected, with the server's reason, to fix or discard."""
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    queue_unchecked(page, day(-1), {"note": "before\x00after"})

    wait_pill(page, "1 rejected", timeout_ms=40_000)
    [row] = outbox(page)
    assert row["status"] == "rejected" and row["result"]["error"]["code"] == "invalid_value", row
    page.get_by_role("link", name="Sync").click()
    expect(page.locator("#rejected-list li")).to_have_count(1)
    expect(page.locator("#rejected-list li .message")).to_contain_text("NUL")
    assert target.stored(day(-1)) is None
    # Handed back: the page holds it now, so the device counts it among its own refusals no more.
    device = target.new_device("served")
    wait_for(lambda: device.outbox_counts() == {"discarded": 1}, 20, "the device's copy handed back")


@pytest.mark.parametrize("target", ["agent"], indirect=True)
def test_a_refusal_of_a_change_the_page_no_longer_keeps_puts_it_back_as_rejected(
    page: Page, context: BrowserContext, target: Target
) -> None:
    """The page drops acknowledged changes after their window; one the device took and the server refused
    after that is put back from the device's copy, as rejected, with the change itself to fix."""
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    held: list[bool] = [True]
    context.route("**/v1/sync/refused*", lambda route: route.fulfill(status=503, body="{}") if held[0]
                  else route.continue_())
    queue_unchecked(page, day(-1), {"note": "before\x00after", "steps": 4321})
    device = target.new_device("served")
    wait_for(lambda: device.outbox_counts() == {"rejected": 1}, 30, "the sync server's refusal on the device")
    page.wait_for_function("window.pulse.engine.outbox.length === 1 && window.pulse.engine.outbox[0].status === 'done'")
    seq = outbox(page)[0]["seq"]
    page.evaluate("(seq) => window.pulse.engine.store.transact(['outbox'], 'readwrite', (s) => s.outbox.delete(seq))",
                  seq)  # as its window would, before the refusal is known here

    held[0] = False
    page.evaluate("window.pulse.engine.exchangeConflicts()")

    wait_pill(page, "1 rejected", timeout_ms=40_000)
    [row] = outbox(page)
    assert (row["seq"], row["date"], row["status"]) == (seq, day(-1), "rejected")
    assert row["fields"] == {"note": "before\x00after", "steps": 4321}
    wait_for(lambda: device.outbox_counts() == {"discarded": 1}, 20, "the device's copy handed back")
