"""Conflicts on every device (docs/sync.md, "Conflicts on every device"; docs/pwa.md).

The page and a CLI device of the same user edit one day at once; the page's values lose. The page lists
the three conflicts the server recorded (fetched by version), each with its state judged from its own
view; it re-asserts one, dismisses another while offline (sent once it is back), and sees the dismissal
made on the CLI device. The CLI device sees the same states, and the sync pill counts open ones only.
"""

from __future__ import annotations

from browser_support import Target, log_day, outbox, sign_in, wait_pill
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, expect
from sync_support import Device, wait_for

OPEN_STATES = "() => [...document.querySelectorAll('#conflicts-list li[data-state]')].map((li) => li.dataset.state)"


def cli_states(device: Device) -> dict[str, str]:
    """Each conflict's state on the CLI device, by field."""
    return {c["field"]: c["state"] for c in device.json("conflicts", "--all")["conflicts"]}


def page_states(page: Page) -> dict[str, str]:
    states: dict[str, str] = page.evaluate(
        "Object.fromEntries(window.pulse.engine.conflicts().map((c) => [c.field, c.state]))")
    return states


def all_sent(page: Page) -> None:
    page.wait_for_function("window.pulse.engine.outbox.every((m) => m.status !== 'pending')", timeout=30_000)


def test_the_losing_page_lists_reasserts_and_dismisses_conflicts_and_every_device_agrees(
    page: Page, context: BrowserContext, target: Target
) -> None:
    sign_in(page, target)
    log_day(page, day(-1), sleep_hours="7", steps="5000", note="start")
    all_sent(page)
    target.settle()
    phone = target.new_device("phone")
    phone.synced()

    # Both edit the day from the same values: the page first (offline), the phone after, and the phone
    # syncs first. Its stamps are later, so its values are kept; the page's lose, field by field.
    context.set_offline(True)
    log_day(page, day(-1), sleep_hours="6", steps="6000", note="from the browser")
    phone.log(day(-1), sleep_hours="8", steps="7000", note="from the phone")
    phone.synced()
    target.settle()
    context.set_offline(False)
    all_sent(page)
    assert [m["result"]["status"] for m in outbox(page) if m["status"] == "done"][-1] == "conflict"

    page.goto(target.app_url + "#sync")
    conflicts = page.locator("#conflicts-list li[data-state]")
    expect(conflicts).to_have_count(3, timeout=30_000)
    page.wait_for_function(f"({OPEN_STATES})().join() === 'open,open,open'")
    wait_pill(page, "3 conflicts")
    steps = page.locator("#conflicts-list li", has_text="Steps")
    expect(steps).to_contain_text("kept 7,000 over 6,000")
    expect(steps).to_contain_text("Open")

    # Re-assert the page's steps: a new edit, later than the phone's, so it wins; open ones: 2.
    steps.get_by_role("button", name="Re-assert").click()
    wait_pill(page, "2 conflicts")
    assert page_states(page)["steps"] == "reasserted"
    all_sent(page)
    wait_for(lambda: (target.stored(day(-1)) or {}).get("steps") == "6000", 20, "the re-asserted steps on the server")
    expect(conflicts).to_have_count(2)  # the list shows open ones by default

    # Dismiss the note's conflict offline: at once here, on the server once the page is back online.
    context.set_offline(True)
    page.locator("#conflicts-list li", has_text="Note").get_by_role("button", name="Dismiss").click()
    wait_pill(page, "1 conflict")
    context.set_offline(False)
    page.wait_for_function("window.pulse.engine.store.getMeta('conflicts_dismiss').then((q) => q.length === 0)",
                           timeout=30_000)
    target.settle()
    phone.synced()
    assert cli_states(phone) == {"sleep_hours": "open", "steps": "reasserted", "note": "dismissed"}

    # The phone dismisses the last one; the page hears of it at its next exchange (Sync now).
    (sleep,) = [c for c in phone.json("conflicts")["conflicts"] if c["field"] == "sleep_hours"]
    phone.ok("conflicts", "--dismiss", str(sleep["id"]))
    phone.synced()
    page.get_by_role("button", name="Sync now").click()
    page.wait_for_function("window.pulse.engine.openConflicts() === 0", timeout=30_000)
    assert page_states(page) == {"sleep_hours": "dismissed", "steps": "reasserted", "note": "dismissed"}
    wait_pill(page, "Online · synced")
    assert "conflict" not in page.locator("#sync-pill").inner_text()
    expect(page.locator("#conflicts-list")).to_contain_text("No open conflicts.")

    # Show all: every conflict with its state.
    page.get_by_role("button", name="Show all (3)").click()
    expect(conflicts).to_have_count(3)
    # Each button is described by its conflict, and no field gains a second label.
    expect(steps.get_by_role("button", name="Dismiss")).to_have_accessible_description(
        f"{day(-1)} · Steps kept 7,000 over 6,000")
    page.goto(target.app_url + f"#log/{day(-1)}")
    expect(page.get_by_label("Steps")).to_have_value("6000")
    assert sorted(page.evaluate(OPEN_STATES)) == ["dismissed", "dismissed", "reasserted"]
    expect(page.locator("#conflicts-list li", has_text="Steps")).to_contain_text("Re-asserted")
