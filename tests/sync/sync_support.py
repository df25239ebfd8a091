"""Helpers for the end-to-end sync tests: devices driven through the installed `pulse`, a `pulse-server`
process that can be killed and restarted on its port, and the server's state read from Postgres.

A device is a PULSE_HOME folder; every command is a real `pulse` process, so the outbox, the persisted
breaker and the shape cursor all live on disk between commands exactly as they do for a user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import psycopg
from calendar_days import day as day  # re-exported: the sync tests take it from here
from calendar_days import today

BIN = Path(sys.executable).parent
PULSE = BIN / "pulse"
PULSE_SERVER = BIN / "pulse-server"
PASSWORD = "correct horse battery"  # every test user has it (it passes the server's rules)

# `pulse log` options by field name.
FLAGS = {"sleep_hours": "--sleep", "hrv_ms": "--hrv", "hrv_method": "--hrv-method", "steps": "--steps",
         "weight_kg": "--weight", "note": "--note"}
STAMPED = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note", "deleted")


# libfaketime (Debian's `faketime`, installed by .ci/test): a process's wall clock shifted or set, its
# monotonic clock left alone (timeouts and event loops keep working).
FAKETIME_LIBS = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))


def shifted_clock(spec: str) -> dict[str, str]:
    """Environment for a process whose wall clock is `spec` (faketime: "+2d", "-3h", "@2026-12-03 20:00:00")."""
    assert FAKETIME_LIBS, "libfaketime is missing: apt-get install faketime"
    return {"LD_PRELOAD": str(FAKETIME_LIBS[0]), "FAKETIME": spec, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": str(Path(__file__).parent / "faketime_site")}  # time.sleep made to work, see there


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment without any PULSE_* in it, plus the given variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(settings)
    return env


def wait_for(condition: Any, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


# -- the server ------------------------------------------------------------------------------------
class PulseServer:
    """`pulse-server serve` on a fixed port, so it can be killed and started again where devices expect it."""

    def __init__(self, log_path: Path, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = env
        self._log: TextIO = log_path.open("a")
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(PULSE_SERVER), "serve", "--port", str(self.port)],
                                env=clean_env(**self.env), stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pulse-server exited with {self.proc.returncode}:\n{self.log_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"pulse-server did not answer /healthz in {timeout_s} s:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, requests in flight die with the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port (after `kill` or `stop`)."""
        assert self.proc.poll() is not None, "the server is still running"
        self.proc = self._spawn()
        self.wait_ready()

    def log_text(self, last_lines: int = 60) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-last_lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._log.close()


@dataclass
class User:
    id: int
    username: str
    password: str = PASSWORD


