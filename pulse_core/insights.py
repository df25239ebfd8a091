"""Baselines, readiness and trends over a user's own history. Missing days are missing, never zero."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pulse_core.entry import METRICS, Entry

BASELINE_DAYS = 28
CALIBRATION_DAYS = 7
TREND_METRICS = (*METRICS, "score")


@dataclass(frozen=True)
class Baseline:
    metric: str
    days: int
    mean: float | None
    sd: float | None
    method: str | None = None  # for HRV: the method the baseline was computed in

    @property
    def calibrating(self) -> bool:
        return self.days < CALIBRATION_DAYS


@dataclass(frozen=True)
class Readiness:
    metric: str
    value: float | None
    baseline: Baseline
    z: float | None
    status: str  # "calibrating", "no value", "below", "normal", "above"

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "status": self.status,
            "z": None if self.z is None else round(self.z, 2),
            "baseline": {
                "days": self.baseline.days,
                "mean": _round(self.baseline.mean),
                "sd": _round(self.baseline.sd),
                "method": self.baseline.method,
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def metric_value(entry: Entry, metric: str) -> float | None:
    value = getattr(entry, metric)
    return None if value is None else float(value)


def baseline(
    entries: Iterable[Entry], metric: str, day: dt.date, method: str | None = None
) -> Baseline:
    """Mean and sample SD of `metric` over the BASELINE_DAYS days before `day` that have a value.

    For HRV only readings taken with `method` count: RMSSD and SDNN are never mixed.
    """
    start = day - dt.timedelta(days=BASELINE_DAYS)
    values = [
        v
        for e in entries
        if start <= e.date < day
        and not e.deleted
        and (v := metric_value(e, metric)) is not None
        and (metric != "hrv_ms" or e.hrv_method == method)
    ]
    mean = statistics.fmean(values) if values else None
    sd = statistics.stdev(values) if len(values) >= 2 else None
    return Baseline(metric, len(values), mean, sd, method if metric == "hrv_ms" else None)


class Band(NamedTuple):  # a tuple: a team's year draws 365,000 of them
    """Mean and sample SD of the BASELINE_DAYS days before one day (None until two values exist)."""

    mean: float
    sd: float


def trailing_bands(by_day: dict[dt.date, float], days: Sequence[dt.date]) -> list[Band | None]:
    """For each day, mean ± sample SD of the values in the BASELINE_DAYS days before it: `baseline` for
    every day of a range at once, as a sliding window (a team's year of charts draws 365,000 of them;
    tests/unit/test_insights.py holds the two to the same figures)."""
    if not days:
        return []
    window: deque[tuple[int, float]] = deque()  # (day ordinal, value), in date order
    first = days[0] - dt.timedelta(days=BASELINE_DAYS)
    pending = sorted((d.toordinal(), v) for d, v in by_day.items() if first <= d < days[-1])
    i, count = 0, len(pending)
    total = squares = 0.0
    out: list[Band | None] = []
    for day in days:
        today = day.toordinal()
        while i < count and pending[i][0] < today:
            window.append(pending[i])
            total += pending[i][1]
            squares += pending[i][1] ** 2
            i += 1
        while window and window[0][0] < today - BASELINE_DAYS:
            _, old = window.popleft()
            total -= old
            squares -= old ** 2
        n = len(window)
        if n < 2:
            out.append(None)
            continue
        mean = total / n
        variance = max(0.0, (squares - n * mean * mean) / (n - 1))
        out.append(Band(mean, math.sqrt(variance)))
    return out


def readiness(entries: Sequence[Entry], day: dt.date) -> dict[str, Readiness]:
    """HRV and sleep of `day` against the user's own baseline."""
    today = next((e for e in entries if e.date == day and not e.deleted), None)
    out: dict[str, Readiness] = {}
    for metric in ("hrv_ms", "sleep_hours"):
        value = None if today is None else metric_value(today, metric)
        method = None
        if metric == "hrv_ms":
            method = (today.hrv_method if today and today.hrv_method else None) or "rmssd"
        base = baseline(entries, metric, day, method)
        z = None
        if base.calibrating:
            status = "calibrating"
        elif value is None:
            status = "no value"
        else:
            assert base.mean is not None
            if base.sd and base.sd > 0:
                z = (value - base.mean) / base.sd
            else:
                z = 0.0 if math.isclose(value, base.mean) else math.copysign(math.inf, value - base.mean)
            status = "below" if z <= -1 else "above" if z >= 1 else "normal"
        out[metric] = Readiness(metric, value, base, z, status)
    return out


@dataclass(frozen=True)
class Trend:
    metric: str
    avg_7: float | None
    avg_28: float | None
    days_with_value: int
    series: list[float | None]  # one per day of the window, oldest first; None where missing

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "avg_7d": _round(self.avg_7),
            "avg_28d": _round(self.avg_28),
            "days_with_value": self.days_with_value,
        }


def rolling_average(
    by_day: dict[dt.date, float], end: dt.date, days: int
) -> float | None:
    """The mean over the `days` days ending at `end` (inclusive) that have a value."""
    start = end - dt.timedelta(days=days - 1)
    values = [v for d, v in by_day.items() if start <= d <= end]
    return statistics.fmean(values) if values else None


def trends(entries: Iterable[Entry], end: dt.date, window: int) -> dict[str, Any]:
    """7- and 28-day rolling averages as of `end`, days logged and a series over `window` days."""
    live = [e for e in entries if not e.deleted and not e.is_empty()]
    start = end - dt.timedelta(days=window - 1)
    days = [start + dt.timedelta(days=i) for i in range(window)]
    out: dict[str, Any] = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": window,
        "days_logged": sum(1 for e in live if start <= e.date <= end),
        "metrics": {},
    }
    for metric in TREND_METRICS:
        by_day = {e.date: v for e in live if (v := metric_value(e, metric)) is not None}
        trend = Trend(
            metric,
            rolling_average(by_day, end, 7),
            rolling_average(by_day, end, 28),
            sum(1 for d in days if d in by_day),
            [by_day.get(d) for d in days],
        )
        out["metrics"][metric] = trend
    return out
