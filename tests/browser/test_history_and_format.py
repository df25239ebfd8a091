"""The History screen pages its days, newest first, under a chart; numbers follow the browser's locale and
every date and time is ISO; Save shows every invalid field's message. Screens are kept as images in
tests/artefacts/pwa/ (tests/artefacts.py) for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from zoneinfo import ZoneInfo

from artefacts import artefact_dir
from axe_check import assert_accessible
from browser_support import Target, log_day, outbox, sign_in, wait_pill
from playwright.sync_api import Page, expect

PAGE_SIZE = 30
DAYS = 200

# Logs `n` days through the app's own validator and engine, newest `today` back, leaving out every day
# whose distance from today is 4 modulo 9 (gaps, as people leave): the dates written, newest first.
_LOG_DAYS = """async (n) => {
  const { parseFields } = await import('./js/values.js');
  const engine = window.pulse.engine;
  const today = Date.parse(engine.today() + 'T00:00:00Z');
  const day = (back) => new Date(today - back * 86400000).toISOString().slice(0, 10);
  const written = [];
  for (let back = 0; written.length < n; back += 1) {
    if (back % 9 === 4) continue;
    const date = day(back);
    const fields = parseFields(engine.rules, { sleep_hours: String(5 + (back % 5)), steps: String(4000 + 37 * back) });
    await engine.write(date, 'set', fields);
    written.push(date);
  }
  return written;
}"""


def log_days(page: Page, n: int) -> list[str]:
    written: list[str] = page.evaluate(_LOG_DAYS, n)
    return written


def listed(page: Page) -> list[str]:
    dates: list[str] = page.evaluate("[...document.querySelectorAll('#history-list li')].map((li) => li.dataset.date)")
    return dates


def test_history_is_paged_newest_first_under_a_chart_of_the_pages_days(page: Page, target: Target) -> None:
    sign_in(page, target)
    written = log_days(page, DAYS)
    assert written == sorted(written, reverse=True) and len(set(written)) == DAYS
    page.goto(target.app_url + "#history")
    expect(page.locator("#history-list li")).to_have_count(PAGE_SIZE)
    assert listed(page) == written[:PAGE_SIZE]
    position = page.locator("#history-position")
    expect(position).to_have_text("Newest first: days 1 to 30 of 200 (page 1 of 7).")
    # The page is a page, not 200 cards (the was 20,000 px at this width).
    assert page.evaluate("document.documentElement.scrollHeight") < 6_000
    chart = page.locator("#history-chart svg")
    list_top = page.locator("#history-list").bounding_box()
    chart_box = page.locator("#screen-history figure.chart").bounding_box()  # the svg is redrawn at each change
    assert chart_box is not None and list_top is not None and chart_box["y"] + chart_box["height"] <= list_top["y"]
    # The chart spans the page's days (oldest listed to today): a dot per day listed, dated Mondays.
    caption = f"Day score, {written[PAGE_SIZE - 1]} to {written[0]}. Open circles are not synced yet."
    expect(page.locator("#history-caption")).to_have_text(caption)
    assert chart.locator("circle").count() == PAGE_SIZE
    assert_mondays(chart.locator("text.x").all_text_contents(), written[PAGE_SIZE - 1], written[0])
    page.screenshot(path=artefact_dir("pwa") / "history-page-1.png", full_page=True)
    assert_accessible(page, "history, page 1")

    older = page.locator("#history-older")
    newer = page.locator("#history-newer")
    expect(page.get_by_role("link", name="Older days")).to_have_attribute("href", "#history/2")
    expect(newer).to_have_attribute("aria-disabled", "true")
    older.click()
    expect(position).to_have_text("Newest first: days 31 to 60 of 200 (page 2 of 7).")
    expect(position).to_be_focused()  # read out first, and the page shown from its top
    assert listed(page) == written[PAGE_SIZE:2 * PAGE_SIZE]
    assert page.evaluate("location.hash") == "#history/2"
    for _ in range(5):
        older.click()
    expect(position).to_have_text("Newest first: days 181 to 200 of 200 (page 7 of 7).")
    assert listed(page) == written[180:]
    expect(older).to_have_attribute("aria-disabled", "true")
    assert older.get_attribute("href") is None and older.is_hidden()  # not a link to nowhere
    page.screenshot(path=artefact_dir("pwa") / "history-last-page.png", full_page=True)
    page.get_by_role("link", name="Newer days").click()
    expect(position).to_have_text("Newest first: days 151 to 180 of 200 (page 6 of 7).")  # redrawn: read now
    assert listed(page) == written[150:180]
    page.goto(target.app_url + "#history/99")
    expect(position).to_have_text("Newest first: days 181 to 200 of 200 (page 7 of 7).")


def assert_mondays(labels: list[str], first: str, last: str) -> None:
    """The x labels are dates of Mondays in the chart's span: the first in full, the others MM-DD."""
    assert labels and re.fullmatch(r"\d{4}-\d{2}-\d{2}", labels[0]), labels
    year = labels[0][:4]
    for label in labels:
        if len(label) == 10:
            year = label[:4]
        day = dt.date.fromisoformat(label if len(label) == 10 else f"{year}-{label}")
        assert day.weekday() == 0 and first <= day.isoformat() <= last, label


