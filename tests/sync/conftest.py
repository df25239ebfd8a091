"""Fixtures for the end-to-end sync tests: Postgres, `pulse-server` processes and devices.

These re-declare what they need from tests/server/conftest.py (a conftest below the root cannot use
`pytest_plugins`) with one difference: servers here run the replication reader and the shape watcher,
because devices pull through `/v1/shape`. The session's database is `pulse_sync_<random>` on the main
cluster (PGHOST:PGPORT, default 127.0.0.1:5432), dropped at the end with its replication slot, even when tests fail.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sync_support import PASSWORD, Device, PulseServer, User
from throwaway_db import migrated_database

from pulse_server.accounts import add_user, find_user, issue_token
from pulse_server.db.database import Database
from pulse_server.settings import Settings

_running: list[PulseServer] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test shows what the server processes wrote."""
    report: pytest.TestReport = yield
    if report.failed:
        for server in _running:
            report.sections.append((f"pulse-server {server.url} (last lines)", server.log_text()))
    return report


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrated_database("pulse_sync") as url:
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(Settings(database_url=database_url, pool_size=2))
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def pg(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection to the test database, for looking behind the API."""
    with psycopg.connect(database_url, autocommit=True, application_name="pulse-sync-tests") as conn:
        yield conn


@pytest.fixture(scope="session")
def start_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PulseServer]]:
    """`start_server(**settings)`: a `pulse-server serve` with the shape API on, plus the given PULSE_*
    settings (`database_url=` points it at another database); all are stopped at the end."""
    logs = tmp_path_factory.mktemp("server-logs")
    counter = itertools.count(1)
    started: list[PulseServer] = []

    def start(**settings: str) -> PulseServer:
        env = {"PULSE_DATABASE_URL": database_url, "PULSE_LOGIN_FREE_FAILURES": "100000",
               "PULSE_LOGIN_ADDRESS_FREE_FAILURES": "100000",
               "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true"}
        env.update({f"PULSE_{k.upper()}": v for k, v in settings.items()})
        server = PulseServer(logs / f"server-{next(counter)}.log", env)
        started.append(server)
        _running.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.close()
        _running.remove(server)


@pytest.fixture(scope="session")
def server(start_server: Callable[..., PulseServer]) -> PulseServer:
    """The shared server: most tests use it, each with its own users."""
    return start_server()


@pytest.fixture(scope="session")
def make_user(db: Database) -> Callable[..., User]:
    """A new athlete with the harness's password (created in the database, no HTTP round trip)."""

    def make(prefix: str = "ath") -> User:
        name = f"{prefix}-{secrets.token_hex(5)}"
        with db.session() as session:
            row = add_user(session, name, PASSWORD, False)
        assert row.id is not None
        return User(row.id, name)

    return make


@pytest.fixture(scope="session")
def token_for(db: Database) -> Callable[[User], str]:
    """A fresh bearer token for a user, issued in the database (for reading the API as them)."""

    def issue(user: User) -> str:
        with db.session() as session:
            row = find_user(session, user.username)
            assert row is not None
            token, _ = issue_token(session, row, 1)
        return token

    return issue


@pytest.fixture
def make_device(tmp_path: Path, server: PulseServer) -> Callable[..., Device]:
    """`make_device("A")`: a fresh home folder whose default server is the shared one."""

    def make(name: str, server_url: str | None = None) -> Device:
        return Device(name, tmp_path / name, server_url or server.url)

    return make
