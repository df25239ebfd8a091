"""Warnings: accepted but implausible values. Thresholds from the spec: sleep under 3 h or over 14 h,
steps over 50,000, weight more than 3% away from the previous entry, when that entry is from the 7 days
before."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from pulse_core.entry import Entry
from pulse_core.rules import rules_document
from pulse_core.warnings import field_warnings

PREVIOUS = Entry(user="ana", date=dt.date(2026, 3, 1), weight_kg=Decimal(80))
DAY = dt.date(2026, 3, 2)  # the day being logged: PREVIOUS is the day before


def codes(fields: dict[str, object], previous: Entry | None = None, day: dt.date = DAY) -> list[tuple[str, str]]:
    return [(w.field, w.code) for w in field_warnings(fields, previous, day)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ("2.99", [("sleep_hours", "warn_low")]),
        ("3", []),
        ("7.5", []),
        ("14", []),
        ("14.01", [("sleep_hours", "warn_high")]),
        ("0", [("sleep_hours", "warn_low")]),
    ],
)
def test_sleep_warns_only_strictly_under_3_or_over_14_hours(
    hours: str, expected: list[tuple[str, str]]
) -> None:
    assert codes({"sleep_hours": Decimal(hours)}) == expected


@pytest.mark.parametrize(("steps", "expected"), [(50_000, []), (50_001, [("steps", "warn_high")]), (0, [])])
def test_steps_warn_only_over_50000(steps: int, expected: list[tuple[str, str]]) -> None:
    assert codes({"steps": steps}) == expected


def test_a_warning_message_names_the_field_the_value_and_the_threshold() -> None:
    [low] = field_warnings({"sleep_hours": Decimal("2.50")}, None, DAY)
    assert low.message == "sleep_hours: 2.5 h is unusually low (warning below 3 h)"
    assert low.as_json() == {
        "code": "warn_low",
        "field": "sleep_hours",
        "value": "2.5",
        "message": low.message,
    }
    [high] = field_warnings({"steps": 60_000}, None, DAY)
    assert high.message == "steps: 60000 steps is unusually high (warning above 50000 steps)"


@pytest.mark.parametrize(
    ("weight", "warns"),
    [
        # |82.4 - 80| / 80 = 3.0% exactly: not more than 3%
        ("82.4", False),
        ("77.6", False),
        # |82.41 - 80| / 80 = 3.0125%; |77.59 - 80| / 80 = 3.0125%
        ("82.41", True),
        ("77.59", True),
        ("80", False),
    ],
)
def test_weight_warns_only_when_it_moves_more_than_3_percent_from_the_previous_entry(
    weight: str, warns: bool
) -> None:
    found = codes({"weight_kg": Decimal(weight)}, PREVIOUS)
    assert found == ([("weight_kg", "warn_weight_change")] if warns else [])


def test_the_weight_change_message_gives_the_change_the_previous_value_and_its_date() -> None:
    # 82.5 vs 80: 2.5 / 80 = 3.125%, shown to one decimal as 3.1
    [warning] = field_warnings({"weight_kg": Decimal("82.5")}, PREVIOUS, DAY)
    assert warning.message == (
        "weight_kg: 82.5 kg is 3.1% from the previous entry of 80 kg on 2026-03-01 (warning above 3%)"
    )


def test_weight_does_not_warn_without_a_previous_entry() -> None:
    assert codes({"weight_kg": Decimal(150)}, None) == []


@pytest.mark.parametrize(("days_before", "warns"), [(1, True), (6, True), (7, True), (8, False), (3650, False)])
def test_weight_compares_only_with_a_weight_from_the_7_days_before(days_before: int, warns: bool) -> None:
    # 90 kg against 80 kg is 12.5% away: it warns whenever the earlier weight is in the window
    day = PREVIOUS.date + dt.timedelta(days=days_before)
    found = codes({"weight_kg": Decimal(90)}, PREVIOUS, day)
    assert found == ([("weight_kg", "warn_weight_change")] if warns else [])


def test_the_weight_window_is_published_as_a_whole_number_of_days() -> None:
    warnings = json.loads(json.dumps(rules_document()))["warnings"]
    assert warnings["weight_change_window_days"] == 7
    assert type(warnings["weight_change_window_days"]) is int  # not "7", not 7.0


def test_warnings_are_given_for_the_values_being_set_only() -> None:
    assert codes({"note": "tired"}, PREVIOUS) == []
    assert codes({"sleep_hours": Decimal(2), "steps": 70_000}) == [
        ("sleep_hours", "warn_low"),
        ("steps", "warn_high"),
    ]
