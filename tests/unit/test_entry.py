"""The entry's JSON form and the rules document published to other clients."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from pulse_core.entry import Entry
from pulse_core.rules import rules_document

FIELDS = {
    "date",
    "sleep_hours",
    "hrv_ms",
    "hrv_method",
    "steps",
    "weight_kg",
    "note",
    "score",
    "score_version",
    "deleted",
    "sources",
}


def test_every_field_is_present_in_json_and_an_unset_one_is_null() -> None:
    data = Entry(user="ana", date=dt.date(2026, 3, 1), sleep_hours=Decimal("7.50")).as_json()
    assert set(data) == FIELDS
    assert data["sleep_hours"] == 7.5
    for name in ("hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "score_version"):
        assert data[name] is None, name
    assert data["sources"] == {
        "sleep_hours": None,
        "hrv_ms": None,
        "steps": None,
        "weight_kg": None,
        "note": None,
    }


def test_a_zero_value_stays_zero_and_is_not_confused_with_unset() -> None:
    data = Entry(user="ana", date=dt.date(2026, 3, 1), sleep_hours=Decimal(0), steps=0).as_json()
    assert data["steps"] == 0 and data["steps"] is not None
    assert data["sleep_hours"] == 0.0 and data["sleep_hours"] is not None
    assert data["weight_kg"] is None


def test_entry_json_survives_a_round_trip_through_the_json_module() -> None:
    entry = Entry(
        user="ana",
        date=dt.date(2026, 3, 1),
        sleep_hours=Decimal("7.25"),
        hrv_ms=Decimal("61.37"),
        hrv_method="sdnn",
        steps=9000,
        weight_kg=Decimal("80.05"),
        note="ok",
        score=86,
        score_version=1,
        sources={"sleep_hours": "manual"},
    )
    data = json.loads(json.dumps(entry.as_json()))
    assert data["date"] == "2026-03-01"
    assert data["hrv_ms"] == 61.37 and data["hrv_method"] == "sdnn"
    assert data["weight_kg"] == 80.05
    assert data["sources"]["sleep_hours"] == "manual"
    assert data["sources"]["steps"] is None


def test_an_empty_entry_is_one_with_no_merge_field_set() -> None:
    assert Entry(user="ana", date=dt.date(2026, 3, 1), score=5).is_empty()
    assert not Entry(user="ana", date=dt.date(2026, 3, 1), steps=0).is_empty()


def test_the_rules_document_publishes_the_spec_limits_and_score_coefficients() -> None:
    doc = json.loads(json.dumps(rules_document()))
    assert {name: (v["min"], v["max"]) for name, v in doc["limits"].items()} == {
        "sleep_hours": ("0", "24"),
        "hrv_ms": ("1", "300"),
        "steps": ("0", "100000"),
        "weight_kg": ("20", "500"),
    }
    assert doc["warnings"]["sleep_hours"] == {"below": "3", "above": "14", "unit": "h"}
    assert doc["warnings"]["steps"]["above"] == "50000"
    assert doc["warnings"]["weight_change_pct"] == "3"
    score = doc["score"]
    assert (score["sleep"]["points_per_hour"], score["sleep"]["max"]) == ("4", "30")
    assert (score["hrv"]["points_per_ms"], score["hrv"]["max"], score["hrv"]["missing"]) == (
        "1/5",
        "20",
        "10",
    )
    assert (score["steps"]["points_per_step"], score["steps"]["max"]) == ("1/333", "30")
    assert (score["max_points"], score["scale"], score["rounding"]) == ("80", 100, "half_up")
    assert sorted(score["requires"]) == ["sleep_hours", "steps"]
