"""`pulse verify` and the agent's scheduled check: does this device hold exactly what the server holds?

The device's copy of the server's rows (`server_entries`, fed by the shape) is compared with the server
by digests (sync/checksums.py, docs/verify.md), never the local view: a change still waiting to be
pushed is not drift. One request of month digests settles a clean device. A month that differs is
looked at again after catching up the shape (a change the device has simply not pulled yet is not
drift), day by day; a repair fetches the full rows of the days that still differ, writes them into
`server_entries` (and drops the device's rows the server does not have), rebuilds the local view as a
sync round does, and checks again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from pulse_cli.agent import replica
from pulse_cli.agent.account import Account
from pulse_cli.bootstrap import Device
from pulse_cli.store import meta
from pulse_cli.store.connection import write_meta
from pulse_cli.store.entries import COLUMNS, OWNER, SqliteEntryRepository, row_to_entry
from pulse_core.entry import Entry
from pulse_core.errors import PulseError
from sync.checksums import day_digests, differing_parts, month_bounds, month_digests
from sync.client import SyncClient

if TYPE_CHECKING:
    from pulse_cli.agent.engine import SyncEngine

log = logging.getLogger("pulse.agent")
ROWS_PER_REQUEST = 366  # the server's limit of days per GET /v1/checksums/rows


@dataclass
class DayDiff:
    user: str  # the username whose day it is (the device owner's own, or a coach's athlete)
    date: dt.date
    kind: str  # "missing" (on the device), "extra" (on the device only) or "different"
    parts: list[str] = field(default_factory=list)  # what differs, once the server's row was read
    repaired: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"user": self.user, "date": self.date.isoformat(), "kind": self.kind, "differences": self.parts,
                "repaired": self.repaired}


@dataclass
class VerifyReport:
    first: dt.date | None
    last: dt.date | None
    coach: bool = False  # a coach's device verifies every athlete's rows: lines name the athlete
    months: int = 0  # months compared (with rows on either side)
    days_checked: int = 0  # days with a row on the server, as of the first answer
    differences: list[DayDiff] = field(default_factory=list)
    remaining: list[DayDiff] = field(default_factory=list)  # after a repair: what still differs
    repaired: bool = False
    requests: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0

    @property
    def clean(self) -> bool:
        return not (self.remaining if self.repaired else self.differences)

    def as_json(self) -> dict[str, Any]:
        return {"from": self.first and self.first.isoformat(), "to": self.last and self.last.isoformat(),
                "clean": self.clean, "months": self.months, "days_checked": self.days_checked,
                "differences": [d.as_json() for d in self.differences], "repaired": self.repaired,
                "remaining": [d.as_json() for d in self.remaining], "requests": self.requests,
                "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent}


# -- what it costs ------------------------------------------------------------------------------------
class MeteredTransport(httpx.BaseTransport):
    """Counts the requests and the bytes on the wire (request and status lines, headers, bodies)."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.requests = 0
        self.received = 0
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.sent += len(request.method) + len(request.url.raw_path) + 11 + _headers_size(request.headers)
        with contextlib.suppress(httpx.RequestNotRead):  # a streamed body (none is sent here)
            self.sent += len(request.content)
        response = self.inner.handle_request(request)
        self.received += 17 + _headers_size(response.headers)  # "HTTP/1.1 200 OK\r\n" and the headers
        response.stream = _CountingStream(response.stream, self)
        return response

    def close(self) -> None:
        self.inner.close()


def _headers_size(headers: httpx.Headers) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers.raw) + 2


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, meter: MeteredTransport) -> None:
        self.inner = inner
        self.meter = meter

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.meter.received += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


# -- the device's side ----------------------------------------------------------------------------------
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM server_entries WHERE date >= ? AND date <= ?"


def local_days(conn: sqlite3.Connection, keys: Mapping[str, str], first: dt.date | None,
               last: dt.date | None) -> dict[str, dict[dt.date, Entry]]:
    """username -> date -> the device's copy of the server's row, for the local keys in `keys`
    (local key -> username), tombstones included."""
    out: dict[str, dict[dt.date, Entry]] = {name: {} for name in keys.values()}
    bounds = ((first or dt.date.min).isoformat(), (last or dt.date.max).isoformat())
    for row in conn.execute(_SELECT, bounds):
        name = keys.get(row[0])
        if name is not None:
            entry = row_to_entry(row)
            out[name][entry.date] = entry
    return out


