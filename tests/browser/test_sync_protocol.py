"""The page's sync engine against the server's protocols: the shape cursor survives a reload, a
`409 must-refetch` rebuilds the local copy without touching the outbox, a refused sign-in stops
sync without costing the queue, and a response the page cannot apply is shown and healed from."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_support import Target, log_day, outbox, pump_until, ready, sign_in, wait_pill
from calendar_days import day
from playwright.sync_api import BrowserContext, Page, Request, Route, expect
from sync_support import wait_for

SAVED_SHAPE = "window.pulse.engine.store.getMeta('shape')"


def shape_params(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def spoil_first(body: str, spoiled: list[bool], status: int = 200, times: int = 1,
                kind: str = "application/json") -> Callable[[Route], None]:
    """A route handler that answers the first `times` requests with `body` (declared as `kind`, with
    `status`), each noted in `spoiled`, and lets every later one through to the server."""

    def handle(route: Route) -> None:
        if len(spoiled) < times:
            spoiled.append(True)
            route.fulfill(status=status, body=body, headers={"content-type": kind})
        else:
            route.continue_()

    return handle


def test_a_reload_resumes_the_shape_from_the_saved_handle_and_offset(page: Page, target: Target) -> None:
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="7", steps="7000")
    wait_pill(page, "Online · synced")
    page.wait_for_function(f"{SAVED_SHAPE}.then((s) => s && s.upToDate && s.offset !== '-1')")
    saved: dict[str, Any] = page.evaluate(SAVED_SHAPE)

    asked: list[dict[str, str]] = []
    page.on("request", lambda r: asked.append(shape_params(r)) if "/v1/shape" in r.url else None)
    page.reload()
    ready(page)
    pump_until(page, lambda: asked, 10, "a shape request after the reload")
    assert asked[0]["offset"] == saved["offset"] and asked[0]["handle"] == saved["handle"]
    assert asked[0]["live"] == "true"
    assert all(a["offset"] != "-1" for a in asked)
    expect(page.locator("#today-values")).to_contain_text("7,000")


def test_must_refetch_rebuilds_the_copy_from_a_snapshot_and_keeps_pending_writes(
    page: Page, context: BrowserContext, target: Target
) -> None:
    sign_in(page, target)
    log_day(page, day(-1), sleep_hours="6.5", steps="6000")
    wait_pill(page, "Online · synced")

    # Pushes fail for a while, so the next write stays pending through the refetch.
    context.route("**/v1/sync/push", lambda route: route.abort("internetdisconnected"))
    log_day(page, day(0), sleep_hours="8", steps="11000")
    wait_pill(page, "1 change queued")

    refetched: list[dict[str, str]] = []
    answered_409: list[bool] = []

    def must_refetch_once(route: Route) -> None:
        if not answered_409:
            answered_409.append(True)
            route.fulfill(status=409, headers={"electric-handle": "gone-handle", "content-type": "application/json"},
                          body='[{"headers":{"control":"must-refetch"}}]')
        else:
            refetched.append(shape_params(route.request))
            route.continue_()

    context.route("**/v1/shape?*", must_refetch_once)
    page.evaluate("window.pulse.engine.startPull()")
    pump_until(page, lambda: refetched, 10, "the refetch after 409")
    assert refetched[0]["offset"] == "-1" and "handle" not in refetched[0]

    page.goto(target.app_url + "#history")
    days = page.locator("#history-list li")
    expect(days).to_have_count(2)  # the server's day from the new snapshot, and the pending one
    expect(days.nth(0)).to_contain_text("not synced")
    assert [m["status"] for m in outbox(page)] == ["done", "pending"]

    context.unroute("**/v1/sync/push")
    page.evaluate("window.pulse.engine.push()")
    wait_for(lambda: target.stored(day(0)), 20, "the pending write on the server after the refetch")


def test_a_refused_sign_in_keeps_the_queue_and_sync_resumes_after_signing_in_again(
    page: Page, target: Target
) -> None:
    assert target.revoke_sign_ins is not None, "this target cannot revoke sign-ins"
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    target.revoke_sign_ins()
    log_day(page, day(0), sleep_hours="7.25", steps="8000")
    wait_pill(page, "Sign in again to sync")
    assert [m["status"] for m in outbox(page)] == ["pending"]
    assert target.stored(day(0)) is None

    page.get_by_role("link", name="Sync").click()
    page.get_by_role("link", name="Sign in again").click()
    expect(page.get_by_label("Username")).to_have_value(target.username)
    page.get_by_label("Password").fill(target.password)
    page.get_by_role("button", name="Sign in").click()
    wait_for(lambda: target.stored(day(0)), 20, "the queued write on the server after signing in again")
    stored = target.stored(day(0))
    assert stored is not None and stored["sleep_hours"] == "7.25"
    wait_pill(page, "Online · synced")


def test_a_sign_in_answered_by_something_that_is_not_the_server_says_so(
    page: Page, context: BrowserContext, target: Target
) -> None:
    """A captive portal's page in answer to the sign-in was read as a token ("Cannot read properties of
    null"); now the page says whose answer it was not, and signing in works once the server answers."""
    spoiled: list[bool] = []

    def portal(route: Route) -> None:
        if not spoiled:
            spoiled.append(True)
            route.fulfill(status=200, body="<html>Sign in to the Wi-Fi</html>", headers={"content-type": "text/html"})
        else:
            route.continue_()

    context.route("**/v1/auth/token", portal)
    page.goto(target.app_url)
    page.get_by_label("Username").fill(target.username)
    page.get_by_label("Password").fill(target.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signin-error")).to_contain_text(
        "the answer to the sign-in was not the sync server's (200, text/html)")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("heading", name="Today").wait_for()
    assert spoiled == [True]


