"""The shared validation cases (tests/data/validation_cases.json) against pulse_core.

The same file runs in Chromium against the PWA's own modules (tests/browser/test_validation_in_browser.py),
so the browser and the CLI accept the same inputs and say the same one-line messages.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pulse_core.entry import Entry
from pulse_core.errors import ValidationError
from pulse_core.score import day_score
from pulse_core.values import parse_date, parse_fields
from pulse_core.warnings import field_warnings

CASES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "validation_cases.json").read_text(encoding="utf-8")
)


def case_id(case: dict[str, Any]) -> str:
    return json.dumps(case["input"], ensure_ascii=True)[:60]


def as_case_value(value: object) -> object:
    """pulse_core's values as the case file writes them: decimals as text to 0.01, ints as numbers."""
    return str(value) if isinstance(value, Decimal) else value


def test_the_case_file_covers_every_kind_of_outcome() -> None:
    fields = CASES["fields"]
    assert len(fields) >= 40 and len(CASES["dates"]) >= 10
    codes = {"not a number", "out of range", "not a whole number", "is not one of", "nothing to set", "too long"}
    messages = " ".join(c["error"] for c in fields if "error" in c)
    assert all(code in messages for code in codes)
    assert any("accepted" in c for c in fields) and any("error" in c for c in CASES["dates"])


@pytest.mark.parametrize("case", CASES["fields"], ids=case_id)
def test_typed_fields_are_accepted_or_refused_with_the_expected_message(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ValidationError) as caught:
            parse_fields(case["input"])
        assert str(caught.value) == case["error"]
    else:
        got = {name: as_case_value(value) for name, value in parse_fields(case["input"]).items()}
        assert got == case["accepted"]


@pytest.mark.parametrize("case", CASES["dates"], ids=lambda c: f"{c['today']}:{c['input']!r}")
def test_typed_dates_are_accepted_or_refused_with_the_expected_message(case: dict[str, Any]) -> None:
    today = dt.date.fromisoformat(case["today"])
    if "error" in case:
        with pytest.raises(ValidationError) as caught:
            parse_date(case["input"], today)
        assert str(caught.value) == case["error"]
    else:
        assert parse_date(case["input"], today).isoformat() == case["accepted"]


@pytest.mark.parametrize("case", CASES["scores"], ids=case_id)
def test_the_day_score_of_typed_values(case: dict[str, Any]) -> None:
    fields = parse_fields(case["input"])
    sleep, hrv, steps = fields.get("sleep_hours"), fields.get("hrv_ms"), fields.get("steps")
    assert sleep is None or isinstance(sleep, Decimal)
    assert hrv is None or isinstance(hrv, Decimal)
    assert steps is None or isinstance(steps, int)
    assert day_score(sleep, hrv, steps) == case["score"]


@pytest.mark.parametrize("case", CASES["warnings"], ids=lambda c: f"{c['date']}:{case_id(c)}")
def test_the_warnings_for_typed_values(case: dict[str, Any]) -> None:
    previous = None
    if case["previous"] is not None:
        previous = Entry(user="u", date=dt.date.fromisoformat(case["previous"]["date"]),
                         weight_kg=Decimal(case["previous"]["weight_kg"]))
    warnings = field_warnings(parse_fields(case["input"]), previous, dt.date.fromisoformat(case["date"]))
    assert [w.message for w in warnings] == case["warnings"]
