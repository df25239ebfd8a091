"""Fixtures for the PWA tests: a real `pulse-server` on a throwaway database, headless Chromium, targets.

A **target** is one place the app is served from, with everything a test needs to drive it and to
check behind it (see `Target`): `cloud` is `pulse-server serve` with the shape API on, on
`pulse_browser_<random>` at PGHOST:PGPORT (dropped at the end with its replication slot); `agent` is
`pulse agent --serve` on a device of that server. `another_target` is a second athlete on the cloud
server (two accounts in one browser), and `web_target` an athlete on a second server instance that
serves the app from a copy of its files (`web_root`), which the update tests change on disk.
`server_at` starts a server whose clock starts at a given UTC time (libfaketime), and `target_on` makes
an athlete on any of these servers.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright's sync API; each test gets a fresh
browser context (its own IndexedDB, service worker and cache), 360 px wide like a small phone.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, ViewportSize
from throwaway_db import migrated_database

HERE = Path(__file__).resolve().parent
SYNC_TESTS = HERE.parent / "sync"
if str(SYNC_TESTS) not in sys.path:
    sys.path.insert(0, str(SYNC_TESTS))  # the device and server helpers of the sync tests, by plain name

from browser_support import STAMPED, Target  # noqa: E402
from sync_support import PASSWORD, Device, PulseServer, ServedDevice, User, shifted_clock, wait_replicated  # noqa: E402

from pulse_server.accounts import add_user, find_user, revoke_tokens  # noqa: E402
from pulse_server.db.database import Database  # noqa: E402
from pulse_server.settings import Settings  # noqa: E402
from pulse_server.web import STATIC  # noqa: E402

VIEWPORT: ViewportSize = {"width": 360, "height": 780}
LOCALE = "en-US"  # numbers are written in the browser's locale (9,100); a test may ask for another
_servers: list[PulseServer] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test shows what the server wrote."""
    report: pytest.TestReport = yield
    if report.failed:
        for server in _servers:
            report.sections.append((f"pulse-server {server.url} (last lines)", server.log_text()))
    return report


# -- the cloud server ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrated_database("pulse_browser") as url:
        yield url


