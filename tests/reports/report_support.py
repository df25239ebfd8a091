"""Helpers for the report tests: the installed `pulse` and `pulse-server` run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

PASSWORD = "correct horse battery"  # tests/server/conftest.py gives every test user this one

BIN = Path(sys.executable).parent
PULSE = BIN / "pulse"
PULSE_SERVER = BIN / "pulse-server"
COACH = "coach-demo"
FITBIT_USERS = 33
WELLTORY_USERS = 185


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"COLUMNS": "120", "NO_COLOR": "1", **extra})
    return env


def server_cli(url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `pulse-server`, pointed at the test database."""
    return subprocess.run([str(PULSE_SERVER), *args], capture_output=True, text=True, input=input, timeout=300,
                          env=clean_env(PULSE_DATABASE_URL=url))


class Pulse:
    """One device: a home folder, driven by running the installed `pulse`."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PULSE), *args], capture_output=True, text=True, input=input, timeout=300,
                              env=clean_env(PULSE_HOME=str(self.home)))

    def ok(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = self(*args, input=input)
        assert done.returncode == 0, f"pulse {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def login(self, url: str, username: str) -> None:
        self.ok("login", "--server", url, "--username", username, "--password-stdin", input=PASSWORD + "\n")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def shape_caught_up(pg: psycopg.Connection[Any]) -> bool:
    """Every entry is in the shape log's current rows (what a device's first pull is served from)."""
    row = pg.execute("SELECT (SELECT count(*) FROM entries) = (SELECT count(*) FROM shape_rows)").fetchone()
    return bool(row and row[0])
