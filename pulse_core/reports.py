"""Coach reports: per-athlete figures and flags, and the team roll-up, as of a given day.

Everything is evaluated as of `to`: rolling averages end there, flags look back from there. Missing
days are missing, never zero; averages are over the days that have a value.

Each athlete's days are counted in their own calendar (docs/reports.md): the caller says what "today"
is where the athlete is (`athlete_calendar`, from the time now and the athlete's zone), and the range,
the windows and the flags end there (`judged_range`), never on a day that has not begun for them.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulse_core.entry import Entry
from pulse_core.errors import UsageError
from pulse_core.insights import TREND_METRICS, baseline, metric_value, readiness, rolling_average
from pulse_core.queries import DEFAULT_RANGE_DAYS
from pulse_core.values import parse_date

SHORT_SLEEP_H = 6.0
SHORT_SLEEP_DAYS = 3
NO_ENTRY_DAYS = 3
WEIGHT_CHANGE_PCT = 2.0
HRV_LOOKBACK_DAYS = 7


@dataclass(frozen=True)
class Flag:
    code: str
    message: str
    numbers: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "numbers": self.numbers}


@dataclass(frozen=True)
class Calendar:
    """The calendar an athlete's days are counted in: their own zone, as their devices last pushed it,
    or, while that is unknown, the coach's (then `today` is the coach's today)."""

    today: dt.date
    utc_offset_min: int | None = None  # minutes east of UTC; None: unknown

    @property
    def own(self) -> bool:
        return self.utc_offset_min is not None

    def as_json(self) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "utc_offset_min": self.utc_offset_min,
                "calendar": "athlete" if self.own else "coach"}


def athlete_calendar(now: dt.datetime, utc_offset_min: int | None, coach_today: dt.date) -> Calendar:
    """The athlete's today: the instant `now` (timezone-aware) read in their zone. With no zone known
    (their devices never pushed one), the coach's today."""
    if utc_offset_min is None:
        return Calendar(coach_today)
    return Calendar((now.astimezone(dt.UTC) + dt.timedelta(minutes=utc_offset_min)).date(), utc_offset_min)


def judged_range(calendar: Calendar, start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    """The days an athlete is judged on: through `end` (default their today) but never past their today,
    as a day that has not begun where they are cannot be missed; `start` defaults to the 28 days ending
    there. The range is empty (ends before it starts) while `start` is still ahead of the athlete."""
    last = calendar.today if end is None or end > calendar.today else end
    first = start if start is not None else last - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    return first, last


def asked_dates(start: object | None, end: object | None, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """A coach's `--from` and `--to`: any dates (a read is never bounded by today), `--from` not after
    `--to`. Words (today, yesterday) are the coach's own days; None leaves each athlete's default."""
    first = parse_date(start, today, "from", reading=True) if start is not None else None
    last = parse_date(end, today, "to", reading=True) if end is not None else None
    if first is not None and last is not None and first > last:
        raise UsageError(
            "from", first.isoformat(), f"a date on or before --to {last.isoformat()}",
            f"from: {first.isoformat()} is after to {last.isoformat()} (allowed a date on or before it)",
        )
    return first, last


@dataclass
class WeekRow:
    week: str  # ISO week, e.g. 2016-W15
    start: dt.date  # its Monday, which may be before the range
    days_logged: int
    means: dict[str, float | None]
    days_in_range: int = 7  # fewer for a week the range cuts (its first or last)


@dataclass
class AthleteReport:
    athlete: str
    start: dt.date
    end: dt.date
    entries: list[Entry]
    weeks: list[WeekRow] = field(default_factory=list)
    rolling_7: dict[str, float | None] = field(default_factory=dict)
    rolling_28: dict[str, float | None] = field(default_factory=dict)
    range_means: dict[str, float | None] = field(default_factory=dict)
    days_logged: int = 0
    days_in_range: int = 0
    readiness: dict[str, Any] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    last_entry: dt.date | None = None
    calendar: Calendar | None = None  # whose days these are (None: not said)

    @property
    def compliance(self) -> float:
        return self.days_logged / self.days_in_range if self.days_in_range else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "athlete": self.athlete,
            **(self.calendar.as_json() if self.calendar else {"today": None, "utc_offset_min": None, "calendar": None}),
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "days_logged": self.days_logged,
            "days_in_range": self.days_in_range,
            "compliance": round(self.compliance, 4),
            "last_entry": self.last_entry.isoformat() if self.last_entry else None,
            "rolling_7d": _rounded(self.rolling_7),
            "rolling_28d": _rounded(self.rolling_28),
            "range_means": _rounded(self.range_means),
            "readiness": self.readiness,
            "flags": [f.as_json() for f in self.flags],
            "weeks": [
                {"week": w.week, "start": w.start.isoformat(), "days_in_range": w.days_in_range,
                 "days_logged": w.days_logged, "means": _rounded(w.means)}
                for w in self.weeks
            ],
        }


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 2) for k, v in values.items()}


def _series(entries: Iterable[Entry], metric: str) -> dict[dt.date, float]:
    return {e.date: v for e in entries if (v := metric_value(e, metric)) is not None}


def athlete_report(athlete: str, history: Sequence[Entry], start: dt.date, end: dt.date) -> AthleteReport:
    """`history` may reach before `start` (baselines look back 28 days); only live entries count."""
    live = sorted((e for e in history if not e.deleted and not e.is_empty() and e.date <= end), key=lambda e: e.date)
    in_range = [e for e in live if start <= e.date <= end]
    report = AthleteReport(athlete, start, end, in_range)
    report.days_in_range = max(0, (end - start).days + 1)
    report.days_logged = len(in_range)
    report.last_entry = live[-1].date if live else None
    for metric in TREND_METRICS:
        by_day = _series(live, metric)
        report.rolling_7[metric] = rolling_average(by_day, end, 7)
        report.rolling_28[metric] = rolling_average(by_day, end, 28)
        values = [v for d, v in by_day.items() if start <= d <= end]
        report.range_means[metric] = statistics.fmean(values) if values else None
    report.weeks = weekly(in_range, start, end)
    report.readiness = {k: r.as_json() for k, r in readiness(live, end).items()}
    report.flags = flags(live, end)
    return report