def test_numbers_follow_the_browsers_locale_and_every_date_is_iso(
    new_profile: Callable[..., Page], target: Target
) -> None:
    zone = "Pacific/Kiritimati"
    page = new_profile(locale="de-DE", timezone_id=zone)
    sign_in(page, target)
    today = page.evaluate("window.pulse.engine.today()")
    log_day(page, today, sleep_hours="7.5", steps="9100", weight_kg="72.35", hrv_ms="61.5")
    shown = page.locator("#today-values")
    page.goto(target.app_url + "#today")
    expect(shown).to_contain_text("7,5 h")
    expect(shown).to_contain_text("9.100")
    expect(shown).to_contain_text("72,35 kg")
    expect(shown).to_contain_text("61,5 ms (RMSSD)")
    page.goto(target.app_url + "#history")
    expect(page.locator("#history-list li").first).to_contain_text("Steps 9.100")
    expect(page.locator("#history-list li").first).to_contain_text("Sleep 7,5 h")
    # What the form holds stays in the CLI's grammar: it is what the validator reads.
    page.goto(target.app_url + f"#log/{today}")
    expect(page.get_by_label("Sleep")).to_have_value("7.5")
    expect(page.get_by_label("Steps")).to_have_value("9100")
    # The date field is the browser's own control, in its locale's format: the day is also written ISO.
    expect(page.locator("#h-date")).to_have_text(f"{dt.date.fromisoformat(today):%A} {today}")

    wait_pill(page, "Online · synced")
    page.goto(target.app_url + "#sync")
    last_sync_ms = page.evaluate("window.pulse.engine.meta.lastSyncMs")
    expected = dt.datetime.fromtimestamp(last_sync_ms / 1000, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    expect(sync_value(page, "Last sync")).to_have_text(expected)
    # No date or time anywhere in a locale's style (04.12.2026, 12/4/2026, 6:07 PM): ISO only.
    for screen in ("today", "history", "sync"):
        page.goto(target.app_url + f"#{screen}")
        text = page.locator(f"#screen-{screen}").inner_text()
        assert re.findall(r"\b\d{1,2}[./]\d{1,2}[./]\d{2,4}\b|\b[AP]M\b", text) == [], (screen, text)
        assert re.search(r"\d{4}-\d{2}-\d{2}", text), screen
    page.screenshot(path=artefact_dir("pwa") / "sync-de-DE.png", full_page=True)


def sync_value(page: Page, name: str) -> object:
    return page.locator(f"#sync-state dt:text-is('{name}') + dd")


def test_numbers_in_en_us(page: Page, target: Target) -> None:
    sign_in(page, target)
    today = page.evaluate("window.pulse.engine.today()")
    log_day(page, today, sleep_hours="7.5", steps="12345")
    page.goto(target.app_url + "#history")
    expect(page.locator("#history-list li").first).to_contain_text("Steps 12,345")
    assert page.evaluate("navigator.language") == "en-US"


def test_save_shows_every_invalid_fields_message_and_queues_nothing(page: Page, target: Target) -> None:
    sign_in(page, target)
    today = page.evaluate("window.pulse.engine.today()")
    page.goto(target.app_url + f"#log/{today}")
    page.get_by_label("Sleep").fill("7,5")
    page.get_by_label("HRV (ms)").fill("2000")
    page.get_by_label("Steps").fill("100001")
    page.get_by_label("Weight").fill("72")
    page.get_by_label("Note").fill("x" * 1001)
    page.get_by_role("button", name="Save").click()
    messages = {
        "sleep_hours": "sleep_hours: '7,5' is not a number (allowed 0 to 24 h)",
        "hrv_ms": "hrv_ms: 2000 is out of range (allowed 1 to 300 ms)",
        "steps": "steps: 100001 is out of range (allowed 0 to 100000 steps)",
        "note": "note: note of 1001 characters is too long (allowed up to 1000 characters)",
    }
    for name, message in messages.items():
        expect(page.locator(f"#e-{name}")).to_have_text(message)
        expect(page.locator(f"#f-{name}")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-weight_kg")).to_have_text("")
    expect(page.locator("#f-weight_kg")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#log-status")).to_have_text("4 fields need fixing: " + " · ".join(messages.values()))
    expect(page.get_by_label("Sleep")).to_be_focused()
    assert outbox(page) == []
    page.screenshot(path=artefact_dir("pwa") / "log-every-error.png", full_page=True)
    assert_accessible(page, "the log form with four errors")

    # Fixing two leaves the other two, still each at its field.
    page.get_by_label("Sleep").fill("7.5")
    page.get_by_label("Note").fill("fine")
    page.get_by_role("button", name="Save").click()
    left = f"2 fields need fixing: {messages['hrv_ms']} · {messages['steps']}"
    expect(page.locator("#log-status")).to_have_text(left)
    expect(page.locator("#e-sleep_hours")).to_have_text("")
    expect(page.get_by_label("HRV (ms)")).to_be_focused()
    assert outbox(page) == []
