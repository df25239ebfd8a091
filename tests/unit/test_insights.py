"""Baselines, readiness and trends. Missing days are missing, never zero; HRV methods never mix."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_core.entry import Entry
from pulse_core.insights import BASELINE_DAYS, baseline, readiness, trailing_bands, trends

DAY = dt.date(2026, 3, 29)


def on(days_before: int, **values: object) -> Entry:
    """An entry `days_before` days before DAY (0 is DAY itself)."""
    fields: dict[str, object] = {
        k: Decimal(str(v)) if k in ("sleep_hours", "hrv_ms", "weight_kg") else v for k, v in values.items()
    }
    if "hrv_ms" in fields:
        fields.setdefault("hrv_method", "rmssd")
    return Entry(user="ana", date=DAY - dt.timedelta(days=days_before), **fields)  # type: ignore[arg-type]


# Seven days of HRV, one per day 1..7 days before DAY: 62, 60, 58, 56, 54, 52, 50.
# mean = 392 / 7 = 56; squared deviations 36+16+4+0+4+16+36 = 112; sample SD = sqrt(112 / 6) = 4.3205
WEEK = [on(i, hrv_ms=50 + 2 * (7 - i)) for i in range(1, 8)]
WEEK_SD = math.sqrt(112 / 6)


def test_a_baseline_is_the_mean_and_sample_sd_of_the_days_with_a_value() -> None:
    base = baseline(WEEK, "hrv_ms", DAY, "rmssd")
    assert base.days == 7
    assert base.mean == pytest.approx(56)
    assert base.sd == pytest.approx(WEEK_SD)
    assert not base.calibrating


def test_a_baseline_is_calibrating_until_seven_days_have_a_value() -> None:
    assert baseline(WEEK[:6], "hrv_ms", DAY, "rmssd").calibrating
    assert not baseline(WEEK, "hrv_ms", DAY, "rmssd").calibrating


def test_the_baseline_covers_the_28_days_before_the_day_and_not_the_day_itself() -> None:
    entries = [on(0, sleep_hours=1), on(1, sleep_hours=7), on(28, sleep_hours=9), on(29, sleep_hours=100)]
    base = baseline(entries, "sleep_hours", DAY)
    assert base.days == 2
    assert base.mean == pytest.approx(8)  # (7 + 9) / 2


def test_missing_days_do_not_count_as_zero() -> None:
    # HRV on 7 days spread over 4 weeks with gaps, plus days that only have sleep.
    entries = [on(i, hrv_ms=60) for i in (1, 4, 8, 12, 17, 21, 27)] + [
        on(i, sleep_hours=8) for i in (2, 3, 5)
    ]
    base = baseline(entries, "hrv_ms", DAY, "rmssd")
    assert base.days == 7
    assert base.mean == pytest.approx(60)
    assert base.sd == pytest.approx(0)


def test_hrv_baselines_never_mix_rmssd_and_sdnn() -> None:
    sdnn = [on(i, hrv_ms=120, hrv_method="sdnn") for i in range(8, 15)]
    mixed = WEEK + sdnn
    rmssd_base = baseline(mixed, "hrv_ms", DAY, "rmssd")
    sdnn_base = baseline(mixed, "hrv_ms", DAY, "sdnn")
    assert (rmssd_base.days, rmssd_base.method) == (7, "rmssd")
    assert rmssd_base.mean == pytest.approx(56)
    assert (sdnn_base.days, sdnn_base.method) == (7, "sdnn")
    assert sdnn_base.mean == pytest.approx(120)


def test_deleted_entries_are_left_out_of_a_baseline() -> None:
    tombstone = on(3, hrv_ms=999)
    tombstone.deleted = True
    assert baseline([*WEEK[:6], tombstone], "hrv_ms", DAY, "rmssd").days == 6


@pytest.mark.parametrize(
    ("today_hrv", "status"),
    [
        (56, "normal"),
        # (51 - 56) / 4.3205 = -1.157: below
        (51, "below"),
        # (60 - 56) / 4.3205 = 0.926: still normal
        (60, "normal"),
        # (61 - 56) / 4.3205 = 1.157: above
        (61, "above"),
    ],
)
def test_readiness_compares_the_day_with_the_baseline_in_standard_deviations(
    today_hrv: int, status: str
) -> None:
    result = readiness([*WEEK, on(0, hrv_ms=today_hrv)], DAY)["hrv_ms"]
    assert result.status == status
    assert result.value == today_hrv
    assert result.z == pytest.approx((today_hrv - 56) / WEEK_SD)


def test_readiness_is_calibrating_with_fewer_than_seven_days_of_history() -> None:
    result = readiness([*WEEK[:6], on(0, hrv_ms=30, sleep_hours=8)], DAY)
    assert result["hrv_ms"].status == "calibrating"
    assert result["hrv_ms"].z is None
    assert result["sleep_hours"].status == "calibrating"


def test_readiness_uses_the_baseline_of_the_days_own_hrv_method() -> None:
    # seven RMSSD days of history, but today's reading is SDNN: there is no SDNN baseline yet
    result = readiness([*WEEK, on(0, hrv_ms=56, hrv_method="sdnn")], DAY)["hrv_ms"]
    assert result.status == "calibrating"
    assert result.baseline.method == "sdnn"
    assert result.baseline.days == 0


def test_readiness_says_no_value_when_the_day_has_none() -> None:
    result = readiness([*WEEK, on(0, sleep_hours=7)], DAY)["hrv_ms"]
    assert result.status == "no value"
    assert result.value is None


def test_readiness_json_rounds_to_two_places() -> None:
    data = readiness([*WEEK, on(0, hrv_ms=51)], DAY)["hrv_ms"].as_json()
    assert data["baseline"] == {"days": 7, "mean": 56.0, "sd": 4.32, "method": "rmssd"}
    assert data["z"] == -1.16  # -5 / 4.3205 = -1.1573


# --- trends ------------------------------------------------------------------------------------------


def test_rolling_averages_use_only_the_days_that_have_a_value() -> None:
    # steps on 3 of the last 7 days (0, 2, 6 days before DAY) and on 2 older days in the 28-day window
    entries = [
        on(0, steps=9000),
        on(2, steps=6000),
        on(6, steps=3000),
        on(7, steps=10_000),
        on(27, steps=2000),
        on(28, steps=99_999),  # outside the 28 days ending on DAY
        on(3, sleep_hours=8),  # a logged day without steps
    ]
    steps = trends(entries, DAY, 28)["metrics"]["steps"]
    assert steps.avg_7 == pytest.approx((9000 + 6000 + 3000) / 3)  # 6000, not 18000 / 7
    assert steps.avg_28 == pytest.approx((9000 + 6000 + 3000 + 10_000 + 2000) / 5)  # 6000
    assert steps.days_with_value == 5


def test_trends_count_days_logged_and_leave_missing_days_as_none() -> None:
    entries = [on(0, sleep_hours=7), on(2, sleep_hours=8, steps=5000), on(5, note="rest day")]
    result = trends(entries, DAY, 7)
    assert result["days_logged"] == 3
    assert (result["from"], result["to"], result["days"]) == ("2026-03-23", "2026-03-29", 7)
    assert result["metrics"]["sleep_hours"].series == [None, None, None, None, 8.0, None, 7.0]
    assert result["metrics"]["steps"].series == [None, None, None, None, 5000.0, None, None]
    assert result["metrics"]["weight_kg"].avg_7 is None
    assert result["metrics"]["weight_kg"].days_with_value == 0


def test_trends_ignore_deleted_and_empty_entries() -> None:
    tombstone = on(1, sleep_hours=3)
    tombstone.deleted = True
    empty = on(2)
    result = trends([on(0, sleep_hours=9), tombstone, empty], DAY, 7)
    assert result["days_logged"] == 1
    assert result["metrics"]["sleep_hours"].avg_7 == pytest.approx(9)


def test_trends_include_the_stored_score() -> None:
    # the score stored with each entry (as a use case would have set it); a day without one is skipped
    entries = [
        on(0, sleep_hours=8, steps=9000, score=80),
        on(1, sleep_hours=7, steps=6000, score=70),
        on(3, sleep_hours=7),
    ]
    score = trends(entries, DAY, 7)["metrics"]["score"]
    assert score.avg_7 == pytest.approx(75)
    assert score.as_json() == {"metric": "score", "avg_7d": 75.0, "avg_28d": 75.0, "days_with_value": 2}


@settings(max_examples=150, deadline=None)
@given(
    logged=st.dictionaries(st.integers(0, 90), st.integers(0, 2400).map(lambda q: Decimal(q) / 100), max_size=60),
    first=st.integers(0, 90), length=st.integers(1, 40),
)
def test_the_reports_sliding_bands_are_the_readiness_baseline_of_each_day(
    logged: dict[int, Decimal], first: int, length: int
) -> None:
    """The report's bands (all days at once, running sums) and readiness's baseline (one day, from the
    entries) are one rule: the mean and sample SD of the BASELINE_DAYS days before, two values at least."""
    start = DAY - dt.timedelta(days=120)
    entries = [Entry(user="", date=start + dt.timedelta(days=n), sleep_hours=v) for n, v in logged.items()]
    days = [start + dt.timedelta(days=first + i) for i in range(length)]
    bands = trailing_bands({e.date: float(e.sleep_hours or 0) for e in entries}, days)
    for day, band in zip(days, bands, strict=True):
        base = baseline(entries, "sleep_hours", day)
        if base.days < 2:
            assert band is None, day
        else:
            assert band is not None and base.mean is not None and base.sd is not None, day
            assert band.mean == pytest.approx(base.mean, abs=1e-9)
            assert band.sd == pytest.approx(base.sd, abs=1e-6)


def test_a_band_needs_two_values_within_the_window() -> None:
    one = {DAY - dt.timedelta(days=1): 7.0}
    assert trailing_bands(one, [DAY]) == [None]
    two = {**one, DAY - dt.timedelta(days=BASELINE_DAYS): 9.0}
    assert trailing_bands(two, [DAY])[0] == (8.0, pytest.approx(math.sqrt(2)))
    assert trailing_bands(two, [DAY + dt.timedelta(days=1)]) == [None]  # the older one left the window
