"""The snapshot message the replication reader stores with each row: the default columns, the stamp and
source columns folded into `stamps`."""

from __future__ import annotations

import json

import pytest

from pulse_server.shapes.protocol import DEFAULT_COLUMNS, row_json, shape_value, stored_message

DATA = {
    "user_id": "7", "date": "2026-11-27", "sleep_hours": "7.50", "hrv_ms": "48.50", "hrv_method": "rmssd",
    "steps": "8000", "weight_kg": "71.40", "note": 'said "ok" \\ then \u00e9\u2603\n', "score": "81",
    "score_version": "1", "deleted": "f",
}
STAMPS = {
    "sleep_hours_hlc": "0001764201600000:00000:a", "sleep_hours_src": "watch",
    "hrv_ms_hlc": None, "hrv_ms_src": None, "steps_hlc": "0001764201600000:00001:a", "steps_src": "manual",
    "weight_kg_hlc": None, "weight_kg_src": None, "note_hlc": None, "note_src": None,
    "deleted_hlc": None, "deleted_src": None,
}


@pytest.mark.parametrize("username", ["ann", None, 'o"brien'])
def test_the_stored_message_is_an_insert_of_the_default_columns_with_the_username(username: str | None) -> None:
    table_row = {**DATA, **STAMPS, "updated_at": "2026-11-27 10:00:00+00"}  # a column the shape does not carry
    message = json.loads(stored_message(json.loads(row_json(table_row)), 7, "2026-11-27", username))
    assert message == {
        "key": '"public"."entries"/"7"/"2026-11-27"',
        "value": {**DATA, "username": username,
                  "stamps": "0001764201600000:00000:a watch;;0001764201600000:00001:a manual;;;"},
        "headers": {"operation": "insert", "relation": ["public", "entries"]},
    }
    assert set(message["value"]) == set(DEFAULT_COLUMNS)


def test_the_row_json_keeps_only_the_columns_the_row_has() -> None:
    assert json.loads(row_json({"user_id": "7", "date": "2026-11-27", "updated_at": "x"})) == {
        "user_id": "7", "date": "2026-11-27"}
    assert json.loads(stored_message({}, 7, "2026-11-27", "ann"))["value"] == {"username": "ann"}


def test_the_twelve_columns_stay_available_by_name_and_stamps_only_when_asked() -> None:
    row = {**DATA, **STAMPS}
    asked = ("user_id", "date", "steps", "steps_hlc", "steps_src")
    assert shape_value(row, "ann", asked) == {"user_id": "7", "date": "2026-11-27", "steps": "8000",
                                              "steps_hlc": "0001764201600000:00001:a", "steps_src": "manual"}
    assert "stamps" not in shape_value(row, "ann", ("user_id", "date", "steps"))
    # an update that carries only the key has no stamps to fold: it sends none (not a null that would
    # wipe the client's)
    assert shape_value({"user_id": "7", "date": "2026-11-27"}, None, DEFAULT_COLUMNS) == {
        "user_id": "7", "date": "2026-11-27", "username": None}
