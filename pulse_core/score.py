"""Score v1: a 0-100 day score from sleep, HRV and steps, computed with exact fractions."""

from __future__ import annotations

from decimal import Decimal

from pulse_core.entry import Entry
from pulse_core.rules import (
    HRV_MAX_POINTS,
    HRV_MISSING_POINTS,
    HRV_POINTS_PER_MS,
    SCORE_MAX_POINTS,
    SCORE_REQUIRES,
    SCORE_SCALE,
    SCORE_VERSION,
    SLEEP_MAX_POINTS,
    SLEEP_POINTS_PER_HOUR,
    STEPS_MAX_POINTS,
    STEPS_POINTS_PER_STEP,
)


def day_score(sleep_hours: Decimal | None, hrv_ms: Decimal | None, steps: int | None) -> int | None:
    """The score rounded half up, or None unless sleep and steps are both present.

    Exact: each capped component and their sum are kept as integer numerators and denominators
    (the rules' fractions and the Decimal inputs convert exactly). Fraction arithmetic normalised
    (a gcd) after every operation, which made this the costliest step of a push."""
    given = (sleep_hours, hrv_ms, steps)
    for at in _REQUIRED_AT:  # the rule as /v1/rules publishes it (SCORE_REQUIRES)
        if given[at] is None:
            return None
    assert sleep_hours is not None and steps is not None, SCORE_REQUIRES  # the formula below needs both
    sleep = _capped(sleep_hours.as_integer_ratio(), _SLEEP_PER, _SLEEP_MAX)
    hrv = _HRV_MISSING if hrv_ms is None else _capped(hrv_ms.as_integer_ratio(), _HRV_PER, _HRV_MAX)
    walked = _capped((steps, 1), _STEPS_PER, _STEPS_MAX)
    # exact = (sleep + hrv + walked) / SCORE_MAX_POINTS * SCORE_SCALE, as numerator / denominator
    numerator = ((sleep[0] * hrv[1] + hrv[0] * sleep[1]) * walked[1] + walked[0] * sleep[1] * hrv[1]) \
        * _MAX[1] * SCORE_SCALE
    denominator = sleep[1] * hrv[1] * walked[1] * _MAX[0]
    return (2 * numerator + denominator) // (2 * denominator)  # floor(exact + 1/2): exact >= 0


Ratio = tuple[int, int]  # numerator, positive denominator
_REQUIRED_AT = tuple(("sleep_hours", "hrv_ms", "steps").index(name) for name in SCORE_REQUIRES)
_SLEEP_PER, _SLEEP_MAX = SLEEP_POINTS_PER_HOUR.as_integer_ratio(), SLEEP_MAX_POINTS.as_integer_ratio()
_HRV_PER, _HRV_MAX = HRV_POINTS_PER_MS.as_integer_ratio(), HRV_MAX_POINTS.as_integer_ratio()
_HRV_MISSING = HRV_MISSING_POINTS.as_integer_ratio()
_STEPS_PER, _STEPS_MAX = STEPS_POINTS_PER_STEP.as_integer_ratio(), STEPS_MAX_POINTS.as_integer_ratio()
_MAX = SCORE_MAX_POINTS.as_integer_ratio()


def _capped(value: Ratio, per: Ratio, cap: Ratio) -> Ratio:
    """min(value * per, cap)."""
    numerator, denominator = value[0] * per[0], value[1] * per[1]
    return (numerator, denominator) if numerator * cap[1] <= cap[0] * denominator else cap


def rescore(entry: Entry) -> None:
    """Recompute the derived score in place; it is stored with its version."""
    entry.score = day_score(entry.sleep_hours, entry.hrv_ms, entry.steps)
    entry.score_version = SCORE_VERSION if entry.score is not None else None
