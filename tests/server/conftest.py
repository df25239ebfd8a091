"""Server fixtures: a throwaway Postgres database per run, real `pulse-server` processes, users.

Everything runs against the real Postgres at PGHOST:PGPORT (default 127.0.0.1:5432; never SQLite): the session creates
`pulse_test_<random>`, migrates it, and drops it at the end, even when tests fail.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Generator, Iterator

import psycopg
import pytest
from server_support import Api, PortTaken, ServerProcess, User
from throwaway_db import migrated_database

from pulse_server.accounts import add_user
from pulse_server.db.database import Database
from pulse_server.settings import Settings

# A password that passes the server's rules; every test user has it.
PASSWORD = "correct horse battery"
_running: list[ServerProcess] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test shows what the server processes wrote to stderr."""
    report = yield
    if report.failed:
        for server in _running:
            report.sections.append((f"pulse-server {server.url}: last lines of {server.log_path}",
                                    server.log_text(40)))
    return report


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrated_database("pulse_test") as url:
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(Settings(database_url=database_url, pool_size=4))
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def pg(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection to the test database, for looking behind the API."""
    with psycopg.connect(database_url, autocommit=True, application_name="pulse-tests") as conn:
        yield conn


@pytest.fixture(scope="session")
def start_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """Start a `pulse-server serve` with the given PULSE_* settings; all are stopped at the end."""
    logs = tmp_path_factory.mktemp("server-logs")
    counter = itertools.count(1)
    started: list[ServerProcess] = []

    def start(**settings: str) -> ServerProcess:
        env = {"PULSE_DATABASE_URL": database_url, "PULSE_LOGIN_FREE_FAILURES": "100000",
               "PULSE_LOGIN_ADDRESS_FREE_FAILURES": "100000"}
        env.update({f"PULSE_{k.upper()}": v for k, v in settings.items()})
        for attempt in range(3):
            server = ServerProcess(logs / f"server-{next(counter)}.log", env)
            started.append(server)
            _running.append(server)
            try:
                server.wait_ready()
            except PortTaken:
                if attempt == 2:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    yield start
    for server in started:
        server.stop()
        _running.remove(server)


@pytest.fixture(scope="session")
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The shared server process (login rate limit raised: every test signs in from 127.0.0.1)."""
    return start_server()


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


@pytest.fixture(scope="session")
def make_user(db: Database, server: ServerProcess) -> Callable[..., User]:
    """Create a user in the database and sign in over HTTP: a User with a bearer token."""

    def make(coach: bool = False, prefix: str = "athlete") -> User:
        name = unique_name("coach" if coach else prefix)
        with db.session() as session:
            row = add_user(session, name, PASSWORD, coach)
        assert row.id is not None
        user = User(row.id, name, PASSWORD)
        with Api(server.url) as anonymous:
            response = anonymous.post("/v1/auth/token", json={"username": name, "password": PASSWORD})
        assert response.status_code == 200, response.text
        user.token = response.json()["access_token"]
        return user

    return make


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Callable[..., Api]]:
    """`client(user)` is an Api signed in as that user (`client()` anonymous); closed after the test."""
    opened: list[Api] = []

    def open_for(user: User | None = None, url: str | None = None) -> Api:
        api = Api(url or server.url, user.token if user else None)
        opened.append(api)
        return api

    yield open_for
    for api in opened:
        api.close()