# -- a device --------------------------------------------------------------------------------------
class Device:
    """One install of the CLI: a home folder, driven by running the installed `pulse`."""

    def __init__(self, name: str, home: Path, server_url: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.home = home
        self.server_url = server_url
        self.env = env or {}  # e.g. TZ, or a shifted clock (faketime's LD_PRELOAD and FAKETIME)

    def __repr__(self) -> str:
        return f"Device({self.name})"

    def run(self, *args: str, input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = clean_env(PULSE_HOME=str(self.home), COLUMNS="120", NO_COLOR="1", **self.env)
        return subprocess.run([str(PULSE), *args], capture_output=True, text=True, env=env, input=input,
                              timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = clean_env(PULSE_HOME=str(self.home), COLUMNS="120", NO_COLOR="1")
        return subprocess.Popen([str(PULSE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)

    def ok(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, input=input)
        assert done.returncode == 0, f"{self.name}: pulse {' '.join(args)} -> {done.returncode}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    # commands
    def login(self, user: User, server_url: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("login", "--server", server_url or self.server_url, "--username", user.username,
                        "--password-stdin", input=user.password + "\n")

    def log(self, date: str, clear: tuple[str, ...] = (), **fields: Any) -> subprocess.CompletedProcess[str]:
        args = ["log", "--date", date]
        for name, value in fields.items():
            args += [FLAGS[name], str(value)]
        for name in clear:
            args += ["--clear", name]
        return self.ok(*args)

    def delete(self, date: str) -> subprocess.CompletedProcess[str]:
        return self.ok("delete", date, "--yes")

    def sync(self) -> subprocess.CompletedProcess[str]:
        return self.run("sync")

    def synced(self) -> subprocess.CompletedProcess[str]:
        done = self.sync()
        assert done.returncode == 0, f"{self.name}: pulse sync -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def history(self, start: str, end: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.json("history", "--from", start, "--to", end)["entries"]
        return entries

    def conflicts(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json("conflicts")["conflicts"]
        return rows

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = self.json("status")
        return info

    # the store, read (and in a few documented places written) behind the CLI's back
    @contextlib.contextmanager
    def store(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.home / "pulse.db", isolation_level=None, timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def meta(self, key: str) -> str | None:
        with self.store() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.store() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def client_id(self) -> str:
        value = self.meta("client_id")
        assert value
        return value

    def outbox(self) -> list[dict[str, Any]]:
        with self.store() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM outbox ORDER BY seq").fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for key in ("fields", "base", "result"):
                item[key] = json.loads(item[key]) if item[key] else None
            out.append(item)
        return out

    def outbox_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.outbox():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    def stamps(self) -> dict[str, dict[str, str | None]]:
        """The local view's per-field stamps by date, tombstones included."""
        columns = ", ".join(f"{f}_hlc" for f in STAMPED)
        with self.store() as conn:
            rows = conn.execute(f"SELECT date, {columns} FROM entries WHERE user_id = ''").fetchall()
        return {r[0]: dict(zip(STAMPED, r[1:], strict=True)) for r in rows}

    def breaker(self) -> dict[str, Any]:
        raw = self.meta("breaker")
        return json.loads(raw) if raw else {}

    def end_breaker_cooldown(self) -> None:
        """What the breaker's cool-down (15 s and more) would do, without waiting for it: the next
        command may try the server again (half-open). The failure count is kept."""
        state = self.breaker()
        if state:
            state["open_until"] = 0.0
            self.set_meta("breaker", json.dumps(state))


# -- the server's state, read behind the API -------------------------------------------------------
def server_stamps(pg: psycopg.Connection[Any], user_id: int) -> dict[str, dict[str, str | None]]:
    """Postgres rows' per-field stamps by date, tombstones included (comparable with Device.stamps)."""
    columns = ", ".join(f"{f}_hlc" for f in STAMPED)
    rows = pg.execute(f"SELECT date::text, {columns} FROM entries WHERE user_id = %s", (user_id,)).fetchall()
    return {r[0]: dict(zip(STAMPED, r[1:], strict=True)) for r in rows}


def applied_mutations(pg: psycopg.Connection[Any], user_id: int) -> list[tuple[str, int, str]]:
    """(client_id, seq, status) of every mutation the server recorded for this user."""
    rows = pg.execute("SELECT client_id, seq, result->>'status' FROM applied_mutations WHERE user_id = %s"
                      " ORDER BY client_id, seq", (user_id,)).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def audit(pg: psycopg.Connection[Any], user_id: int) -> list[dict[str, Any]]:
    rows = pg.execute("SELECT date::text, client_id, seq, field, kept, lost, kept_hlc, lost_hlc, rule, clamped"
                      " FROM conflicts WHERE user_id = %s ORDER BY id", (user_id,)).fetchall()
    keys = ("date", "client_id", "seq", "field", "kept", "lost", "kept_hlc", "lost_hlc", "rule", "clamped")
    return [dict(zip(keys, r, strict=True)) for r in rows]


_NOT_CAUGHT_UP = """
SELECT count(*) FROM entries e
LEFT JOIN shape_rows s ON s.user_id = e.user_id AND s.date = e.date
WHERE e.user_id = %s AND (s.value IS NULL OR EXISTS (
    SELECT 1 FROM jsonb_each_text(to_jsonb(e)) kv
    WHERE kv.key LIKE '%%\\_hlc' AND kv.value IS DISTINCT FROM s.value ->> kv.key))
"""


def wait_replicated(pg: psycopg.Connection[Any], user_id: int, timeout_s: float = 20.0) -> None:
    """Wait until the shape log shows every committed write of this user.

    Pulls are eventually consistent: a device that syncs a few milliseconds after another one pushed
    may not see that push until its next sync. Tests that compare replicas wait for the replication
    reader here instead of sleeping."""

    def caught_up() -> bool:
        row = pg.execute(_NOT_CAUGHT_UP, (user_id,)).fetchone()
        return row is not None and int(row[0]) == 0

    wait_for(caught_up, timeout_s, f"the shape log to catch up with user {user_id}'s entries")


def server_entries(url: str, token: str, start: str, end: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30) as http:
        response = http.get("/v1/entries", params={"from": start, "to": end})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def server_conflicts(url: str, token: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30) as http:
        response = http.get("/v1/conflicts", params={"limit": 1000})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["conflicts"]
    return rows


# -- data ------------------------------------------------------------------------------------------
FITBIT = Path(__file__).resolve().parents[1] / "data" / "fitbit"


def fitbit_export(folder: Path, days: int, last_day: dt.date | None = None) -> Path:
    """A Fitbit (Fitabase) export of one user with `days` consecutive worn days ending `last_day`.

    The rows are the real ones of tests/data/fitbit, taken in turn (days the tracker was not worn left
    out) and re-dated, so every day is a new entry and one import queues one mutation per day."""
    import csv

    last = last_day or today() - dt.timedelta(days=1)
    with (FITBIT / "dailyActivity_merged.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        worn = [row for row in reader if int(row["TotalSteps"]) > 0]
    assert header is not None
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "dailyActivity_merged.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for i in range(days):
            date = last - dt.timedelta(days=days - 1 - i)
            row = dict(worn[i % len(worn)], Id="1", ActivityDate=f"{date.month}/{date.day}/{date.year}")
            writer.writerow(row)
    return folder


# -- `pulse agent --serve` ---------------------------------------------------------------------------
BROWSER = "browser0000000001"  # a browser's client id in the device app tests


class ServedDevice:
    """`pulse agent --serve` on a device's home, on a free port, driven over HTTP like a browser."""

    def __init__(self, device: Device, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("w")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [str(PULSE), "agent", "--serve", "--port", str(self.port), "--interval", "2"],
            env=clean_env(PULSE_HOME=str(device.home), NO_COLOR="1"), stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self._up, 30, f"pulse agent --serve on {self.url}", every_s=0.1)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pulse agent --serve exited:\n{self.log_path.read_text()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def sign_in(self, username: str, password: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/auth/token", json={"username": username, "password": password}, timeout=10)

    def token(self, user: User) -> str:
        response = self.sign_in(user.username, user.password)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def push(self, token: str, mutations: list[dict[str, Any]], client_id: str = BROWSER) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/sync/push", headers={"authorization": f"Bearer {token}"}, timeout=10,
                          json={"protocol": 1, "client_id": client_id, "mutations": mutations})

    def shape(self, token: str, timeout: float = 30, **params: str) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/shape", params={"table": "entries", **params}, timeout=timeout,
                         headers={"authorization": f"Bearer {token}"})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
