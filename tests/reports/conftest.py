"""Fixtures for the report tests: a real Postgres database seeded by `pulse-server seed-demo`, a real
`pulse-server` with the replication reader and shape watcher, and a coach's device synced with it.

The database, `pg` and `start_server` fixtures are tests/server/conftest.py's, re-exported here (a
conftest below the root cannot use `pytest_plugins`). The session's database is `pulse_test_<random>`
on PGHOST:PGPORT (default 127.0.0.1:5432), dropped at the end with its replication slot, even when
tests fail.

The demo data is written before the server starts; the server's replication reader takes the rows
that exist when it creates its slot into the shape log, so the coach's first sync gets all of them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from report_support import COACH, PASSWORD, Pulse, server_cli, shape_caught_up, wait_for

HERE = Path(__file__).resolve().parent
SERVER_TESTS = HERE.parent / "server"
if str(SERVER_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVER_TESTS))  # tests/server/conftest.py imports its helpers by plain name


def _server_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("tests_server_conftest", SERVER_TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_server = _server_conftest()
database_url = _server.database_url
db = _server.db
pg = _server.pg
start_server = _server.start_server

assert PASSWORD == _server.PASSWORD


@pytest.fixture(scope="session")
def seeded(database_url: str) -> subprocess.CompletedProcess[str]:
    """`pulse-server seed-demo` run once on the fresh database: the first run's output."""
    done = server_cli(database_url, "seed-demo", "--coach", COACH, "--password-stdin", input=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="session")
def demo_server(seeded: Any, start_server: Callable[..., Any], pg: psycopg.Connection[Any]) -> Any:
    server = start_server(replication_reader="true", shape_watcher="true")
    wait_for(lambda: shape_caught_up(pg), 60, "the replication reader to take in the demo data")
    return server


@pytest.fixture(scope="session")
def coach_device(demo_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Pulse:
    """The demo coach's device, logged in and synced: its replica holds every athlete's entries."""
    device = Pulse(tmp_path_factory.mktemp("coach-demo") / "home")
    device.login(demo_server.url, COACH)
    device.ok("sync")
    return device


@pytest.fixture(scope="session")
def team_files(coach_device: Pulse, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Fitbit team's report (roll-up included) over the Fitbit month, in every format."""
    folder = tmp_path_factory.mktemp("team-report")
    files = {}
    for fmt in ("md", "csv", "json", "html", "pdf"):
        files[fmt] = folder / f"team.{fmt}"
        coach_device.ok("report", "--team", "--athlete", "fitbit-*", "--from", "2016-04-12", "--to", "2016-05-12",
                        "--format", fmt, "-o", str(files[fmt]))
    return files


@pytest.fixture
def fresh_device(tmp_path: Path) -> Generator[Pulse, None, None]:
    yield Pulse(tmp_path / "home")