def test_a_response_the_page_cannot_apply_is_shown_and_following_starts_again(
    page: Page, context: BrowserContext, target: Target
) -> None:
    """A shape response the page cannot apply (here a malformed `stamps` text) does not stop sync in
    silence: the pill and the sync page say so, the page asks again after a backoff, from a fresh
    snapshot after the second failure, and then follows the shape again, queue untouched."""
    sign_in(page, target)
    log_day(page, day(-1), sleep_hours="7", steps="7000")
    wait_pill(page, "Online · synced")
    page.wait_for_function(f"{SAVED_SHAPE}.then((s) => s && s.upToDate && s.offset !== '-1')")

    asked: list[dict[str, str]] = []
    spoiled: list[bool] = []

    def spoil_two(route: Route) -> None:
        asked.append(shape_params(route.request))
        if len(spoiled) < 2:
            spoiled.append(True)
            message = {"key": f'"public"."entries"/"{day(0)}"', "headers": {"operation": "insert"},
                       "value": {"date": day(0), "steps": "1", "stamps": "not a stamps text"}}
            route.fulfill(status=200, body=json.dumps([message]), headers={
                "content-type": "application/json", "electric-handle": "h", "electric-offset": "9_0"})
        else:
            route.continue_()

    context.route("**/v1/shape?*", spoil_two)
    page.evaluate("window.pulse.engine.startPull()")
    wait_pill(page, "Online · sync error")
    expect(page.locator("#sync-error")).to_contain_text("Could not apply the server's changes")
    expect(page.locator("#sync-error")).to_contain_text("stamps")

    # Healed: the next responses are the server's own, from a fresh snapshot after the second failure.
    wait_pill(page, "Online · synced", timeout_ms=30_000)
    expect(page.locator("#sync-error")).to_have_text("")
    assert len(spoiled) == 2
    assert asked[2]["offset"] == "-1" and "handle" not in asked[2]
    assert [m["status"] for m in outbox(page)] == ["done"]

    cli = target.new_device("cli")
    cli.log(day(0), steps=12000)
    cli.synced()
    page.goto(target.app_url + "#today")
    expect(page.locator("#today-values")).to_contain_text("12,000", timeout=20_000)
    assert page.evaluate("(d) => Number(window.pulse.engine.view.get(d).steps)", day(-1)) == 7000


def test_a_push_answer_the_page_cannot_read_is_shown_and_the_queue_sent_again(
    page: Page, context: BrowserContext, target: Target
) -> None:
    sign_in(page, target)
    spoiled: list[bool] = []
    # Three spoiled answers: the backoff between them (random, from 0 s) leaves the error up long enough
    # to be read, however soon the first retry comes.
    context.route("**/v1/sync/push", spoil_first('{"results": [null]}', spoiled, times=3))
    log_day(page, day(0), sleep_hours="8", steps="9000")
    expect(page.locator("#sync-error")).to_contain_text("Could not send your changes")
    wait_pill(page, "Online · sync error · 1 change queued")  # said on every screen, not only on the Sync one
    pump_until(page, lambda: target.stored(day(0)), 20, "the write on the server after the spoiled answer")
    wait_pill(page, "Online · synced")
    expect(page.locator("#sync-error")).to_have_text("")
    assert [m["status"] for m in outbox(page)] == ["done"]
    assert spoiled == [True, True, True]


