"""The PWA's main promise, end to end on a real server: days logged offline survive a reload, reach the
server when the network comes back, are seen by a CLI device, and a CLI edit appears in the open page.

Expected scores are worked out here by hand from score v1 (sleep 4 points/h up to 30, HRV 1/5 point
per ms up to 20, steps 1/333 point per step up to 30; total / 80 * 100, rounded half up).
"""

from __future__ import annotations

import re

import pytest
from browser_support import Target, log_day, outbox, pill, ready, sign_in, today_values, wait_pill
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, expect
from sync_support import wait_for

STAMP = re.compile(r"^\d{16}:\d{5}:(?P<client>[A-Za-z0-9_-]{1,64})$")

# 7.5 h -> 30; 62 ms -> 12.4; 9000 steps -> 27.027...; 69.427... / 80 * 100 = 86.78 -> 87
TODAY_SCORE = "87"
# 6.25 h -> 25; 150 ms -> 20 (capped); 5000 steps -> 15.015...; 60.015... / 80 * 100 = 75.02 -> 75
YESTERDAY_SCORE = "75"
# after the CLI sets 12000 steps: 30 + 12.4 + 30 (capped) = 72.4; 72.4 / 80 * 100 = 90.5 -> 91 (half up)
EDITED_SCORE = "91"


@pytest.mark.parametrize("target", ["cloud", "agent"], indirect=True)
def test_days_logged_offline_survive_a_reload_sync_to_a_cli_device_and_a_cli_edit_shows_live(
    target: Target, page: Page, context: BrowserContext
) -> None:  # the target first: it is set up before the browser and torn down after it
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    page.wait_for_function("navigator.serviceWorker.controller !== null")  # the shell is cached

    context.set_offline(True)
    wait_pill(page, "Offline")
    log_day(page, day(-1), sleep_hours="6.25", hrv_ms="150", hrv_method="sdnn", steps="5000",
            weight_kg="71.4", note="long ride")
    expect(page.locator("#log-status")).to_contain_text("Saved on this device")
    log_day(page, day(0), sleep_hours="7.5", hrv_ms="62", steps="9000")
    wait_pill(page, "Offline · 2 changes queued")
    assert target.stored(day(0)) is None and target.stored(day(-1)) is None

    # The outbox holds the two mutations in the wire format of docs/push-protocol.md.
    queued = outbox(page)
    assert [m["status"] for m in queued] == ["pending", "pending"]
    assert queued[0]["seq"] < queued[1]["seq"]
    clients = {STAMP.fullmatch(m["hlc"]).group("client") for m in queued}  # type: ignore[union-attr]
    assert len(clients) == 1 and queued[0]["hlc"] < queued[1]["hlc"]
    assert queued[0]["fields"] == {"sleep_hours": 6.25, "hrv_ms": 150, "hrv_method": "sdnn", "steps": 5000,
                                   "weight_kg": 71.4, "note": "long ride"}
    assert queued[0]["base"] == dict.fromkeys(["sleep_hours", "hrv_ms", "steps", "weight_kg", "note"])

    # Reloaded with no network: the shell comes from the service worker, the days from IndexedDB.
    page.reload()
    ready(page)
    shown = today_values(page)
    assert shown["Sleep"] == "7.5 h" and shown["Steps"] == "9,000" and shown["score"] == TODAY_SCORE
    expect(page.locator("#today-score-label")).to_contain_text("not synced yet")
    page.goto(target.app_url + "#history")
    days = page.locator("#history-list li")
    expect(days).to_have_count(2)
    assert days.nth(0).get_attribute("data-date") == day(0)
    expect(days.nth(0)).to_contain_text(f"Score {TODAY_SCORE}")
    expect(days.nth(1)).to_contain_text(f"Score {YESTERDAY_SCORE}")
    expect(days.nth(1)).to_contain_text("HRV 150 ms (SDNN)")
    assert "2 changes queued" in pill(page)

    # Back online: the outbox is pushed and the server holds what was typed, scored the same way.
    page.evaluate("window.stillTheSamePage = true")
    context.set_offline(False)
    wait_pill(page, "Online · synced")
    wait_for(lambda: target.stored(day(0)), 20, "today's entry on the server")
    assert target.stored(day(0)) == {
        "sleep_hours": "7.50", "hrv_ms": "62.00", "hrv_method": "rmssd", "steps": "9000", "weight_kg": None,
        "note": None, "score": TODAY_SCORE, "deleted": "false"}
    assert target.stored(day(-1)) == {
        "sleep_hours": "6.25", "hrv_ms": "150.00", "hrv_method": "sdnn", "steps": "5000", "weight_kg": "71.40",
        "note": "long ride", "score": YESTERDAY_SCORE, "deleted": "false"}
    assert {m["status"] for m in outbox(page)} == {"done"}

    # A CLI device of the same user sees both days.
    target.settle()
    cli = target.new_device("cli")
    cli.synced()
    seen = {e["date"]: e for e in cli.history(day(-1), day(0))}
    assert seen[day(0)]["steps"] == 9000 and seen[day(0)]["score"] == int(TODAY_SCORE)
    assert seen[day(-1)]["note"] == "long ride"
    assert seen[day(-1)]["hrv_method"] == "sdnn"

    # An edit made on the CLI reaches the open page through the live shape, without a reload.
    page.goto(target.app_url + "#today")
    cli.log(day(0), steps=12000)
    cli.synced()
    expect(page.locator("#today-values")).to_contain_text("12,000", timeout=20_000)
    expect(page.locator("#today-score")).to_have_text(EDITED_SCORE)
    assert page.evaluate("window.stillTheSamePage") is True
    assert target.stored(day(0))["score"] == EDITED_SCORE  # type: ignore[index]
