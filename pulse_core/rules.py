"""The rules, as data: limits, warning thresholds, score coefficients and message templates.

Validation, scoring and the server's `GET /v1/rules` document are all generated from this one
module, so the CLI, the server and the browser check exactly the same things.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

RULES_VERSION = 1

HRV_METHODS = ("rmssd", "sdnn")
DEFAULT_HRV_METHOD = "rmssd"
MANUAL = "manual"  # a value set by hand: under lww@2 it beats any import, whatever the stamps
SOURCES = (MANUAL, "fitbit", "welltory", "apple-health", "sync")
NOTE_MAX_CHARS = 1000
MAX_DAYS_AHEAD = 1
# No day before this is taken, read or written: older dates are typing mistakes, and some date arithmetic
# (a baseline's 28 days before, a week's start) would run off the calendar near year 1.
EARLIEST_DATE = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class Limit:
    field: str
    low: Decimal
    high: Decimal
    unit: str
    integer: bool = False

    @property
    def allowed(self) -> str:
        return f"{_plain(self.low)} to {_plain(self.high)} {self.unit}"


@dataclass(frozen=True)
class Threshold:
    """An accepted but implausible value: below `low` or above `high` warns."""

    field: str
    low: Decimal | None
    high: Decimal | None
    unit: str


LIMITS: dict[str, Limit] = {
    "sleep_hours": Limit("sleep_hours", Decimal(0), Decimal(24), "h"),
    "hrv_ms": Limit("hrv_ms", Decimal(1), Decimal(300), "ms"),
    "steps": Limit("steps", Decimal(0), Decimal(100_000), "steps", integer=True),
    "weight_kg": Limit("weight_kg", Decimal(20), Decimal(500), "kg"),
}

WARNINGS: dict[str, Threshold] = {
    "sleep_hours": Threshold("sleep_hours", Decimal(3), Decimal(14), "h"),
    "steps": Threshold("steps", None, Decimal(50_000), "steps"),
}
WEIGHT_CHANGE_WARN_PCT = Decimal(3)
# The weight change is measured against the latest weight from this many days before the entry's
# date (its day 1 to 7); an older weight says nothing about this week, so none in the window: no warning.
WEIGHT_CHANGE_WINDOW_DAYS = 7

# Score v1: points per component, each capped; the total is scaled from SCORE_MAX_POINTS to 100.
SCORE_VERSION = 1
SLEEP_POINTS_PER_HOUR = Fraction(4)
SLEEP_MAX_POINTS = Fraction(30)
HRV_POINTS_PER_MS = Fraction(1, 5)
HRV_MAX_POINTS = Fraction(20)
HRV_MISSING_POINTS = Fraction(10)
STEPS_POINTS_PER_STEP = Fraction(1, 333)
STEPS_MAX_POINTS = Fraction(30)
SCORE_MAX_POINTS = Fraction(80)
SCORE_SCALE = 100
SCORE_REQUIRES = ("sleep_hours", "steps")

MESSAGES = {
    "out_of_range": "{field}: {value} is out of range (allowed {allowed})",
    "not_a_number": "{field}: {value!r} is not a number (allowed {allowed})",
    "not_an_integer": "{field}: {value!r} is not a whole number (allowed {allowed})",
    "invalid_choice": "{field}: {value!r} is not one of {allowed}",
    "invalid_date": "{field}: {value!r} is not a date (allowed {allowed})",
    "future_date": "{field}: {value} is in the future (allowed {allowed})",
    "too_long": "{field}: note of {value} characters is too long (allowed {allowed})",
    "nothing_to_set": "{field}: nothing to set (allowed {allowed})",
    "warn_low": "{field}: {value} {unit} is unusually low (warning below {low} {unit})",
    "warn_high": "{field}: {value} {unit} is unusually high (warning above {high} {unit})",
    "warn_weight_change": (
        "weight_kg: {value} kg is {pct}% from the previous entry of {previous} kg on {previous_date}"
        " (warning above {limit}%)"
    ),
}


def _plain(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 100000, 7.5, 0."""
    text = format(value.normalize(), "f")
    return text


def rules_document() -> dict[str, Any]:
    """Everything a client needs to check the same rules, as JSON-ready data."""
    return {
        "version": RULES_VERSION,
        "limits": {
            name: {
                "min": _plain(limit.low),
                "max": _plain(limit.high),
                "unit": limit.unit,
                "integer": limit.integer,
                "allowed": limit.allowed,
            }
            for name, limit in LIMITS.items()
        },
        "hrv_methods": list(HRV_METHODS),
        "default_hrv_method": DEFAULT_HRV_METHOD,
        "note_max_chars": NOTE_MAX_CHARS,
        "max_days_ahead": MAX_DAYS_AHEAD,
        "earliest_date": EARLIEST_DATE.isoformat(),
        "warnings": {
            name: {
                "below": None if t.low is None else _plain(t.low),
                "above": None if t.high is None else _plain(t.high),
                "unit": t.unit,
            }
            for name, t in WARNINGS.items()
        }
        | {
            "weight_change_pct": _plain(WEIGHT_CHANGE_WARN_PCT),
            "weight_change_window_days": WEIGHT_CHANGE_WINDOW_DAYS,
        },
        "score": {
            "version": SCORE_VERSION,
            "sleep": {"points_per_hour": str(SLEEP_POINTS_PER_HOUR), "max": str(SLEEP_MAX_POINTS)},
            "hrv": {
                "points_per_ms": str(HRV_POINTS_PER_MS),
                "max": str(HRV_MAX_POINTS),
                "missing": str(HRV_MISSING_POINTS),
            },
            "steps": {"points_per_step": str(STEPS_POINTS_PER_STEP), "max": str(STEPS_MAX_POINTS)},
            "max_points": str(SCORE_MAX_POINTS),
            "scale": SCORE_SCALE,
            "rounding": "half_up",
            "requires": list(SCORE_REQUIRES),
        },
        "messages": dict(MESSAGES),
    }
