"""What a report shows, gathered from the device's store: the athletes, their figures and chart series.

A coach's device holds every granting athlete's entries in its local view (`entries`), keyed by the
athlete's username; the device owner's own rows are keyed ''. The figures are pulse_core.reports';
this module only chooses whose, over which days, and adds the daily series the charts draw. Each
athlete's days are counted in their own calendar: their zone as the last sync learned it
(`athlete_zones`), else the coach's (docs/reports.md).

Costs follow what a report shows, not how much is stored: an athlete's rows are read only from the
first day a figure or chart of the range looks at (`window_start`), plus their latest entry before
it (for "last entry"); and only one athlete's rows are in memory at a time (a format that lists rows
or draws charts reads them again as it writes that athlete).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta
from pulse_cli.store.entries import OWNER
from pulse_core.entry import MERGE_FIELDS, Entry
from pulse_core.errors import NotFoundError, UsageError
from pulse_core.insights import BASELINE_DAYS, TREND_METRICS, Band, metric_value, trailing_bands
from pulse_core.reports import (
    HRV_LOOKBACK_DAYS,
    AthleteReport,
    Calendar,
    athlete_calendar,
    flags,
    judged_range,
    judged_report,
    team_rollup,
)

NO_ATHLETES = "athletes: none on this device; sign in as a coach (pulse login) and run pulse sync"
STAMP_COLUMNS = tuple(f"{f}_hlc" for f in (*MERGE_FIELDS, "deleted"))


@dataclass
class Series:
    """One metric of one athlete, a value (or None) and a baseline band (or None) per day of the range."""

    metric: str
    days: list[dt.date]
    values: list[float | None]
    bands: list[Band | None]

    @property
    def has_values(self) -> bool:
        return any(v is not None for v in self.values)


def _no_rows(athlete: str) -> list[Entry]:
    return []


@dataclass
class TeamReport:
    """The figures of every athlete (for the roll-up and the formats that show figures only), and the
    way to read one athlete's rows again (`rows`, `series`) for the formats that list or chart them.

    The figures keep no rows (each AthleteReport's `entries` is empty): 200 athletes' years would be
    73,000 entries, ~1.4 KB each, held until the last page is written."""

    start: dt.date  # the span of the athletes' ranges, which end on different days in different zones
    end: dt.date
    athletes: list[AthleteReport]
    team: bool
    generated_at: str
    read: Callable[[str], list[Entry]] = _no_rows  # an athlete's live, non-empty entries from window_start
    server: str | None = None  # the sync server whose usernames these are (a FHIR Patient's identifier)

    @property
    def rollup(self) -> list[dict[str, Any]]:
        return team_rollup(self.athletes)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "generated_at": self.generated_at,
            "athletes": [a.as_json() for a in self.athletes],
            "team": self.rollup if self.team else None,
        }

    def rows(self, athlete: str) -> list[Entry]:
        """One athlete's live entries of their range, in date order (what the CSV and FHIR formats list)."""
        figures = self._figures(athlete)
        return [e for e in self.read(athlete) if figures.start <= e.date <= figures.end]

    def series(self, athlete: str) -> list[Series]:
        """The charts of one athlete: each metric (and the score) over their range with its baseline band."""
        figures = self._figures(athlete)
        return chart_series(self.read(athlete), figures.start, figures.end)

    def _figures(self, athlete: str) -> AthleteReport:
        return next(a for a in self.athletes if a.athlete == athlete)


def athlete_calendars(
    conn: sqlite3.Connection, keys: Mapping[str, str], now: dt.datetime, device_today: dt.date,
    device_zone: int | None = None,
) -> dict[str, Calendar]:
    """Each athlete's calendar at the instant `now`: their zone as the last sync learned it (a coach's
    device keeps GET /v1/grants' answer in `athlete_zones`), else this device's day (`device_today`).
    The owner's own rows (an athlete's report of themselves) are in this device's zone (`device_zone`)."""
    zones = {str(name): None if offset is None else int(offset)
             for name, offset in conn.execute("SELECT username, utc_offset_min FROM athlete_zones")}
    zones[OWNER] = device_zone
    return {name: athlete_calendar(now, zones.get(key), device_today) for name, key in keys.items()}


def roster(conn: sqlite3.Connection) -> dict[str, str]:
    """Who can be reported on this device: display name -> the user key of their rows.

    A coach's athletes are keyed by their username. The owner's own rows (key '') are shown under the
    account's username, and only on a device that holds nobody else's (an athlete's own report)."""
    rows = conn.execute("SELECT DISTINCT user_id FROM entries WHERE deleted = 0 ORDER BY user_id").fetchall()
    users = [str(r[0]) for r in rows]
    others = {u: u for u in users if u != OWNER}
    if OWNER in users and not others:
        return {read_meta(conn, meta.ACCOUNT_USERNAME) or "me": OWNER}
    return others


def select_athletes(available: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The athletes named (exact names or shell patterns like 'fitbit-*'), in the device's order."""
    if not available:
        raise NotFoundError(NO_ATHLETES)
    if not wanted:
        return list(available)
    chosen: list[str] = []
    for pattern in wanted:
        matches = [a for a in available if fnmatch.fnmatchcase(a, pattern)]
        if not matches:
            examples = ", ".join(available[:3]) + (", ..." if len(available) > 3 else "")
            raise UsageError("athlete", pattern, f"one of the {len(available)} athletes on this device ({examples})",
                             f"athlete: {pattern!r} matches no athlete on this device"
                             f" (allowed one of {len(available)}: {examples})")
        chosen.extend(m for m in matches if m not in chosen)
    order = {name: i for i, name in enumerate(available)}
    return sorted(chosen, key=order.__getitem__)


def build_report(
    conn: sqlite3.Connection, keys: dict[str, str], calendars: Mapping[str, Calendar], start: dt.date | None,
    end: dt.date | None, team: bool, generated_at: str,
) -> TeamReport:
    """Each athlete's figures over their own range (`judged_range`: `start`..`end`, never past their
    today), evaluated as of its last day (the whole history before it counts).

    `keys` maps each athlete to report (display name) to the user key of their rows, in report order.
    Only the rows from `window_start` of their range on are read (and the latest before), one athlete at
    a time."""
    windows: dict[str, tuple[dt.date, dt.date]] = {}
    athletes = []
    for name, key in keys.items():
        first, last = judged_range(calendars[name], start, end)
        windows[name] = (window_start(first, last), last)
        figures = judged_report(name, report_rows(conn, key, *windows[name]), calendars[name], start, end)
        athletes.append(dataclasses.replace(figures, entries=[]))
    if not athletes:
        raise NotFoundError(NO_ATHLETES)

    def read(name: str) -> list[Entry]:
        return [e for e in report_rows(conn, keys[name], *windows[name]) if not e.is_empty()]

    return TeamReport(min(a.start for a in athletes), max(a.end for a in athletes), athletes, team, generated_at,
                      read)


def window_start(start: dt.date, end: dt.date) -> dt.date:
    """The first day any figure or chart of a report from `start` to `end` looks at.

    Charts: the band of each day of the range is the BASELINE_DAYS days before it. Figures as of `end`:
    the 28-day average and readiness look 28 days back; the HRV flag compares the latest reading of the
    last HRV_LOOKBACK_DAYS days with the BASELINE_DAYS days before that reading (34 days back)."""
    flags_from = end - dt.timedelta(days=HRV_LOOKBACK_DAYS - 1 + BASELINE_DAYS)
    return min(start - dt.timedelta(days=BASELINE_DAYS), flags_from)


_ANY_VALUE = " OR ".join(f"{f} IS NOT NULL" for f in MERGE_FIELDS)
# What reports read of a row: the values and each value's source (the FHIR export tags it), not the
# stamps (the merge's business): a third of the columns, and an Entry built without two dict lookups a field.
_VALUES = ("date", "sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "score_version")
_SOURCES = tuple(f"{f}_src" for f in MERGE_FIELDS)
_SELECT = f"SELECT {', '.join(_VALUES + _SOURCES)} FROM entries WHERE user_id = ? AND deleted = 0"


def report_rows(conn: sqlite3.Connection, key: str, first: dt.date, end: dt.date) -> list[Entry]:
    """One user's live entries from `first` to `end`, after their latest non-empty one before `first`
    (when there is one): all that any figure or chart as of `end` reads.

    That one row carries what the window cannot: the last entry, and the days since it, when the window
    holds none. Every other figure is bounded by dates, so it changes nothing else. (The HRV chart
    follows the method of the latest reading; with no reading in the window it has nothing to draw.)"""
    day = first.isoformat()
    before = conn.execute(f"{_SELECT} AND date < ? AND ({_ANY_VALUE}) ORDER BY date DESC LIMIT 1", (key, day))
    rows = conn.execute(f"{_SELECT} AND date >= ? AND date <= ? ORDER BY date", (key, day, end.isoformat()))
    return [_entry(key, row) for row in (*before, *rows)]


def _entry(key: str, row: tuple[Any, ...]) -> Entry:
    date, sleep, hrv, method, steps, weight, note, score, version, *sources = row
    return Entry(key, dt.date.fromisoformat(date), _decimal(sleep), _decimal(hrv), method, steps, _decimal(weight),
                 note, score, version, False, {},
                 {name: source for name, source in zip(MERGE_FIELDS, sources, strict=True) if source is not None})


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# -- pulse coach athletes -----------------------------------------------------------------------------
def athlete_rows(
    conn: sqlite3.Connection, keys: dict[str, str], calendars: Mapping[str, Calendar], asked: dt.date | None
) -> list[dict[str, Any]]:
    """Per athlete, as of their today (or `asked`, when earlier): last entry, last sync, days logged in
    the last 7 and 28 days, open flags, and whose calendar the days are counted in."""
    synced = _last_stamps(conn)
    rows = []
    for name, key in keys.items():
        _, end = judged_range(calendars[name], None, asked)
        live = [e for e in report_rows(conn, key, window_start(end, end), end) if not e.is_empty()]
        days = {e.date for e in live}
        open_flags = flags(live, end)
        rows.append({
            "athlete": name,
            "as_of": end.isoformat(),
            **calendars[name].as_json(),
            "last_entry": max(days).isoformat() if days else None,
            "last_sync": synced.get(key),
            "days_7": sum(1 for d in days if (end - d).days < 7),
            "days_28": sum(1 for d in days if (end - d).days < 28),
            "open_flags": len(open_flags),
            "flags": [f.as_json() for f in open_flags],
        })
    return rows


def _last_stamps(conn: sqlite3.Connection) -> dict[str, str]:
    """Per user, the wall time (UTC) of the newest change this device has received of theirs.

    Every field carries the hybrid-clock stamp of its last write (`<ms>:<counter>:<client>`); the
    newest one is when that athlete's latest change was made, the best the replica knows of when
    they last synced."""
    newest = ", ".join(f"coalesce({c}, '')" for c in STAMP_COLUMNS)
    out: dict[str, str] = {}
    for user, stamp in conn.execute(f"SELECT user_id, max(max({newest})) FROM entries GROUP BY user_id"):
        if stamp:
            ms = int(str(stamp).split(":", 1)[0])
            when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
            out[str(user)] = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    return out


# -- chart series ---------------------------------------------------------------------------------------
def chart_series(history: Sequence[Entry], start: dt.date, end: dt.date) -> list[Series]:
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    out = []
    for metric in TREND_METRICS:
        entries = history
        if metric == "hrv_ms":  # RMSSD and SDNN are never mixed in a baseline: chart the latest method's
            methods = [e.hrv_method for e in history if e.hrv_ms is not None and e.date <= end]
            method = methods[-1] if methods else "rmssd"
            entries = [e for e in history if e.hrv_method == method]
        by_day = {e.date: v for e in entries if (v := metric_value(e, metric)) is not None}
        out.append(Series(metric, days, [by_day.get(d) for d in days], trailing_bands(by_day, days)))
    return out
