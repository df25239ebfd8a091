"""Report figures computed straight from the raw CSV files in tests/data, with the csv module and plain
arithmetic: no importer, no pulse_core, no report code. The import rules followed are the documented
ones (docs/cli.md): a Fitbit day with 0 steps and nothing but sedentary minutes was not worn; sleep is
the day's largest TotalMinutesAsleep / 60, exact duplicate rows once; of several weight logs in a day
the last wins; Welltory HRV is the day's first morning RMSSD (else its first reading); every value is
kept to 0.01, rounded half up. The score is v1: (min(4 x sleep, 30) + min(HRV / 5, 20), or 10 without
HRV, + min(steps / 333, 30)) / 80 x 100, rounded half up, when sleep and steps are both there.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
CENT = Decimal("0.01")
Day = dict[str, Decimal]


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def us_date(text: str) -> dt.date:
    month, day, year = text.split(" ")[0].split("/")
    return dt.date(int(year), int(month), int(day))


def fitbit_days(user: str) -> dict[dt.date, Day]:
    """One Fitbit user's days: steps, sleep_hours, weight_kg (only those the day has) and score."""
    days: dict[dt.date, Day] = defaultdict(dict)
    with (DATA / "fitbit" / "dailyActivity_merged.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Id"] != user:
                continue
            active = sum(int(row[k]) for k in ("VeryActiveMinutes", "FairlyActiveMinutes", "LightlyActiveMinutes"))
            not_worn = row["TotalSteps"] == "0" and (row["SedentaryMinutes"] == "1440" or active == 0)
            if not not_worn:
                days[us_date(row["ActivityDate"])]["steps"] = Decimal(row["TotalSteps"])
    with (DATA / "fitbit" / "sleepDay_merged.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Id"] != user:
                continue
            day = days[us_date(row["SleepDay"])]
            day["sleep_hours"] = max(day.get("sleep_hours", Decimal(0)),
                                     cents(Decimal(row["TotalMinutesAsleep"]) / 60))
    latest: dict[dt.date, tuple[dt.datetime, int]] = {}
    with (DATA / "fitbit" / "weightLogInfo_merged.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Id"] != user:
                continue
            when = dt.datetime.strptime(row["Date"], "%m/%d/%Y %I:%M:%S %p")
            key = (when, int(row["LogId"]))
            if when.date() not in latest or key >= latest[when.date()]:
                latest[when.date()] = key
                days[when.date()]["weight_kg"] = cents(Decimal(row["WeightKg"]))
    for day in days.values():
        _score(day)
    return {d: v for d, v in days.items() if v}


def welltory_days(code: str) -> dict[dt.date, Day]:
    """One Welltory user's days: hrv_ms (morning RMSSD) and steps (sleep left out: not needed here)."""
    readings: dict[dt.date, list[tuple[int, str, Decimal]]] = defaultdict(list)
    with (DATA / "welltory" / "hrv_measurements_no_rr.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["user_code"] == code and row["rmssd"]:
                when = row["measurement_datetime"]
                rank = 0 if row["time_of_day"] == "morning" else 1
                readings[dt.date.fromisoformat(when[:10])].append((rank, when, Decimal(row["rmssd"])))
    days: dict[dt.date, Day] = defaultdict(dict)
    for date, day_readings in readings.items():
        value = min(day_readings)[2]
        if value <= 300:  # the allowed range: the import skips a day outside it
            days[date]["hrv_ms"] = cents(value)
    return dict(days)


def _score(day: Day) -> None:
    if "sleep_hours" not in day or "steps" not in day:
        return
    sleep = min(Fraction(day["sleep_hours"]) * 4, 30)
    hrv = Fraction(10) if "hrv_ms" not in day else min(Fraction(day["hrv_ms"]) / 5, 20)
    walked = min(Fraction(day["steps"]) / 333, 30)
    exact = (sleep + hrv + walked) / 80 * 100
    day["score"] = Decimal(int(exact + Fraction(1, 2)))


def values(days: dict[dt.date, Day], metric: str, first: dt.date, last: dt.date) -> list[float]:
    return [float(v[metric]) for d, v in sorted(days.items()) if first <= d <= last and metric in v]


def mean(numbers: list[float]) -> float | None:
    return sum(numbers) / len(numbers) if numbers else None


def sample_sd(numbers: list[float]) -> float:
    m = sum(numbers) / len(numbers)
    return float((sum((x - m) ** 2 for x in numbers) / (len(numbers) - 1)) ** 0.5)


def rolling(days: dict[dt.date, Day], metric: str, end: dt.date, window: int) -> float | None:
    return mean(values(days, metric, end - dt.timedelta(days=window - 1), end))


def expected_flags(days: dict[dt.date, Day], end: dt.date) -> dict[str, dict[str, object]]:
    """The flags open as of `end`, by the issue's rules, with the numbers that matter."""
    out: dict[str, dict[str, object]] = {}
    week = {d: v for d, v in days.items() if end - dt.timedelta(days=6) <= d <= end}
    short = sorted(d for d, v in week.items() if "sleep_hours" in v and v["sleep_hours"] < 6)
    if len(short) >= 3:
        out["short_sleep"] = {"days": [d.isoformat() for d in short],
                              "hours": [float(days[d]["sleep_hours"]) for d in short]}
    logged = [d for d in days if d <= end]
    if not logged or (end - max(logged)).days >= 3:
        out["no_entry"] = {"days_without": (end - max(logged)).days if logged else None}
    weighed = sorted((d, float(v["weight_kg"])) for d, v in week.items() if "weight_kg" in v)
    if len(weighed) >= 2:
        low = min(weighed, key=lambda w: w[1])
        high = max(weighed, key=lambda w: w[1])
        start = low[1] if low[0] <= high[0] else high[1]  # a change is measured from where it started
        pct = (high[1] - low[1]) / start * 100
        if pct > 2:
            out["weight_change"] = {"low_kg": low[1], "high_kg": high[1], "pct": pct}
    hrv_days = sorted(d for d, v in week.items() if "hrv_ms" in v)
    if hrv_days:
        latest = hrv_days[-1]
        before = values(days, "hrv_ms", latest - dt.timedelta(days=28), latest - dt.timedelta(days=1))
        if len(before) >= 2:
            value = float(days[latest]["hrv_ms"])
            if value < sum(before) / len(before) - sample_sd(before):
                out["hrv_low"] = {"date": latest.isoformat(), "hrv_ms": value}
    return out