def local_keys(conn: sqlite3.Connection, account: Account) -> dict[str, str]:
    """local key -> username of the rows verified: the owner's ('') on an athlete's device; on a
    coach's, every athlete's (keyed by username)."""
    if account.role == "athlete":
        return {OWNER: account.username}
    rows = conn.execute("SELECT DISTINCT user_id FROM server_entries WHERE user_id != ?", (OWNER,))
    return {str(r[0]): str(r[0]) for r in rows}


# -- the comparison --------------------------------------------------------------------------------------
class Verifier:
    def __init__(self, conn: sqlite3.Connection, account: Account, client: SyncClient,
                 rebuild: Callable[[], None], catch_up: Callable[[], None] | None = None) -> None:
        self.conn = conn
        self.account = account
        self.client = client
        self.rebuild = rebuild
        self.catch_up = catch_up

    def run(self, first: dt.date | None, last: dt.date | None, repair: bool) -> VerifyReport:
        report = VerifyReport(first, last, coach=self.account.role == "coach")
        report.differences = self.compare(first, last, report, self.catch_up)
        if repair and report.differences:
            self.repair(report.differences)
            report.repaired = True
            report.remaining = self.compare(first, last, None, None)
        return report

    def _range(self, first: dt.date | None, last: dt.date | None) -> dict[str, str]:
        params = {}
        if first:
            params["from"] = first.isoformat()
        if last:
            params["to"] = last.isoformat()
        return params

    def compare(self, first: dt.date | None, last: dt.date | None, report: VerifyReport | None,
                catch_up: Callable[[], None] | None) -> list[DayDiff]:
        """Month digests in one request; the months that differ, day by day."""
        body = self.client.request("GET", "/v1/checksums", params=self._range(first, last))
        server = {name: {m: v["digest"] for m, v in (u.get("months") or {}).items()}
                  for name, u in body.get("users", {}).items()}
        keys = local_keys(self.conn, self.account)
        mine = {name: {m: d.digest for m, d in month_digests(day_digests(days.values())).items()}
                for name, days in local_days(self.conn, keys, first, last).items()}
        names = set(server) | set(mine)
        differing: dict[str, list[str]] = {}
        for name in names:
            theirs, ours = server.get(name, {}), mine.get(name, {})
            months = sorted(m for m in set(theirs) | set(ours) if theirs.get(m) != ours.get(m))
            if months:
                differing[name] = months
        if report is not None:
            report.months = sum(len(set(server.get(n, {})) | set(mine.get(n, {}))) for n in names)
            report.days_checked = sum(v["days"] for u in body.get("users", {}).values()
                                      for v in (u.get("months") or {}).values())
        if not differing:
            return []
        if catch_up is not None:  # what the device has not pulled yet is not drift
            catch_up()
        return self._days(first, last, differing, set(server))

    def _days(self, first: dt.date | None, last: dt.date | None, differing: dict[str, list[str]],
              readable: set[str]) -> list[DayDiff]:
        keys = local_keys(self.conn, self.account)
        out: list[DayDiff] = []
        for name in sorted(differing):
            for start, end in _runs(differing[name], first, last):
                mine = local_days(self.conn, {k: n for k, n in keys.items() if n == name}, start, end).get(name, {})
                theirs: dict[str, str] = {}
                if name in readable:  # a coach's athlete who revoked the grant: every day is extra
                    params = {**self._range(start, end), "granularity": "day", "user": name}
                    body = self.client.request("GET", "/v1/checksums", params=params)
                    theirs = (body.get("users", {}).get(name) or {}).get("days") or {}
                out.extend(_day_diffs(name, mine, theirs))
        return out

    # -- repair ------------------------------------------------------------------------------------------
    def repair(self, diffs: list[DayDiff]) -> None:
        """Write the server's rows of these days into the device's copy of them, drop the days the
        server does not have, and rebuild the local view."""
        keys = {name: key for key, name in local_keys(self.conn, self.account).items()}
        by_user: dict[str, list[DayDiff]] = {}
        for diff in diffs:
            by_user.setdefault(diff.user, []).append(diff)
        fetched: dict[tuple[str, dt.date], dict[str, Any]] = {}
        for name, days in by_user.items():
            wanted = [d.date for d in days if d.kind != "extra"]
            for chunk in range(0, len(wanted), ROWS_PER_REQUEST):
                dates = [("date", d.isoformat()) for d in wanted[chunk:chunk + ROWS_PER_REQUEST]]
                body = self.client.request("GET", "/v1/checksums/rows", params=[*dates, ("user", name)])
                for row in body.get("rows", []):
                    fetched[(str(row["user"]), dt.date.fromisoformat(row["date"]))] = row
        server = SqliteEntryRepository(self.conn, "server_entries")
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for diff in diffs:
                key = keys.get(diff.user, OWNER if self.account.role == "athlete" else diff.user)
                row = fetched.get((diff.user, diff.date))
                before = server.get(key, diff.date)
                if row is None:
                    self.conn.execute("DELETE FROM server_entries WHERE user_id = ? AND date = ?",
                                      (key, diff.date.isoformat()))
                else:
                    entry = replica.entry_from_shape(row, key)
                    if before is not None:
                        diff.parts = differing_parts(before, entry)
                    server.save(entry)
                    if self.account.role != "athlete":  # a later shape delete names the athlete by id
                        write_meta(self.conn, meta.shape_user(row["user_id"]), key)
                diff.repaired = True
        self.rebuild()


