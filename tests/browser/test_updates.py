"""New versions reach an open app (docs/pwa.md, "Updates").

The app is served by a second server instance from a copy of its files (`web_root`); a test changes a
served file on disk, with no restart, as a deploy does. The new version must arrive at once when nothing
is pending, on the next navigation when changes are waiting, and always within one reload.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from browser_support import Target, eventually, log_day, outbox, ready, sign_in, wait_pill
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, expect
from sync_support import PulseServer, wait_for

from pulse_server.web import shell_version

MARK = "(mark) => getComputedStyle(document.documentElement).getPropertyValue('--shell-mark').includes(mark)"
SHOWN_AGAIN = "document.dispatchEvent(new Event('visibilitychange'))"  # the page is visible: it checks
TODAY_STEPS = "5555"


def deploy(root: Path) -> str:
    """Change a served file on disk; the returned mark shows in the page once the new version runs."""
    mark = secrets.token_hex(4)
    with (root / "app.css").open("a") as css:
        css.write(f"\n:root {{ --shell-mark: '{mark}'; }}\n")
    return mark


def shell_caches(page: Page) -> list[str]:
    names: list[str] = page.evaluate("caches.keys()")
    return sorted(n for n in names if n.startswith("ngx-pulse-shell-"))


def installed(page: Page) -> None:
    """The service worker controls the page and has told it its version."""
    page.wait_for_function("navigator.serviceWorker.controller !== null && window.pulse.updates.version !== null")


def test_a_changed_file_reaches_an_open_app_at_once_and_within_one_reload(page: Page, web_server: PulseServer,
                                                                          web_root: Path) -> None:
    page.goto(f"{web_server.url}/app/")
    ready(page)
    installed(page)
    assert shell_caches(page) == [f"ngx-pulse-shell-{shell_version(web_root)}"]

    # Nothing is pending: the check made when the page is shown again installs the new version, and
    # the page reloads into it by itself.
    page.evaluate("window.oldPage = true")
    mark = deploy(web_root)
    page.evaluate(SHOWN_AGAIN)
    eventually(page, MARK, 30, "the new version in the open page", arg=mark)
    assert page.evaluate("window.oldPage") is None
    ready(page)
    expect(page.locator("#update-banner")).to_contain_text("NGX Pulse was updated to its latest version")
    installed(page)
    version = shell_version(web_root)
    assert page.evaluate("window.pulse.updates.version") == version
    eventually(page, "() => caches.keys().then((k) => k.filter((n) => n.startsWith('ngx-pulse-shell-')).length === 1)",
               10, "the old shell's cache deleted")
    assert shell_caches(page) == [f"ngx-pulse-shell-{version}"]

    # A change while nothing checks: one reload brings it (the old page asks, and takes the new version).
    mark = deploy(web_root)
    loads: list[str] = []
    page.on("load", lambda _: loads.append(page.url))
    page.reload()
    eventually(page, MARK, 30, "the new version after one reload", arg=mark)
    assert len(loads) <= 2  # the reload, and the new version taking over


def test_with_a_change_waiting_the_new_version_is_offered_and_starts_on_the_next_navigation(
    page: Page, context: BrowserContext, web_target: Target, web_root: Path
) -> None:
    sign_in(page, web_target)
    wait_pill(page, "Online · synced")
    installed(page)

    # A change that cannot be pushed yet.
    context.route("**/v1/sync/push", lambda route: route.abort("internetdisconnected"))
    log_day(page, day(0), steps=TODAY_STEPS)
    wait_pill(page, "1 change queued")

    page.evaluate("window.oldPage = true")
    mark = deploy(web_root)
    page.evaluate(SHOWN_AGAIN)
    banner = page.locator("#update-banner")
    expect(banner).to_contain_text("A new version of NGX Pulse is ready", timeout=30_000)
    expect(banner.get_by_role("button", name="Update now")).to_be_visible()
    assert page.evaluate("window.oldPage") is True  # not reloaded under the person's feet
    assert not page.evaluate(MARK, mark)

    # The next navigation starts it, with the queued change still there.
    page.get_by_role("link", name="History").click()
    eventually(page, MARK, 30, "the new version after the navigation", arg=mark)
    ready(page)
    assert page.evaluate("window.oldPage") is None
    assert page.url.endswith("#history")
    expect(page.locator("#history-list li").first).to_contain_text("not synced")
    assert [m["status"] for m in outbox(page)] == ["pending"]
    assert page.evaluate("window.pulse.updates.ready") is False

    context.unroute("**/v1/sync/push")
    page.evaluate("window.pulse.engine.push()")
    wait_for(lambda: web_target.stored(day(0)), 20, "the queued change on the server")
    assert web_target.stored(day(0))["steps"] == TODAY_STEPS  # type: ignore[index]
