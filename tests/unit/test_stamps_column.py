"""The `stamps` column's text: the twelve stamp and source columns of a row, folded and unfolded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.errors import ShapeProtocolError
from sync.stamps_column import COLUMNS, FIELDS, StampsTextError, decode, encode, expand

STAMP = "0001735689600000:00000:phone-1"


def test_a_day_written_at_once_is_one_stamp_and_repeats() -> None:
    row = {f"{f}_{k}": v for f in FIELDS for k, v in (("hlc", STAMP), ("src", "manual")) if f != "note"}
    assert encode(row) == f"{STAMP} manual;=;=;=;;="
    assert decode(f"{STAMP} manual;=;=;=;;=") == {**dict.fromkeys(COLUMNS), **row}


def test_no_stamps_is_null_and_null_is_no_stamps() -> None:
    assert encode({"steps": "8000"}) is None
    assert decode(None) == dict.fromkeys(COLUMNS)
    assert decode("") == dict.fromkeys(COLUMNS)


def test_separators_and_null_halves_are_escaped() -> None:
    row = {"sleep_hours_hlc": "a;b c", "sleep_hours_src": None, "hrv_ms_hlc": None, "hrv_ms_src": "x=y~%"}
    text = encode(row)
    assert text == "a%3Bb%20c ~;~ x%3Dy%7E%25;;;;"
    assert {k: v for k, v in decode(text).items() if v is not None} == {
        "sleep_hours_hlc": "a;b c", "hrv_ms_src": "x=y~%"}


@pytest.mark.parametrize("text", ["a b;;;;", "=;;;;;", "ab;;;;;", "a b;c d e;;;;"])
def test_malformed_text_is_refused_with_the_text(text: str) -> None:
    with pytest.raises(StampsTextError, match="stamps") as caught:
        decode(text)
    assert isinstance(caught.value, ShapeProtocolError)  # reported as any malformed shape message is


def test_expand_replaces_the_column_and_leaves_other_rows() -> None:
    assert expand({"user_id": "7", "stamps": f"{STAMP} fitbit;;;;;"}) == {
        "user_id": "7", **dict.fromkeys(COLUMNS), "sleep_hours_hlc": STAMP, "sleep_hours_src": "fitbit"}
    assert expand({"user_id": "7", "date": "2026-01-01"}) == {"user_id": "7", "date": "2026-01-01"}


values = st.one_of(st.none(), st.text(max_size=12))


@given(st.fixed_dictionaries({c: values for c in COLUMNS}))
def test_decode_undoes_encode(row: dict[str, str | None]) -> None:
    assert decode(encode(row)) == row
