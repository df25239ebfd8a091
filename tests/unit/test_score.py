"""Score v1. Expected values are worked out by hand (and re-checked with fractions), not by the code.

sleep points = min(4 x hours, 30); HRV points = min(HRV / 5, 20), or 10 when missing;
steps points = min(steps / 333, 30); score = (sleep + HRV + steps) / 80 x 100, rounded half up.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse_core.entry import Entry
from pulse_core.score import day_score, rescore


def exact(sleep: str, hrv: str | None, steps: int) -> Fraction:
    """The spec's formula, independently, in fractions."""
    s = min(4 * Fraction(sleep), Fraction(30))
    h = Fraction(10) if hrv is None else min(Fraction(hrv) / 5, Fraction(20))
    w = min(Fraction(steps, 333), Fraction(30))
    return (s + h + w) / 80 * 100


def test_the_worked_example_scores_86() -> None:
    # (30 + 60/5 + 9000/333) / 80 * 100 = (30 + 12 + 27.027...) / 0.8 = 86.28... -> 86
    assert exact("7.5", "60", 9000) == Fraction(30 + 12 + Fraction(9000, 333)) * 100 / 80
    assert 86 < exact("7.5", "60", 9000) < Fraction(865, 10)
    assert day_score(Decimal("7.5"), Decimal(60), 9000) == 86


def test_missing_hrv_counts_as_10_points() -> None:
    # (30 + 10 + 27.027...) / 0.8 = 83.78... -> 84
    assert day_score(Decimal("7.5"), None, 9000) == 84
    # a missing HRV scores the same as 50 ms (50 / 5 = 10)
    assert day_score(Decimal("7.5"), None, 9000) == day_score(Decimal("7.5"), Decimal(50), 9000)


def test_each_component_is_capped() -> None:
    # 7.5 h, 100 ms and 9990 steps already reach every cap: 30 + 20 + 30 = 80 points -> 100
    assert day_score(Decimal("7.5"), Decimal(100), 9990) == 100
    assert day_score(Decimal(24), Decimal(300), 100_000) == 100
    # 10 h of sleep is still 30 points: (30 + 10 + 0) / 0.8 = 50
    assert day_score(Decimal(10), None, 0) == 50


def test_the_lowest_possible_score_is_0() -> None:
    # 0 h, 1 ms (0.2 points), 0 steps: 0.2 / 0.8 = 0.25 -> 0
    assert day_score(Decimal(0), Decimal(1), 0) == 0


def test_an_exact_half_rounds_up_not_to_even() -> None:
    # 0 h, 2 ms, 0 steps: 0.4 points / 80 * 100 = 0.5 exactly -> 1 (banker's rounding would give 0)
    assert exact("0", "2", 0) == Fraction(1, 2)
    assert day_score(Decimal(0), Decimal(2), 0) == 1
    # 0 h, no HRV, 0 steps: 10 / 80 * 100 = 12.5 exactly -> 13 (banker's would give 12)
    assert exact("0", None, 0) == Fraction(25, 2)
    assert day_score(Decimal(0), None, 0) == 13


@pytest.mark.parametrize(
    ("sleep", "hrv", "steps", "expected"),
    [
        # 0.15 h -> 0.6; +10 (no HRV); 333 steps -> 1: 11.6 / 0.8 = 14.5 exactly -> 15.
        # In floats 0.15 * 4 = 0.6000000000000001 and the sum lands at 14.499999999999998 -> 14.
        ("0.15", None, 333, 15),
        # 6 h -> 24; 49 ms -> 9.8; 9657 steps = 29 x 333 -> 29: 62.8 / 0.8 = 78.5 exactly -> 79.
        # In floats the same sum is 78.49999999999999 -> 78.
        ("6", "49", 9657, 79),
    ],
)
def test_arithmetic_is_exact_where_floats_would_round_the_wrong_way(
    sleep: str, hrv: str | None, steps: int, expected: int
) -> None:
    assert exact(sleep, hrv, steps) == Fraction(2 * expected - 1, 2)
    floats = (min(4 * float(sleep), 30) + (10 if hrv is None else float(hrv) / 5) + steps / 333) / 80 * 100
    assert floats < expected - 0.5  # the trap is real
    assert day_score(Decimal(sleep), None if hrv is None else Decimal(hrv), steps) == expected


@pytest.mark.parametrize(("sleep", "steps"), [(None, 9000), (Decimal("7.5"), None), (None, None)])
def test_there_is_no_score_unless_sleep_and_steps_are_both_present(
    sleep: Decimal | None, steps: int | None
) -> None:
    assert day_score(sleep, Decimal(60), steps) is None


def test_zero_sleep_and_zero_steps_are_present_values_and_get_a_score() -> None:
    assert day_score(Decimal(0), Decimal(60), 0) is not None


def test_rescore_stores_the_score_with_its_version_and_clears_both_when_it_cannot_score() -> None:
    entry = Entry(
        user="ana", date=dt.date(2026, 3, 1), sleep_hours=Decimal("7.5"), hrv_ms=Decimal(60), steps=9000
    )
    rescore(entry)
    assert (entry.score, entry.score_version) == (86, 1)
    entry.steps = None
    rescore(entry)
    assert (entry.score, entry.score_version) == (None, None)


# --- properties --------------------------------------------------------------------------------------

sleeps = st.decimals(min_value=0, max_value=24, places=2)
hrvs = st.none() | st.decimals(min_value=1, max_value=300, places=2)
steps_counts = st.integers(min_value=0, max_value=100_000)


@given(sleeps, hrvs, steps_counts)
def test_the_score_is_always_an_int_from_0_to_100_and_matches_the_formula(
    sleep: Decimal, hrv: Decimal | None, steps: int
) -> None:
    score = day_score(sleep, hrv, steps)
    assert type(score) is int
    assert 0 <= score <= 100
    expected = exact(str(sleep), None if hrv is None else str(hrv), steps)
    # half up: the one integer in (expected - 1/2, expected + 1/2]
    assert expected - Fraction(1, 2) < score <= expected + Fraction(1, 2)


@given(sleeps, sleeps, hrvs, steps_counts)
def test_more_sleep_never_lowers_the_score(a: Decimal, b: Decimal, hrv: Decimal | None, steps: int) -> None:
    low, high = sorted((a, b))
    assert day_score(low, hrv, steps) <= day_score(high, hrv, steps)  # type: ignore[operator]


@given(
    sleeps,
    st.decimals(min_value=1, max_value=300, places=2),
    st.decimals(min_value=1, max_value=300, places=2),
    steps_counts,
)
def test_higher_hrv_never_lowers_the_score(sleep: Decimal, a: Decimal, b: Decimal, steps: int) -> None:
    low, high = sorted((a, b))
    assert day_score(sleep, low, steps) <= day_score(sleep, high, steps)  # type: ignore[operator]


@given(sleeps, hrvs, steps_counts, steps_counts)
def test_more_steps_never_lower_the_score(sleep: Decimal, hrv: Decimal | None, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert day_score(sleep, hrv, low) <= day_score(sleep, hrv, high)  # type: ignore[operator]
