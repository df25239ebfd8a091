"""Score v1: a 0-100 day score from sleep, HRV and steps, computed with exact fractions."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from pulse_core.entry import Entry
from pulse_core.rules import (
    HRV_MAX_POINTS,
    HRV_MISSING_POINTS,
    HRV_POINTS_PER_MS,
    SCORE_MAX_POINTS,
    SCORE_SCALE,
    SCORE_VERSION,
    SLEEP_MAX_POINTS,
    SLEEP_POINTS_PER_HOUR,
    STEPS_MAX_POINTS,
    STEPS_POINTS_PER_STEP,
)


def score_points(
    sleep_hours: Decimal, hrv_ms: Decimal | None, steps: int
) -> tuple[Fraction, Fraction, Fraction]:
    """The three components, each capped, as exact fractions (a Decimal converts exactly)."""
    sleep = min(Fraction(sleep_hours) * SLEEP_POINTS_PER_HOUR, SLEEP_MAX_POINTS)
    hrv = HRV_MISSING_POINTS if hrv_ms is None else min(Fraction(hrv_ms) * HRV_POINTS_PER_MS, HRV_MAX_POINTS)
    walked = min(Fraction(steps) * STEPS_POINTS_PER_STEP, STEPS_MAX_POINTS)
    return sleep, hrv, walked


def day_score(sleep_hours: Decimal | None, hrv_ms: Decimal | None, steps: int | None) -> int | None:
    """The score rounded half up, or None unless sleep and steps are both present."""
    if sleep_hours is None or steps is None:
        return None
    exact = sum(score_points(sleep_hours, hrv_ms, steps), Fraction(0)) / SCORE_MAX_POINTS * SCORE_SCALE
    return int(exact + Fraction(1, 2))  # exact >= 0, so truncation is floor: this rounds half up


def rescore(entry: Entry) -> None:
    """Recompute the derived score in place; it is stored with its version."""
    entry.score = day_score(entry.sleep_hours, entry.hrv_ms, entry.steps)
    entry.score_version = SCORE_VERSION if entry.score is not None else None