def judged_report(
    athlete: str, history: Sequence[Entry], calendar: Calendar, start: dt.date | None = None,
    end: dt.date | None = None,
) -> AthleteReport:
    """`athlete_report` over the athlete's own range (`judged_range`): their today, their windows, their flags."""
    first, last = judged_range(calendar, start, end)
    report = athlete_report(athlete, history, first, last)
    report.calendar = calendar
    return report


def weekly(entries: Sequence[Entry], start: dt.date, end: dt.date) -> list[WeekRow]:
    """A row for every ISO week the range touches, those with no entry too: a week without an entry
    is the gap a coach looks for, so it is shown (0 days logged, no means), never left out."""
    by_week: dict[dt.date, list[Entry]] = {}
    for e in entries:
        by_week.setdefault(e.date - dt.timedelta(days=e.date.weekday()), []).append(e)
    rows: list[WeekRow] = []
    monday = start - dt.timedelta(days=start.weekday())
    while start <= end and monday <= end:
        days = by_week.get(monday, [])
        means = {}
        for metric in TREND_METRICS:
            values = [v for e in days if (v := metric_value(e, metric)) is not None]
            means[metric] = statistics.fmean(values) if values else None
        year, week, _ = monday.isocalendar()
        in_range = (min(end, monday + dt.timedelta(days=6)) - max(start, monday)).days + 1
        rows.append(WeekRow(f"{year}-W{week:02d}", monday, len(days), means, in_range))
        monday += dt.timedelta(days=7)
    return rows


def flags(live: Sequence[Entry], end: dt.date) -> list[Flag]:
    """The open flags as of `end`, each with the numbers that raised it."""
    found: list[Flag] = []
    found.extend(_hrv_flag(live, end))
    week = [e for e in live if end - dt.timedelta(days=6) <= e.date <= end]
    short = [e for e in week if e.sleep_hours is not None and float(e.sleep_hours) < SHORT_SLEEP_H]
    if len(short) >= SHORT_SLEEP_DAYS:
        found.append(Flag(
            "short_sleep",
            f"sleep under {SHORT_SLEEP_H:g} h on {len(short)} of the last 7 days",
            {"days": [e.date.isoformat() for e in short], "hours": [float(e.sleep_hours or 0) for e in short]},
        ))
    last = max((e.date for e in live), default=None)
    gap = None if last is None else (end - last).days
    if last is None or (gap is not None and gap >= NO_ENTRY_DAYS):
        found.append(Flag(
            "no_entry",
            "no entries at all" if last is None else f"no entry for {gap} days (last {last.isoformat()})",
            {"last_entry": last.isoformat() if last else None, "days_without": gap},
        ))
    weights = [(e.date, float(e.weight_kg)) for e in week if e.weight_kg is not None]
    if len(weights) >= 2:
        low = min(weights, key=lambda w: w[1])
        high = max(weights, key=lambda w: w[1])
        earlier = low if low[0] <= high[0] else high  # the change is relative to where it started
        pct = (high[1] - low[1]) / earlier[1] * 100
        if pct > WEIGHT_CHANGE_PCT:
            found.append(Flag(
                "weight_change",
                f"weight moved {pct:.1f}% within 7 days ({low[1]:g} kg on {low[0].isoformat()},"
                f" {high[1]:g} kg on {high[0].isoformat()})",
                {"low_kg": low[1], "low_date": low[0].isoformat(), "high_kg": high[1], "high_date": high[0].isoformat(),
                 "pct": round(pct, 2)},
            ))
    return found


def _hrv_flag(live: Sequence[Entry], end: dt.date) -> list[Flag]:
    """The latest HRV reading of the last 7 days against the mean and SD of the 28 days before it."""
    first = end - dt.timedelta(days=HRV_LOOKBACK_DAYS - 1)
    recent = [e for e in live if e.hrv_ms is not None and first <= e.date <= end]
    if not recent:
        return []
    day = recent[-1]
    base = baseline(live, "hrv_ms", day.date, day.hrv_method or "rmssd")
    if base.mean is None or base.sd is None or base.days < 2:
        return []
    value = float(day.hrv_ms or 0)
    if value < base.mean - base.sd:
        return [Flag(
            "hrv_low",
            f"HRV {value:g} ms on {day.date.isoformat()} is more than one SD below the 28-day mean"
            f" ({base.mean:.1f} ± {base.sd:.1f} ms, {base.days} days)",
            {"date": day.date.isoformat(), "hrv_ms": value, "mean": round(base.mean, 2), "sd": round(base.sd, 2),
             "days": base.days, "method": base.method},
        )]
    return []


def team_rollup(reports: Sequence[AthleteReport]) -> list[dict[str, Any]]:
    """One row per athlete, most open flags first."""
    rows = [
        {
            "athlete": r.athlete,
            "flags": len(r.flags),
            "flag_codes": [f.code for f in r.flags],
            "compliance": round(r.compliance, 4),
            "last_entry": r.last_entry.isoformat() if r.last_entry else None,
            "score_7d": None if r.rolling_7.get("score") is None else round(r.rolling_7["score"] or 0, 2),
        }
        for r in reports
    ]
    return sorted(rows, key=lambda row: (-row["flags"], row["athlete"]))
