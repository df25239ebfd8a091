"""A coach's figures count each athlete's days in the athlete's own calendar (docs/reports.md).

Fixed instants and dates: at 2026-12-03 20:00 UTC it is 2026-12-04 10:00 in Kiritimati (UTC+14) and
2026-12-03 09:00 in Pago Pago (UTC-11), 25 hours apart.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pulse_core.entry import Entry
from pulse_core.errors import UsageError, ValidationError
from pulse_core.reports import Calendar, Flag, asked_dates, athlete_calendar, judged_range, judged_report

EVENING_UTC = dt.datetime(2026, 12, 3, 20, 0, tzinfo=dt.UTC)
KIRITIMATI, PAGO_PAGO = 14 * 60, -11 * 60
D = dt.date.fromisoformat


def logged(*days: str, steps: int = 8000) -> list[Entry]:
    return [Entry(user="x", date=D(day), steps=steps, sleep_hours=Decimal("7.50")) for day in days]


def codes(flags: list[Flag]) -> list[str]:
    return [flag.code for flag in flags]


# -- the athlete's today ---------------------------------------------------------------------------
def test_the_athletes_today_is_the_instant_read_in_their_zone() -> None:
    assert athlete_calendar(EVENING_UTC, KIRITIMATI, D("2026-12-03")) == Calendar(D("2026-12-04"), KIRITIMATI)
    assert athlete_calendar(EVENING_UTC, PAGO_PAGO, D("2026-12-04")) == Calendar(D("2026-12-03"), PAGO_PAGO)
    assert athlete_calendar(EVENING_UTC, 0, D("2026-12-04")).today == D("2026-12-03")
    # Nepal is UTC+05:45: its day turns at 18:15 UTC, not on the hour.
    nepal = 5 * 60 + 45
    assert athlete_calendar(dt.datetime(2026, 12, 3, 18, 14, tzinfo=dt.UTC), nepal, D("2026-12-03")).today == \
        D("2026-12-03")
    assert athlete_calendar(dt.datetime(2026, 12, 3, 18, 15, tzinfo=dt.UTC), nepal, D("2026-12-03")).today == \
        D("2026-12-04")


def test_an_instant_given_in_another_zone_is_the_same_instant() -> None:
    kiritimati_morning = EVENING_UTC.astimezone(dt.timezone(dt.timedelta(hours=14)))
    assert athlete_calendar(kiritimati_morning, PAGO_PAGO, D("2026-12-04")).today == D("2026-12-03")


def test_an_athlete_whose_zone_is_unknown_is_counted_in_the_coachs_calendar() -> None:
    calendar = athlete_calendar(EVENING_UTC, None, D("2026-12-04"))
    assert calendar == Calendar(D("2026-12-04"), None) and not calendar.own
    assert calendar.as_json() == {"today": "2026-12-04", "utc_offset_min": None, "calendar": "coach"}
    assert Calendar(D("2026-12-04"), KIRITIMATI).as_json() == \
        {"today": "2026-12-04", "utc_offset_min": 840, "calendar": "athlete"}


# -- the range an athlete is judged on ---------------------------------------------------------------
def test_the_range_ends_on_the_athletes_today_and_never_past_it() -> None:
    her = Calendar(D("2026-12-03"), PAGO_PAGO)
    assert judged_range(her, None, None) == (D("2026-11-06"), D("2026-12-03"))  # the 28 days ending her today
    assert judged_range(her, None, D("2026-12-05")) == (D("2026-11-06"), D("2026-12-03"))
    assert judged_range(her, None, D("2027-06-30")) == (D("2026-11-06"), D("2026-12-03"))
    assert judged_range(her, D("2026-12-01"), D("2026-12-05")) == (D("2026-12-01"), D("2026-12-03"))
    assert judged_range(her, None, D("2016-05-12")) == (D("2016-04-15"), D("2016-05-12"))  # earlier: as asked


def test_a_range_that_has_not_begun_for_the_athlete_is_empty() -> None:
    her = Calendar(D("2026-12-03"), PAGO_PAGO)
    first, last = judged_range(her, D("2026-12-04"), D("2026-12-04"))
    assert (first, last) == (D("2026-12-04"), D("2026-12-03"))
    report = judged_report("p", logged("2026-12-03"), her, D("2026-12-04"), D("2026-12-04"))
    assert (report.days_in_range, report.days_logged, report.compliance) == (0, 0, 0.0)
    assert report.entries == [] and report.weeks == []
    assert report.last_entry == D("2026-12-03") and codes(report.flags) == []


# -- the two cases of issue 20, item 5 -------------------------------------------------------------
def test_an_athlete_ahead_of_the_coach_is_seen_with_the_entry_of_her_today() -> None:
    """A coach in UTC (2026-12-03) and an athlete in Kiritimati who logged her today, 2026-12-04."""
    coach_today = D("2026-12-03")
    history = logged("2026-12-04")
    report = judged_report("k", history, athlete_calendar(EVENING_UTC, KIRITIMATI, coach_today))
    assert report.end == D("2026-12-04") and report.last_entry == D("2026-12-04")
    assert (report.days_logged, codes(report.flags)) == (1, [])
    assert report.rolling_7["steps"] == 8000
    assert report.as_json()["today"] == "2026-12-04" and report.as_json()["calendar"] == "athlete"
    # The coach's calendar would not have reached her day at all.
    blind = judged_report("k", history, athlete_calendar(EVENING_UTC, None, coach_today))
    assert blind.last_entry is None and [f.message for f in blind.flags] == ["no entries at all"]


def test_an_athlete_behind_the_coach_is_not_flagged_for_a_day_that_is_not_over() -> None:
    """A coach in Kiritimati (2026-12-04) and an athlete in Pago Pago (2026-12-03) who last logged 12-01."""
    history = logged("2026-11-29", "2026-11-30", "2026-12-01")
    report = judged_report("p", history, athlete_calendar(EVENING_UTC, PAGO_PAGO, D("2026-12-04")))
    assert report.end == D("2026-12-03") and codes(report.flags) == []
    # Once her 2026-12-04 has begun (11:00 UTC), three days have gone by without an entry.
    later = judged_report("p", history, athlete_calendar(EVENING_UTC + dt.timedelta(hours=15), PAGO_PAGO,
                                                         D("2026-12-05")))
    (flag,) = later.flags
    assert flag.code == "no_entry" and flag.message == "no entry for 3 days (last 2026-12-01)"
    assert flag.numbers == {"last_entry": "2026-12-01", "days_without": 3}


def test_the_last_7_days_are_the_athletes_own() -> None:
    """Her week ends on her today: her 2026-12-04 counts, and 2026-11-27 (8 days back for her) does not."""
    history = [*logged("2026-11-27", steps=1000), *logged(*(f"2026-11-{d}" for d in range(28, 31)), "2026-12-01",
                                                          "2026-12-02", "2026-12-03", "2026-12-04", steps=9000)]
    hers = judged_report("k", history, Calendar(D("2026-12-04"), KIRITIMATI))
    assert hers.rolling_7["steps"] == 9000
    coach = judged_report("k", history, Calendar(D("2026-12-03")))
    assert coach.rolling_7["steps"] == pytest.approx((1000 + 6 * 9000) / 7)


# -- what a coach may ask for ---------------------------------------------------------------------
def test_a_coach_may_ask_for_any_date() -> None:
    today = D("2026-12-03")
    assert asked_dates(None, None, today) == (None, None)
    assert asked_dates("2026-12-01", "2027-06-30", today) == (D("2026-12-01"), D("2027-06-30"))
    assert asked_dates(None, "tomorrow", today) == (None, D("2026-12-04"))
    with pytest.raises(UsageError, match=r"^from: 2027-01-02 is after to 2027-01-01 \(allowed a date on or before"):
        asked_dates("2027-01-02", "2027-01-01", today)
    with pytest.raises(ValidationError) as bad:
        asked_dates(None, "2026-13-01", today)
    assert (bad.value.field, bad.value.value) == ("to", "2026-13-01")