def test_a_conflicts_answer_the_page_cannot_read_is_shown_and_asked_again(
    page: Page, context: BrowserContext, target: Target
) -> None:
    """The exchange of conflicts and erasures failing on the page's own side (here an answer that is not
    JSON) is said by the pill and the sync page, not swallowed; the next exchange clears it."""
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="8")
    wait_pill(page, "Online · synced")
    spoiled: list[bool] = []
    context.route("**/v1/conflicts?*", spoil_first("not json", spoiled))
    page.evaluate("window.pulse.engine.exchangeConflicts()")
    wait_pill(page, "Online · sync error")
    expect(page.locator("#sync-error")).to_contain_text("Could not update conflicts and erasures")

    page.evaluate("window.pulse.engine.exchangeConflicts()")  # as the 30-s round or the next sync does
    wait_pill(page, "Online · synced")
    expect(page.locator("#sync-error")).to_have_text("")
    assert spoiled == [True]


FAILED = json.dumps({"error": {"code": "unavailable", "message": "the database is unavailable"}})


PORTAL = "<html><body>Sign in to the Wi-Fi</body></html>"


@pytest.mark.parametrize(("status", "body", "kind", "said"), [
    (503, FAILED, "application/json", "the server failed the push (503, unavailable)"),
    # A 200 that is not a push answer was taken for one that answered nothing: the change stayed queued with
    # no word and no retry, and the page counted it as a sync.
    (200, '{"ok": true}', "application/json",
     "Not sent: the answer to the push was not the sync server's (200, application/json)"),
    (200, PORTAL, "text/html", "Not sent: the answer to the push was not the sync server's (200, text/html)"),
], ids=["5xx", "other-json", "portal-page"])
def test_a_push_the_server_fails_or_something_else_answers_is_shown_until_the_server_takes_the_queue(
    status: int, body: str, kind: str, said: str, page: Page, context: BrowserContext, target: Target
) -> None:
    """A server that is reached but fails every push (a 5xx), or an answer that is not the server's, does not
    hold the queue back in silence: the pill and the sync page say so, with what came back, until a push
    goes through."""
    sign_in(page, target)
    spoiled: list[bool] = []
    # 3: the retry's random backoff may start at 0 s (as above)
    context.route("**/v1/sync/push", spoil_first(body, spoiled, status=status, times=3, kind=kind))
    log_day(page, day(0), sleep_hours="8", steps="9000")
    wait_pill(page, "Online · sync error · 1 change queued")
    expect(page.locator("#sync-error")).to_contain_text(said)
    assert [m["status"] for m in outbox(page)] == ["pending"]
    pump_until(page, lambda: target.stored(day(0)), 30, "the write on the server after three spoiled answers")
    wait_pill(page, "Online · synced")
    expect(page.locator("#sync-error")).to_have_text("")
    assert spoiled == [True, True, True]
    assert [m["status"] for m in outbox(page)] == ["done"]


@pytest.mark.parametrize(("body", "kind"), [('{"ok": true}', "application/json"), (PORTAL, "text/html")],
                         ids=["json", "page"])
def test_a_pull_answered_by_something_that_is_not_the_server_is_a_sync_error_not_a_sync(
    body: str, kind: str, page: Page, context: BrowserContext, target: Target
) -> None:
    """A 200 that is not a shape answer was applied as an empty one (JSON: the page said it had just synced
    and asked again at once, in a loop) or taken for a server out of reach (a page). Now it is a sync error
    naming what came back, the pull is asked again after a backoff from where it stood (no snapshot fetched
    again: nothing here was wrong), and the server's next answer heals it."""
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="8")
    wait_pill(page, "Online · synced")
    spoiled: list[bool] = []
    asked: list[dict[str, str]] = []

    def handle(route: Route) -> None:
        asked.append(shape_params(route.request))
        if len(spoiled) < 3:
            spoiled.append(True)
            route.fulfill(status=200, body=body, headers={"content-type": kind})
        else:
            route.continue_()

    context.route("**/v1/shape?*", handle)
    page.evaluate("window.pulse.engine.startPull()")
    wait_pill(page, "Online · sync error")
    said = f"the answer to the pull was not the sync server's (200, {kind})"
    expect(page.locator("#sync-error")).to_contain_text(said)
    wait_pill(page, "Online · synced", timeout_ms=30_000)  # after the backoff, the server's own answer
    expect(page.locator("#sync-error")).to_have_text("")
    assert spoiled == [True, True, True]
    assert all(a["offset"] != "-1" for a in asked), asked
    expect(page.locator("#today-values")).to_contain_text("8")


