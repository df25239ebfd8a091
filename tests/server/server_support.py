"""Helpers for the server tests: a real `pulse-server` process, an HTTP client, mutation builders."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio.from_thread
import httpx
import psycopg

from pulse_core.entry import Entry
from pulse_server.accounts import Principal
from pulse_server.db.entries import PostgresEntryRepository
from pulse_server.push import BatchOutcome, Reconciler
from sync.merge import merge_delete, merge_set
from sync.wire import clamp, parse_mutation

PULSE_SERVER = Path(sys.executable).parent / "pulse-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without any PULSE_* of the caller's, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(settings)
    return env


class PortTaken(RuntimeError):
    """Another process bound the free port between our check and the server's start."""


class ServerProcess:
    """`pulse-server serve` on a free port; its stderr goes to a file shown when a test fails."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: TextIO = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(PULSE_SERVER), "serve", "--port", str(self.port)],
            env=clean_env(**env), stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    log = self.log_text()
                    error = PortTaken if "address already in use" in log else RuntimeError
                    raise error(f"pulse-server exited with {self.proc.returncode}:\n{log}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"pulse-server did not answer /healthz in {timeout_s} s:\n{self.log_text()}")

    def log_text(self, last_lines: int = 80) -> str:
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
        self._log.close()


def started_server(log_path: Callable[[int], Path], env: dict[str, str]) -> ServerProcess:
    """A ready ServerProcess (its log at `log_path(attempt)`), started again on another port, at most three
    times, when another process took its port first; stopped when it does not come up."""
    for attempt in range(3):
        server = ServerProcess(log_path(attempt), env)
        try:
            server.wait_ready()
            return server
        except PortTaken:
            server.stop()
            if attempt == 2:
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str = ""


class Api:
    """An httpx client for one server, optionally signed in as one user."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(path, **kwargs)

    def push(self, client_id: str, mutations: list[dict[str, Any]], protocol: int = 1) -> httpx.Response:
        return self.http.post("/v1/sync/push", json={"protocol": protocol, "client_id": client_id,
                                                     "mutations": mutations})

    def pushed(self, client_id: str, mutations: list[dict[str, Any]]) -> dict[str, Any]:
        """Push and insist on 200; the response body."""
        response = self.push(client_id, mutations)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def entries(self, **params: str) -> list[dict[str, Any]]:
        response = self.http.get("/v1/entries", params=params)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    def entry(self, day: str) -> dict[str, Any] | None:
        found = [e for e in self.entries(**{"from": day, "to": day})]
        return found[0] if found else None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def stamp(ms: int, counter: int, client_id: str) -> str:
    return f"{ms:016d}:{counter:05d}:{client_id}"


def set_mutation(seq: int, day: str, fields: dict[str, Any], hlc: str,
                 base: dict[str, str | None] | None = None) -> dict[str, Any]:
    return {"seq": seq, "date": day, "op": "set", "fields": fields,
            "base": base if base is not None else dict.fromkeys(fields), "hlc": hlc}


def delete_mutation(seq: int, day: str, hlc: str, base: dict[str, str | None] | None = None) -> dict[str, Any]:
    return {"seq": seq, "date": day, "op": "delete", "fields": {}, "base": base or {}, "hlc": hlc}


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The documented error body, checked for its form: {"error": {"code", "message", ...}}."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), error
    return error


class InProcessClient:
    """A blocking client for an ASGI app in this process: httpx.ASGITransport driven through an anyio portal.

    (starlette's TestClient would do, but with plain httpx it warns, and warnings fail the tests.)
    """

    def __init__(self, app: Any, token: str | None = None) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pulse.test",
                                       headers=headers)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self._portal.call(functools.partial(self._http.request, method, url, **kwargs))
        return response

    def close(self) -> None:
        self._portal.call(self._http.aclose)
        self._portal_cm.__exit__(None, None, None)


def merged(history: list[tuple[str, dict[str, Any]]], today: dt.date, server_ms: int,
           skew_limit_ms: int = 60_000) -> list[Entry]:
    """What every replica must hold after these (device, mutation) pairs: the pure merge (sync.merge)."""
    entries: dict[dt.date, Entry] = {}
    for device, raw in history:
        m = parse_mutation(raw, device, today)
        clamped, _ = clamp(m.stamp, server_ms, skew_limit_ms)
        entry = entries.setdefault(m.date, Entry(user="u", date=m.date))
        if m.op == "delete":
            merge_delete(entry, m.base, str(clamped), m.source)
        else:
            merge_set(entry, m.fields, m.base, str(clamped), m.source)
    return [entries[day] for day in sorted(entries)]


def stored(conn: psycopg.Connection[Any], user_id: int) -> list[Entry]:
    """A user's rows in Postgres, tombstones included, as entries comparable with `merged`."""
    rows = PostgresEntryRepository(conn).list_including_deleted(str(user_id), None, None)
    return [dataclasses.replace(e, user="u") for e in rows]


class UnlockedOnly(Reconciler):
    """The unlocked push path, which must not fall back to the locked one (nothing else writes meanwhile)."""

    def apply_batch(self, *args: Any, **kwargs: Any) -> BatchOutcome:
        raise AssertionError("the unlocked path fell back to the locked one")


def must_be_found(principal: Principal | None) -> Principal:
    """`admit` for `Reconciler.apply_batch_unlocked`: the token must name a user."""
    assert principal is not None, "the token was not found"
    return principal
