"""A shape client for the replication tests: follows `/v1/shape` over HTTP as Electric's clients do, and
compares what it holds with what Postgres holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg import sql

from pulse_server.shapes.protocol import ROW_COLUMNS
from sync import stamps_column

Key = str


@dataclass
class Answer:
    at: float  # time.monotonic() when it came
    status: int
    up_to_date: bool
    handle: str | None


@dataclass
class Follower:
    """One client's state: its handle, its offset and its rows (key -> value, the shape's columns)."""

    base_url: str
    token: str
    handle: str | None = None
    offset: str = "-1"
    rows: dict[Key, dict[str, Any]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    handles: set[str] = field(default_factory=set)  # every handle this client was given

    def request(self, live: bool = False, timeout_s: float = 30.0) -> httpx.Response:
        params = {"table": "entries", "offset": self.offset}
        if self.handle is not None and self.offset != "-1":
            params["handle"] = self.handle
        if live:
            params.update(live="true", cursor="0")
        response = httpx.get(f"{self.base_url}/v1/shape", params=params, timeout=timeout_s,
                             headers={"authorization": f"Bearer {self.token}"})
        self.answers.append(Answer(time.monotonic(), response.status_code,
                                   "electric-up-to-date" in response.headers, response.headers.get("electric-handle")))
        return response

    def step(self, live: bool = False) -> httpx.Response:
        """One request, applied: 200 messages into the rows, 409 resets to a refetch with the new handle."""
        response = self.request(live)
        if response.status_code == 409:
            self.handle, self.offset, self.rows = response.headers["electric-handle"], "-1", {}
            self.handles.add(self.handle)
            return response
        if response.status_code != 200:
            return response
        self.handle = response.headers["electric-handle"]
        self.handles.add(self.handle)
        self.offset = response.headers["electric-offset"]
        for message in response.json():
            headers = message["headers"]
            if headers.get("operation") in ("insert", "update"):
                self.rows[message["key"]] = {**self.rows.get(message["key"], {}), **message["value"]}
            elif headers.get("operation") == "delete":
                self.rows.pop(message["key"], None)
        return response

    def follow(self, timeout_s: float = 30.0) -> Follower:
        """Requests until one says up-to-date (a 409 refetches, a 503 is asked again after Retry-After)."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.step()
            if response.status_code == 200 and "electric-up-to-date" in response.headers:
                return self
            if response.status_code not in (200, 409, 503):
                raise AssertionError(f"/v1/shape answered {response.status_code}: {response.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not up to date after {timeout_s} s; last answer {response.status_code}")
            if response.status_code == 503:
                assert response.headers.get("retry-after"), response.headers
                time.sleep(0.1)

    def values(self) -> dict[tuple[int, str], dict[str, Any]]:
        """The rows as (user_id, date) -> the table's columns."""
        rows = (stamps_column.expand(v) for v in self.rows.values())
        return {(int(v["user_id"]), v["date"]): {c: v.get(c) for c in ROW_COLUMNS} for v in rows}


def table_values(conn: psycopg.Connection[Any], user_id: int) -> dict[tuple[int, str], dict[str, Any]]:
    """This user's entries as the shape carries them (Postgres text form: format('%s') is each type's
    output function, as pgoutput's)."""
    query = sql.SQL("SELECT {} FROM entries WHERE user_id = %s").format(sql.SQL(", ").join(
        sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE format('%%s', {c}) END").format(c=sql.Identifier(c))
        for c in ROW_COLUMNS))
    found = {}
    for values in conn.execute(query, (user_id,)):
        row = dict(zip(ROW_COLUMNS, values, strict=True))
        found[(int(row["user_id"]), str(row["date"]))] = row
    return found
