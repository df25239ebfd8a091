"""The snapshot message the replication reader stores with each row, built around the row's JSON."""

from __future__ import annotations

import json

import pytest

from pulse_server.shapes.protocol import row_json, stored_message

FULL = {
    "user_id": "7", "date": "2026-11-27", "sleep_hours": "7.50", "hrv_ms": "48.50", "hrv_method": "rmssd",
    "steps": "8000", "weight_kg": "71.40", "note": 'said "ok" \\ then \u00e9\u2603\n', "score": "81",
    "score_version": "1", "deleted": "f",
    "sleep_hours_hlc": "0001764201600000:00000:a", "sleep_hours_src": "watch",
    "hrv_ms_hlc": None, "hrv_ms_src": None, "steps_hlc": "0001764201600000:00001:a", "steps_src": "manual",
    "weight_kg_hlc": None, "weight_kg_src": None, "note_hlc": None, "note_src": None,
    "deleted_hlc": None, "deleted_src": None,
}


@pytest.mark.parametrize("username", ["ann", None, 'o"brien'])
def test_the_stored_message_is_an_insert_of_every_shape_column_with_the_username(username: str | None) -> None:
    table_row = {**FULL, "updated_at": "2026-11-27 10:00:00+00"}  # a column the shape does not carry
    message = json.loads(stored_message(row_json(table_row), 7, "2026-11-27", username))
    assert message == {
        "key": '"public"."entries"/"7"/"2026-11-27"',
        "value": {**FULL, "username": username},
        "headers": {"operation": "insert", "relation": ["public", "entries"]},
    }


def test_the_row_json_keeps_only_the_columns_the_row_has() -> None:
    assert json.loads(row_json({"user_id": "7", "date": "2026-11-27", "updated_at": "x"})) == {
        "user_id": "7", "date": "2026-11-27"}
    assert json.loads(stored_message("{}", 7, "2026-11-27", "ann"))["value"] == {"username": "ann"}
