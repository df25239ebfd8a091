"""The report charts' axes and the weekly table, on made-up series: no server needed.

Round ticks up the side, Mondays along the bottom, no point or label on or past the chart's edge, and
every week of the range in the weekly table, those with no entry included.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_report_units import _entry

from pulse_cli.reports_render.axes import date_ticks, value_ticks
from pulse_cli.reports_render.model import Band, Series
from pulse_cli.reports_render.svg import CHAR_WIDTH, chart_svg, geometry
from pulse_core.reports import athlete_report

FITBIT_MONTH = [dt.date(2016, 4, 12) + dt.timedelta(days=i) for i in range(31)]  # Tue 12 Apr to Thu 12 May


def _is_round(step: float) -> bool:
    """1, 2, 2.5 or 5 times a power of ten."""
    power = 10 ** math.floor(math.log10(step))
    return any(math.isclose(step, m * power, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))


def test_the_issues_sleep_axis_has_round_ticks_not_the_datas_min_mid_and_max() -> None:
    # The values behind the issue's 4.42 / 7.67 / 10.92 (min, middle, max padded by 5%).
    values = [4.75, 8.1, 10.6, 6.2, None, 7.0]
    series = Series("sleep_hours", FITBIT_MONTH[:6], values, [None] * 6)
    assert [text for _, text in geometry(series).y_labels] == ["4", "6", "8", "10", "12"]


@given(low=st.floats(0, 200_000), span=st.floats(1e-3, 100_000), intervals=st.integers(2, 6),
       whole=st.booleans())
def test_ticks_are_evenly_spaced_round_numbers_that_hold_every_value(
    low: float, span: float, intervals: int, whole: bool
) -> None:
    high = low + span
    ticks = value_ticks(low, high, intervals, whole)
    step = float(f"{(ticks[-1] - ticks[0]) / (len(ticks) - 1):.6g}")  # the step as chosen, not its float error
    assert ticks[0] <= low + 1e-9 and ticks[-1] >= high - 1e-9
    assert ticks[0] >= 0  # amounts: never an axis below zero for values at or above it
    assert 2 <= len(ticks) <= intervals + 3
    assert all(math.isclose(b - a, step, rel_tol=1e-4) for a, b in itertools.pairwise(ticks))
    assert _is_round(step)
    assert all(math.isclose(t / step, round(t / step), abs_tol=1e-4) for t in ticks)  # multiples of the step
    if whole:
        assert step >= 1 and step == int(step)


def test_the_x_axis_ticks_the_mondays_and_labels_them_with_their_dates() -> None:
    series = Series("steps", FITBIT_MONTH, [8000.0] * 31, [None] * 31)
    geo = geometry(series)
    mondays = [d for d in FITBIT_MONTH if d.weekday() == 0]
    assert [d.isoformat() for d in mondays] == ["2016-04-18", "2016-04-25", "2016-05-02", "2016-05-09"]
    assert [text for _, text, _ in geo.x_labels] == ["2016-04-18", "04-25", "05-02", "05-09"]
    # Each tick stands at its day's point.
    points = {round(x, 6) for x, _ in geo.markers}
    assert len(geo.x_ticks) == 4 and all(round(x, 6) in points for x in geo.x_ticks)
    assert [round(x, 6) for x, _ in sorted(geo.markers)].index(round(geo.x_ticks[0], 6)) == 6  # 18 April


def test_a_year_is_labelled_every_few_weeks_with_the_year_where_it_changes() -> None:
    days = [dt.date(2016, 4, 12) + dt.timedelta(days=i) for i in range(365)]
    ticks = date_ticks(days, labels_fit=6)
    assert len(ticks) == sum(1 for d in days if d.weekday() == 0)  # a tick on each Monday
    labelled = [(days[t.index], t.label) for t in ticks if t.label]
    assert len(labelled) <= 6
    gaps = {(b - a).days for (a, _), (b, _) in itertools.pairwise(labelled)}
    assert len(gaps) == 1 and gaps.pop() % 7 == 0
    assert labelled[0][1] == "2016-04-18"
    for i, (day, label) in enumerate(labelled):  # in full first and where the year changes, else MM-DD
        full = i == 0 or labelled[i - 1][0].year != day.year
        assert label == (day.isoformat() if full else day.isoformat()[5:])
    assert any(label.startswith("2017-") for _, label in labelled)


def test_a_short_range_has_a_tick_a_day() -> None:
    days = FITBIT_MONTH[:5]  # Tuesday to Saturday: no Monday at all
    assert [t.label for t in date_ticks(days, labels_fit=6)] == ["2016-04-12", "04-13", "04-14", "04-15", "04-16"]


@pytest.mark.parametrize("width, font", [(560.0, 10.0), (250.0, 6.5)])  # the HTML's and the PDF's charts
@pytest.mark.parametrize("days", [1, 5, 31, 365])
def test_no_point_band_or_label_touches_or_crosses_the_frame(width: float, font: float, days: int) -> None:
    span = [dt.date(2016, 4, 11) + dt.timedelta(days=i) for i in range(days)]  # from a Monday: a label at x=0
    values: list[float | None] = [7000.0 + 9000 * math.sin(i) ** 2 for i in range(days)]
    bands: list[Band | None] = [Band(9000.0, 4000.0)] * days
    geo = geometry(Series("steps", span, values, bands), width, 160.0, font)
    left, top, right, bottom = geo.plot
    radius = 2.2
    drawn = [p for line in geo.lines for p in line] + geo.markers + [p for poly in geo.bands for p in poly]
    assert drawn
    for x, y in drawn:
        assert left + radius < x < right - radius and top + radius < y < bottom - radius, (x, y)
    for x, text, anchor in geo.x_labels:
        assert anchor == "middle"
        half = len(text) * font * CHAR_WIDTH / 2
        assert x - half > 0 and x + half < width, text  # not cut by the chart's edge
    # The last day's point is the rightmost one, inside the frame.
    assert max(x for x, _ in drawn) == pytest.approx(max(x for x, _ in geo.markers or geo.lines[-1]))


def test_the_svg_draws_a_gridline_per_tick_and_a_mark_per_monday() -> None:
    series = Series("sleep_hours", FITBIT_MONTH, [6.0 + (i % 4) for i in range(31)], [None] * 31)
    svg = chart_svg(series, "ana")
    assert svg.count('class="grid"') == len(geometry(series).y_labels)
    ticks = re.search(r'class="ticks" d="([^"]*)"', svg)
    assert ticks is not None and ticks.group(1).count("v4") == 4  # a mark on each Monday
    assert '>2016-04-18</text>' in svg and '>05-09</text>' in svg


# -- the weekly table ---------------------------------------------------------------------------------
def test_the_weekly_table_shows_a_week_with_no_entry_and_the_weeks_the_range_cuts() -> None:
    start, end = dt.date(2026, 3, 4), dt.date(2026, 3, 26)  # Wednesday of W10 to Thursday of W13
    logged = [dt.date(2026, 3, 4), dt.date(2026, 3, 8), dt.date(2026, 3, 24)]  # nothing 9-22 March (W11, W12)
    history = [_entry("ana", d, steps=1000 * (i + 1), sleep_hours=Decimal("7.00")) for i, d in enumerate(logged)]
    report = athlete_report("ana", history, start, end)
    rows = [(w.week, w.start.isoformat(), w.days_in_range, w.days_logged, w.means["steps"]) for w in report.weeks]
    assert rows == [
        ("2026-W10", "2026-03-02", 5, 2, 1500.0),
        ("2026-W11", "2026-03-09", 7, 0, None),
        ("2026-W12", "2026-03-16", 7, 0, None),
        ("2026-W13", "2026-03-23", 4, 1, 3000.0),
    ]
    assert report.as_json()["weeks"][1] == {"week": "2026-W11", "start": "2026-03-09", "days_in_range": 7,
                                            "days_logged": 0, "means": {m: None for m in report.weeks[1].means}}


def test_a_range_over_new_year_numbers_its_weeks_by_iso_year() -> None:
    report = athlete_report("ana", [], dt.date(2026, 12, 28), dt.date(2027, 1, 10))
    assert [(w.week, w.days_logged) for w in report.weeks] == [("2026-W53", 0), ("2027-W01", 0)]