def _runs(months: list[str], first: dt.date | None, last: dt.date | None) -> list[tuple[dt.date, dt.date]]:
    """Consecutive months as one range of days, clipped to the range verified."""
    runs: list[tuple[dt.date, dt.date]] = []
    for month in months:
        start, end = month_bounds(month)
        if runs and runs[-1][1] + dt.timedelta(days=1) == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return [(max(s, first) if first else s, min(e, last) if last else e) for s, e in runs]


def _day_diffs(name: str, mine: Mapping[dt.date, Entry], theirs: Mapping[str, str]) -> list[DayDiff]:
    ours = {d.isoformat(): digest for d, digest in day_digests(mine.values()).items()}
    out = []
    for day in sorted(set(ours) | set(theirs)):
        if ours.get(day) == theirs.get(day):
            continue
        kind = "missing" if day not in ours else "extra" if day not in theirs else "different"
        out.append(DayDiff(name, dt.date.fromisoformat(day), kind))
    return out



# -- the edges: `pulse verify` and the agent ----------------------------------------------------------
def run_verify(device: Device, first: dt.date | None = None, last: dt.date | None = None,
               repair: bool = False) -> VerifyReport:
    """Verify (and repair) this device against its server; errors as the sync commands give them."""
    from pulse_cli.agent.engine import SyncEngine
    from pulse_cli.agent.runner import LoginRequired, Unreachable, require_account
    from sync.errors import AuthExpired, Offline, ServerRefused

    account = require_account(device)
    meter = MeteredTransport(device.upstream.transport)
    metered = dataclasses.replace(device, upstream=device.upstream.metered(lambda _: meter))
    with metered.upstream.client(account.server, account.token) as client:
        engine = SyncEngine(metered, account, client)
        verifier = Verifier(device.conn, account, client, engine.rebuild, lambda: catch_up(engine))
        try:
            report = verifier.run(first, last, repair)
        except Offline as exc:
            raise Unreachable(f"offline: cannot verify ({exc})") from exc
        except AuthExpired as exc:
            raise LoginRequired(f"token: {exc}") from exc
        except ServerRefused as exc:
            raise PulseError(f"server: {exc}") from exc
    report.requests, report.bytes_received, report.bytes_sent = meter.requests, meter.received, meter.sent
    return report


def catch_up(engine: SyncEngine) -> None:
    """Pull the shape up to date as a sync round does (through the engine's device: the metered one), then
    rebuild the view."""
    from pulse_cli.agent.engine import SyncReport
    from pulse_cli.agent.pull import pull_shape

    pull_shape(engine.device, engine.account, lambda: engine.refill(SyncReport()))
    engine.rebuild()


def describe(diff: DayDiff, with_user: bool) -> str:
    """One line a person reads: which day, and what differs."""
    who = f"{diff.user} " if with_user else ""
    if diff.kind == "missing":
        what = "missing on this device (the server has this day)"
    elif diff.kind == "extra":
        what = "on this device only (the server has no such day)"
    else:
        what = "differs from the server" + (f": {', '.join(_part_words(p) for p in diff.parts)}" if diff.parts else "")
    return f"{who}{diff.date.isoformat()}: {what}" + (" - fetched again" if diff.repaired else "")


def _part_words(part: str) -> str:
    name, _, aspect = part.partition(" ")
    label = "whether the day is deleted" if name == "deleted" else name
    if aspect == "stamp":
        return f"the stamp of {name}"
    if aspect == "source":
        return f"the source of {name}"
    return label


def log_report(report: VerifyReport) -> None:
    """The agent's lines: nothing when clean but a debug line; each day that differed, and the outcome."""
    if not report.differences:
        log.debug("verified: %d months match the server (%d requests)", report.months, report.requests)
        return
    for diff in report.differences:
        log.warning("verify: %s", describe(diff, report.coach))
    if report.repaired and report.clean:
        log.info("verify: repaired %d days; this device matches the server again", len(report.differences))
    elif report.remaining:
        log.error("verify: %d days still differ from the server after a repair", len(report.remaining))