def test_a_push_error_goes_once_nothing_is_left_to_push(page: Page, context: BrowserContext, target: Target) -> None:
    """The server fails every push; the one queued change is then discarded (as another tab sending the
    queue would empty it too): the next push finds nothing to send, and the error does not stay up."""
    sign_in(page, target)
    context.route("**/v1/sync/push", lambda route: route.fulfill(
        status=503, body=FAILED, headers={"content-type": "application/json"}))
    log_day(page, day(0), sleep_hours="8")
    wait_pill(page, "Online · sync error · 1 change queued")
    seq = outbox(page)[0]["seq"]
    page.evaluate("async (seq) => { await window.pulse.engine.discard(seq); await window.pulse.engine.push(); }", seq)
    wait_pill(page, "Online · synced")
    expect(page.locator("#sync-error")).to_have_text("")


def test_a_server_failing_the_pull_is_shown_until_it_answers_it(
    page: Page, context: BrowserContext, target: Target
) -> None:
    sign_in(page, target)
    log_day(page, day(0), sleep_hours="8")
    wait_pill(page, "Online · synced")
    spoiled: list[bool] = []
    context.route("**/v1/shape?*", spoil_first(FAILED, spoiled, status=500))
    page.evaluate("window.pulse.engine.startPull()")
    wait_pill(page, "Online · sync error")
    expect(page.locator("#sync-error")).to_contain_text("the server failed the pull (500, unavailable)")
    wait_pill(page, "Online · synced", timeout_ms=30_000)  # the next pull, after a backoff, is answered
    expect(page.locator("#sync-error")).to_have_text("")
    assert spoiled == [True]


@pytest.mark.parametrize(("status", "body", "said"), [
    (500, FAILED, "the server failed the erasures (500, unavailable)"),
    (404, "<html>not here</html>", "the server refused the erasures (404)"),  # a proxy's page, not the server's
    # Another service's JSON: before, taken for "no erasures"
    (200, '{"ok": true}', "the answer to the erasures was not the sync server's (200, application/json)"),
])
def test_a_server_failing_the_exchange_is_a_sync_error(
    status: int, body: str, said: str, page: Page, context: BrowserContext, target: Target
) -> None:
    """A 5xx, or a 4xx, to the erasures is not taken for a server that is away or has none: an erasure the
    server cannot hand over is shown as not applied, and asked for again."""
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    spoiled: list[bool] = []
    context.route("**/v1/erasures?*", spoil_first(body, spoiled, status=status))
    page.evaluate("window.pulse.engine.exchangeConflicts()")
    wait_pill(page, "Online · sync error")
    expect(page.locator("#sync-error")).to_contain_text(f"Could not update conflicts and erasures ({said})")

    page.evaluate("window.pulse.engine.exchangeConflicts()")
    wait_pill(page, "Online · synced")
    expect(page.locator("#sync-error")).to_have_text("")
    assert spoiled == [True]


def test_an_unreachable_server_during_the_exchange_is_not_a_sync_error(
    page: Page, context: BrowserContext, target: Target
) -> None:
    """Offline is not an error of the page's own: the exchange failing to reach the server shows none."""
    sign_in(page, target)
    wait_pill(page, "Online · synced")
    context.route("**/v1/erasures?*", lambda route: route.abort("connectionrefused"))
    page.evaluate("window.pulse.engine.exchangeConflicts()")
    page.wait_for_function("window.pulse.engine.exchanging === null")
    assert page.evaluate("window.pulse.engine.exchangeError") is None
    expect(page.locator("#sync-error")).to_have_text("")
