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

from pathlib import Path

import pytest

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
