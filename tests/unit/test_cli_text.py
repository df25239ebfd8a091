"""The CLI's words for people, unit by unit: conflicts with values as typed and stamps as local times, and
the coach's athlete list at 80 columns (the end-to-end runs are in tests/e2e, tests/sync, tests/reports)."""

from __future__ import annotations

import datetime as dt

from rich.console import Console

from pulse_cli.athletes_table import age, show_athletes
from pulse_cli.sync_text import change_text, conflict_lines, field_value, number, stamp_time

MS = 1_764_830_000_000  # 2025-12-04 06:33:20 UTC


def local(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def test_numbers_read_as_typed_not_as_floats() -> None:
    assert [number(v) for v in (8.0, 7.5, 6.25, 9000, 71.4, 0)] == ["8", "7.5", "6.25", "9,000", "71.4", "0"]


def test_each_field_has_its_unit_and_hrv_its_method() -> None:
    assert field_value("sleep_hours", 6.0) == "6 h"
    assert field_value("steps", 12000) == "12,000 steps"
    assert field_value("weight_kg", 71.4) == "71.4 kg"
    assert field_value("hrv_ms", {"hrv_ms": 62.0, "hrv_method": "rmssd"}) == "62 ms (rmssd)"
    assert field_value("hrv_ms", {"hrv_ms": None, "hrv_method": None}) == "nothing"
    assert field_value("note", "easy run") == '"easy run"'
    assert field_value("sleep_hours", None) == "nothing"


def test_a_conflict_says_what_was_kept_over_what_when_and_where() -> None:
    kept, lost = f"{MS + 60_000:016d}:00000:phone1", f"{MS:016d}:00003:laptop2"
    row = {"id": 3, "date": "2025-12-03", "field": "sleep_hours", "kept": 6.0, "lost": 8.0, "kept_hlc": kept,
           "lost_hlc": lost, "state": "open"}
    assert conflict_lines(row, own_client="laptop2") == [
        "[3] 2025-12-03 sleep: kept 6 h over 8 h (open; the later change wins)",
        f"    kept 6 h: written {local(MS + 60_000)} on device phone1",
        f"    lost 8 h: written {local(MS)} on this device",
    ]


def test_an_earlier_value_kept_can_only_be_one_set_by_hand_over_an_import() -> None:
    row = {"id": 4, "date": "2025-12-03", "field": "steps", "kept": 8000, "lost": 9100, "state": "dismissed",
           "kept_hlc": f"{MS:016d}:00000:api", "lost_hlc": f"{MS + 5_000:016d}:00000:phone1"}
    first = conflict_lines(row, own_client="laptop2")
    assert first[0] == "[4] 2025-12-03 steps: kept 8,000 steps over 9,100 steps (dismissed; a value set by hand beats" \
                       " an import)"
    assert first[1].endswith("through the API")


def test_a_missing_stamp_is_said_so() -> None:
    assert stamp_time(None) == "at an unknown time"


def test_a_rejected_change_is_listed_in_words() -> None:
    assert change_text("set", {"hrv_ms": 62.0, "hrv_method": "sdnn", "steps": 100001}) == \
        "set HRV 62 ms (sdnn), steps 100,001 steps"
    assert change_text("delete", {}) == "delete the day"


NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def test_last_sync_is_an_age_in_the_largest_whole_unit() -> None:
    ago = {"2026-12-04T11:59:30Z": "just now", "2026-12-04T11:55:00Z": "5 min ago", "2026-12-04T09:00:00Z": "3 h ago",
           "2026-11-22T12:00:00Z": "12 d ago", "2026-08-01T12:00:00Z": "4 mo ago", "2016-05-12T12:00:00Z": "10 y ago"}
    assert {stamp: age(stamp, NOW) for stamp in ago} == ago
    assert age(None, NOW) == "–"


def athlete(name: str, flags: list[str], as_of: str = "2016-05-12", zone: int | None = -420) -> dict[str, object]:
    return {"athlete": name, "as_of": as_of, "utc_offset_min": zone, "last_entry": "2016-05-11",
            "last_sync": "2026-12-01T12:00:00Z", "days_7": 6, "days_28": 27, "flags": [{"code": c} for c in flags]}


def test_the_athlete_list_shows_every_cell_whole_at_80_columns() -> None:
    rows = [athlete("fitbit-1503960366", ["short_sleep", "weight_change", "hrv_low"]),
            athlete("welltory-6be5033971", ["no_entry"], zone=None),
            athlete("fitbit-1624580081", [], as_of="2016-05-11")]
    console = Console(width=80, record=True, color_system=None)
    show_athletes(rows, None, "2026-12-04T10:00:00+00:00", console, NOW)  # type: ignore[arg-type]
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for cell in ("fitbit-1503960366", "welltory-6be5033971*", "2016-05-11", "3 d ago", "Last entry", "Last sync",
                 "Open flags", "short_sleep", "weight_change", "hrv_low", "no_entry", " as of 2016-05-11"):
        assert any(cell in line for line in lines), cell
    synced = dt.datetime(2026, 12, 4, 10, tzinfo=dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M")
    title = " ".join(line.strip() for line in lines[:2])
    assert title.startswith("3 athletes as of 2016-05-12, their own today (others as marked); this device last synced")
    assert synced in title and "T" not in title.split("synced", 1)[1]
