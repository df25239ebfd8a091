"""Root of the test suite. Its folder is on sys.path, so `throwaway_db` serves every test folder.

Every test is marked by the folder it lives in, so a tier is one `-m` away (README.md, "Tests"):

    unit         pure code, in memory (the domain, the wire format, the merge, parsers, a fake server)
    integration  real SQLite stores and in-process apps; no Postgres, no processes
    postgres     needs the PostgreSQL at PGHOST:PGPORT (default 127.0.0.1:5432)
    e2e          runs real `pulse` or `pulse-server` processes
    browser      drives headless Chromium

The fast tier, `-m "unit or integration"`, needs no Postgres and no other process.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

HERE = Path(__file__).resolve().parent
# Folder -> its markers. A folder missing here fails the run: every test belongs to a tier.
TIERS: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),
    "integration": ("integration",),
    "server": ("postgres", "e2e"),
    "sync": ("postgres", "e2e"),
    "e2e": ("e2e",),
    "reports": ("postgres", "e2e"),
    "drill": ("postgres", "e2e"),
    "browser": ("browser", "postgres", "e2e"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.resolve().relative_to(HERE).parts[0]
        if folder not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests/{folder} has no tier in tests/conftest.py TIERS")
        for marker in TIERS[folder]:
            item.add_marker(marker)


# -- Midnight ------------------------------------------------------------------------------------------
# A test reads today when it needs it (calendar_days.py); one that began a moment before midnight would
# still date a write by one day and check it by the next. Such a test starts just after midnight instead:
# a minute and a half at most, and only in a run that crosses midnight.
MIDNIGHT_MARGIN_S = 90


def seconds_to_midnight(now: dt.datetime) -> float:
    return (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), now.tzinfo) - now).total_seconds()


@pytest.fixture(autouse=True)
def not_across_midnight() -> None:
    """Local midnight (the processes' calendar) and UTC midnight (the server's, in the server tests)."""
    left = min(seconds_to_midnight(dt.datetime.now()), seconds_to_midnight(dt.datetime.now(dt.UTC)))
    if left < MIDNIGHT_MARGIN_S:
        time.sleep(left + 1)


# -- Chromium, for the app's tests (tests/browser) and the reports' (tests/reports) ----------------------
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """One Playwright for the whole run: its sync API cannot start inside another one still open (the
    reports' tests failed at setup after the app's tests when each folder had its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    yield browser
    browser.close()