@pytest.fixture(scope="session")
def pg(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(database_url, autocommit=True, application_name="pulse-browser-tests") as conn:
        yield conn


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(Settings(database_url=database_url, pool_size=1))
    yield database
    database.dispose()


def _server(database_url: str, log_dir: Path, **extra: str) -> Iterator[PulseServer]:
    env = {"PULSE_DATABASE_URL": database_url, "PULSE_LOGIN_FREE_FAILURES": "100000",
           "PULSE_LOGIN_ADDRESS_FREE_FAILURES": "100000",
           "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true", **extra}
    server = PulseServer(log_dir / "server.log", env)
    _servers.append(server)
    server.wait_ready()
    yield server
    server.close()
    _servers.remove(server)


@pytest.fixture(scope="session")
def cloud_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    yield from _server(database_url, tmp_path_factory.mktemp("server-logs"))


@pytest.fixture(scope="session")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the app's files, for tests that change them on disk (as a deploy does)."""
    root = tmp_path_factory.mktemp("web") / "static"
    shutil.copytree(STATIC, root)
    return root


@pytest.fixture(scope="session")
def web_server(database_url: str, web_root: Path, cloud_server: PulseServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A second instance of the cloud server (same database) serving the app from `web_root`."""
    yield from _server(database_url, tmp_path_factory.mktemp("web-server-logs"), PULSE_WEB_ROOT=str(web_root))


@pytest.fixture
def server_at(database_url: str, tmp_path: Path) -> Iterator[Callable[..., PulseServer]]:
    """`server_at("2026-12-03 20:00:00")`: a cloud server (same database) whose clock starts at that UTC
    time and runs on (libfaketime). `browser_support.move_clock` starts it again later on."""
    started: list[Iterator[PulseServer]] = []

    def start(at: str) -> PulseServer:
        logs = tmp_path / f"server-at-{len(started)}"
        logs.mkdir()
        run = _server(database_url, logs, TZ="UTC", **shifted_clock(f"@{at}"))
        started.append(run)
        return next(run)

    yield start
    for run in started:
        next(run, None)  # stops it (a no-op for one already stopped)


# -- targets -------------------------------------------------------------------------------------
def _cloud_target(server: PulseServer, db: Database, pg: psycopg.Connection[tuple[Any, ...]],
                  tmp_path: Path) -> Target:
    name = f"web-{secrets.token_hex(5)}"
    with db.session() as session:
        row = add_user(session, name, PASSWORD, False)
    assert row.id is not None
    user = User(row.id, name, PASSWORD)

    def new_device(label: str) -> Device:
        device = Device(label, tmp_path / f"device-{label}", server.url)
        done = device.login(user)
        assert done.returncode == 0, done.stderr
        return device

    def stored(date: str) -> dict[str, str | None] | None:
        columns = ", ".join(f"{c}::text" for c in STAMPED)
        found = pg.execute(f"SELECT {columns} FROM entries WHERE user_id = %s AND date = %s",
                           (user.id, date)).fetchone()
        return None if found is None else dict(zip(STAMPED, found, strict=True))

    def revoke_sign_ins() -> None:
        with db.session() as session:
            account = find_user(session, name)
            assert account is not None
            revoke_tokens(session, account)

    return Target("cloud", server.url, name, PASSWORD, new_device, stored, lambda: wait_replicated(pg, user.id),
                  revoke_sign_ins)


def _agent_target(server: PulseServer, db: Database, pg: psycopg.Connection[tuple[Any, ...]],
                  tmp_path: Path) -> Iterator[Target]:
    """`pulse agent --serve` on a device logged in to the cloud server: the page talks to the device.

    Its CLI device is the served device itself (`pulse log` and `pulse sync` on the same home), and
    `stored` reads Postgres, at the far end of the chain page -> device -> sync server."""
    cloud = _cloud_target(server, db, pg, tmp_path)
    served_home = cloud.new_device("served")
    served = ServedDevice(served_home, tmp_path / "agent-serve.log")
    try:
        yield Target("agent", served.url, cloud.username, cloud.password, lambda _name: served_home, cloud.stored,
                     cloud.settle)
    finally:
        served.close()


@pytest.fixture
def target_on(db: Database, pg: psycopg.Connection[tuple[Any, ...]], tmp_path: Path) -> Callable[[PulseServer], Target]:
    """A fresh athlete on a given cloud server (one started by `server_at`, say)."""
    made: list[Target] = []

    def make(server: PulseServer) -> Target:
        folder = tmp_path / f"on-{len(made)}"
        folder.mkdir()
        made.append(_cloud_target(server, db, pg, folder))
        return made[-1]

    return make


@pytest.fixture
def another_target(cloud_server: PulseServer, db: Database, pg: psycopg.Connection[tuple[Any, ...]],
                   tmp_path: Path) -> Target:
    """A second athlete on the cloud server: the same browser profile signs in as both."""
    (tmp_path / "another").mkdir()
    return _cloud_target(cloud_server, db, pg, tmp_path / "another")


@pytest.fixture
def web_target(web_server: PulseServer, db: Database, pg: psycopg.Connection[tuple[Any, ...]],
               tmp_path: Path) -> Target:
    """An athlete on the server that serves the app from `web_root`."""
    return _cloud_target(web_server, db, pg, tmp_path)


@pytest.fixture(params=["cloud"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A fresh athlete on one target. Tests run on `cloud`; a test may ask for more with
    `@pytest.mark.parametrize("target", ["cloud", "agent"], indirect=True)`."""
    server: PulseServer = request.getfixturevalue("cloud_server")
    db: Database = request.getfixturevalue("db")
    pg: psycopg.Connection[tuple[Any, ...]] = request.getfixturevalue("pg")
    if request.param == "cloud":
        yield _cloud_target(server, db, pg, tmp_path)
    elif request.param == "agent":
        yield from _agent_target(server, db, pg, tmp_path)
    else:
        raise AssertionError(f"unknown target {request.param}")


# -- the browser ---------------------------------------------------------------------------------
@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=VIEWPORT, service_workers="allow", locale=LOCALE)
    yield context
    context.close()


@dataclass
class PageErrors:
    messages: list[str]


def watch_errors(page: Page) -> PageErrors:
    """Collect the page's uncaught errors and the app's console errors."""
    errors = PageErrors([])
    page.on("pageerror", lambda exc: errors.messages.append(f"uncaught: {exc}"))

    def on_console(message: ConsoleMessage) -> None:
        # Failed fetches while offline are expected and logged by Chromium itself, not by the app.
        if message.type == "error" and "Failed to load resource" not in message.text \
                and "net::ERR_INTERNET_DISCONNECTED" not in message.text:
            errors.messages.append(f"console: {message.text}")

    page.on("console", on_console)
    return errors


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails the test on any uncaught error or console error of the app."""
    page = context.new_page()
    errors = watch_errors(page)
    yield page
    assert errors.messages == [], errors.messages


@pytest.fixture
def new_profile(browser: Browser) -> Iterator[Callable[..., Page]]:
    """A page in a fresh browser context: another browser profile (its own IndexedDB, worker and caches),
    failing the test on an error like `page`. Options: `clock` starts the profile's clock at that time
    (it runs on; Playwright's clock), and any of `new_context`'s, e.g. `timezone_id`."""
    opened: list[tuple[BrowserContext, PageErrors]] = []

    def open_profile(clock: dt.datetime | None = None, **options: Any) -> Page:
        context = browser.new_context(viewport=VIEWPORT, service_workers="allow", **{"locale": LOCALE, **options})
        if clock is not None:
            context.clock.install(time=clock)
        page = context.new_page()
        opened.append((context, watch_errors(page)))
        return page

    yield open_profile
    for context, _ in opened:
        context.close()
    for _, errors in opened:
        assert errors.messages == [], errors.messages


@pytest.fixture
def new_tab(context: BrowserContext) -> Iterator[Callable[[], Page]]:
    """Open more tabs in the same context (one browser profile: IndexedDB, service worker, caches),
    each failing the test on an error like `page`."""
    watched: list[PageErrors] = []

    def open_tab() -> Page:
        tab = context.new_page()
        watched.append(watch_errors(tab))
        return tab

    yield open_tab
    for errors in watched:
        assert errors.messages == [], errors.messages


