"""Validation: the limits from the spec, written out here by hand rather than read from pulse_core.rules."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse_core.errors import ValidationError
from pulse_core.values import parse_date, parse_fields, parse_metric

TODAY = dt.date(2026, 3, 10)

# field: (low, high, allowed text); the spec's ranges, inclusive.
DECIMAL_LIMITS = {
    "sleep_hours": (Decimal(0), Decimal(24), "0 to 24 h"),
    "hrv_ms": (Decimal(1), Decimal(300), "1 to 300 ms"),
    "weight_kg": (Decimal(20), Decimal(500), "20 to 500 kg"),
}
STEPS_ALLOWED = "0 to 100000 steps"


def shown(value: Decimal | int) -> str:
    """How a number appears in a message: no exponent, no trailing zeros."""
    return format(Decimal(value).normalize(), "f")


def assert_names_field_value_and_range(exc: ValidationError, field: str, value: str, allowed: str) -> None:
    assert exc.field == field
    assert exc.allowed == allowed
    assert field in exc.message
    assert value in exc.message
    assert allowed in exc.message


# --- properties ------------------------------------------------------------------------------------


@st.composite
def decimal_field_and_value(draw: st.DrawFn) -> tuple[str, Decimal]:
    field = draw(st.sampled_from(sorted(DECIMAL_LIMITS)))
    low, high, _ = DECIMAL_LIMITS[field]
    value = draw(
        st.decimals(min_value=low - 50, max_value=high + 50, places=2, allow_nan=False, allow_infinity=False)
    )
    return field, value


@given(decimal_field_and_value())
def test_a_decimal_field_accepts_exactly_the_values_inside_its_limits(case: tuple[str, Decimal]) -> None:
    field, value = case
    low, high, allowed = DECIMAL_LIMITS[field]
    if low <= value <= high:
        assert parse_metric(field, str(value)) == value
    else:
        with pytest.raises(ValidationError) as info:
            parse_metric(field, str(value))
        assert info.value.code == "out_of_range"
        assert_names_field_value_and_range(info.value, field, shown(value), allowed)


@given(st.integers(min_value=-20_000, max_value=200_000))
def test_steps_accepts_exactly_the_whole_numbers_from_0_to_100000(steps: int) -> None:
    if 0 <= steps <= 100_000:
        parsed = parse_metric("steps", str(steps))
        assert parsed == steps
        assert type(parsed) is int
    else:
        with pytest.raises(ValidationError) as info:
            parse_metric("steps", steps)
        assert_names_field_value_and_range(info.value, "steps", str(steps), STEPS_ALLOWED)


@given(st.integers(min_value=-15, max_value=15))
def test_a_date_is_accepted_exactly_when_it_is_at_most_one_day_ahead(offset: int) -> None:
    day = TODAY + dt.timedelta(days=offset)
    if offset <= 1:
        assert parse_date(day.isoformat(), TODAY) == day
    else:
        with pytest.raises(ValidationError) as info:
            parse_date(day.isoformat(), TODAY)
        assert_names_field_value_and_range(info.value, "date", day.isoformat(), "up to 2026-03-11")


# --- boundaries and messages, one by one -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("sleep_hours", "0", Decimal(0)),
        ("sleep_hours", "24", Decimal(24)),
        ("sleep_hours", " 7.5 ", Decimal("7.5")),
        ("hrv_ms", "1", Decimal(1)),
        ("hrv_ms", "300", Decimal(300)),
        ("weight_kg", "20", Decimal(20)),
        ("weight_kg", "500", Decimal(500)),
        ("steps", "0", 0),
        ("steps", "100000", 100_000),
        ("steps", "1e3", 1000),
        ("steps", 9000, 9000),
        ("sleep_hours", 7.25, Decimal("7.25")),
    ],
)
def test_values_on_or_inside_the_limits_are_accepted(field: str, raw: object, expected: object) -> None:
    assert parse_metric(field, raw) == expected


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("sleep_hours", "24.01", "sleep_hours: 24.01 is out of range (allowed 0 to 24 h)"),
        ("sleep_hours", "-0.01", "sleep_hours: -0.01 is out of range (allowed 0 to 24 h)"),
        ("sleep_hours", "25", "sleep_hours: 25 is out of range (allowed 0 to 24 h)"),
        ("hrv_ms", "0.99", "hrv_ms: 0.99 is out of range (allowed 1 to 300 ms)"),
        ("hrv_ms", "300.01", "hrv_ms: 300.01 is out of range (allowed 1 to 300 ms)"),
        ("steps", "-1", "steps: -1 is out of range (allowed 0 to 100000 steps)"),
        ("steps", "100001", "steps: 100001 is out of range (allowed 0 to 100000 steps)"),
        ("weight_kg", "19.99", "weight_kg: 19.99 is out of range (allowed 20 to 500 kg)"),
        ("weight_kg", "500.01", "weight_kg: 500.01 is out of range (allowed 20 to 500 kg)"),
    ],
)
def test_values_just_outside_the_limits_are_rejected_with_field_value_and_range(
    field: str, raw: str, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_metric(field, raw)
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.as_dict()["allowed"] in message


@pytest.mark.parametrize("raw", ["lots", "", "7,5", True, "nan", "NaN", "inf", "-Infinity", float("nan")])
def test_a_value_that_is_not_a_finite_number_is_rejected_as_not_a_number(raw: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_metric("sleep_hours", raw)
    assert info.value.code == "not_a_number"
    assert_names_field_value_and_range(info.value, "sleep_hours", repr(raw), "0 to 24 h")


def test_a_fractional_step_count_is_rejected_as_not_a_whole_number() -> None:
    with pytest.raises(ValidationError) as info:
        parse_metric("steps", "1500.5")
    assert info.value.code == "not_an_integer"
    assert_names_field_value_and_range(info.value, "steps", "1500.5", STEPS_ALLOWED)


def test_decimal_values_are_kept_to_the_hundredth() -> None:
    assert parse_metric("weight_kg", "80.126") == Decimal("80.13")
    assert parse_metric("weight_kg", "80.125") == Decimal("80.13")  # half up, not half even
    assert parse_metric("sleep_hours", "7.333") == Decimal("7.33")


@pytest.mark.parametrize("raw", ["1e30", 10**27, "99999999999999999999999999999"])
def test_a_huge_number_is_rejected_as_out_of_range_not_crashing(raw: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_metric("sleep_hours", raw)
    assert info.value.code == "out_of_range"


@pytest.mark.parametrize(
    ("field", "raw"), [("sleep_hours", "24.004"), ("sleep_hours", "-0.004"), ("hrv_ms", "0.996")]
)
def test_a_value_just_outside_the_limits_is_rejected_even_when_it_rounds_inside(field: str, raw: str) -> None:
    with pytest.raises(ValidationError):
        parse_metric(field, raw)


# --- dates -------------------------------------------------------------------------------------------


def test_tomorrow_is_accepted_but_the_day_after_is_rejected_naming_the_latest_allowed_date() -> None:
    assert parse_date("2026-03-11", TODAY) == dt.date(2026, 3, 11)
    assert parse_date(dt.date(2026, 3, 11), TODAY) == dt.date(2026, 3, 11)
    with pytest.raises(ValidationError) as info:
        parse_date("2026-03-12", TODAY)
    assert info.value.code == "future_date"
    assert info.value.message == "date: 2026-03-12 is in the future (allowed up to 2026-03-11)"


@pytest.mark.parametrize("raw", ["2026-02-30", "10/03/2026", "soon", ""])
def test_a_date_that_cannot_be_read_is_rejected_naming_the_field_and_the_value(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_date(raw, TODAY)
    assert info.value.code == "invalid_date"
    assert info.value.field == "date"
    assert repr(raw) in info.value.message
    assert info.value.allowed in info.value.message


# --- several fields at once --------------------------------------------------------------------------


def test_parse_fields_returns_only_the_fields_given_and_treats_none_as_not_given() -> None:
    fields = parse_fields({"sleep_hours": "7.5", "steps": "9000", "weight_kg": None, "note": None})
    assert fields == {"sleep_hours": Decimal("7.5"), "steps": 9000}


def test_hrv_is_rmssd_unless_sdnn_is_given() -> None:
    assert parse_fields({"hrv_ms": "60"}) == {"hrv_ms": Decimal(60), "hrv_method": "rmssd"}
    assert parse_fields({"hrv_ms": "60", "hrv_method": " SDNN "}) == {
        "hrv_ms": Decimal(60),
        "hrv_method": "sdnn",
    }


def test_an_unknown_hrv_method_is_rejected_naming_the_choices() -> None:
    with pytest.raises(ValidationError) as info:
        parse_fields({"hrv_ms": "60", "hrv_method": "pnn50"})
    assert info.value.field == "hrv_method"
    assert "'pnn50'" in info.value.message
    assert "rmssd" in info.value.message and "sdnn" in info.value.message


def test_an_hrv_method_without_an_hrv_value_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        parse_fields({"hrv_method": "sdnn"})
    assert info.value.field == "hrv_method"


def test_the_first_invalid_field_fails_the_whole_set() -> None:
    with pytest.raises(ValidationError) as info:
        parse_fields({"sleep_hours": "7", "steps": "-5"})
    assert info.value.field == "steps"


def test_a_note_of_1000_characters_is_accepted_and_1001_is_rejected() -> None:
    assert parse_fields({"note": "x" * 1000}) == {"note": "x" * 1000}
    with pytest.raises(ValidationError) as info:
        parse_fields({"note": "x" * 1001})
    assert info.value.field == "note"
    assert "1001" in info.value.message
    assert "1000" in info.value.message


def test_an_empty_note_means_clear_the_note() -> None:
    assert parse_fields({"note": ""}) == {"note": None}
