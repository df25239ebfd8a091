"""Apple Health steps across time zones and daylight saving, on exports built here by hand.

Every stamp carries its own UTC offset; the expected numbers are worked out in the comments from
the absolute (UTC) times. As in a real export, each source's samples come together (all the
iPhone's, then all the Watch's), never interleaved by time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pulse_core.importers.apple_health import read_apple_health
from pulse_core.usecases import DayRecord

PHONE = "Ann’s iPhone"
WATCH = "Ann’s Apple Watch"
APP = "Pedometer++"


def steps(source: str, start: str, end: str, value: int) -> str:
    return (f'<Record type="HKQuantityTypeIdentifierStepCount" sourceName="{source}" unit="count" '
            f'creationDate="{end}" startDate="{start}" endDate="{end}" value="{value}"/>')


def export(folder: Path, records: list[str]) -> Path:
    path = folder / "export.xml"
    path.write_text("\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<HealthData locale="en_US">',
        '<ExportDate value="2026-11-01 09:00:00 +0100"/>',
        *records,
        "</HealthData>",
    ]), encoding="utf-8")
    return path


def steps_by_date(records: Iterator[DayRecord]) -> dict[str, object]:
    out: dict[str, object] = {}
    for record in records:
        key = record.date.isoformat()
        assert key not in out, f"two records for {key}"
        out[key] = record.fields.get("steps")
    return out


# Tokyo (+0900) in the morning, a flight, Los Angeles (-0700) from the same date's morning again.
TOKYO_TO_LA = [
    # Tokyo 10:00-10:20 +0900 = 01:00-01:20 UTC; the Watch is on its charger: the phone's 1,500.
    steps(PHONE, "2026-07-14 10:00:00 +0900", "2026-07-14 10:10:00 +0900", 780),
    steps(PHONE, "2026-07-14 10:10:00 +0900", "2026-07-14 10:20:00 +0900", 720),
    # Los Angeles 10:00-10:40 -0700 = 17:00-17:40 UTC, the phone in a backpack: 2,400 + 2,600 = 5,000.
    steps(PHONE, "2026-07-14 10:00:00 -0700", "2026-07-14 10:20:00 -0700", 2400),
    steps(PHONE, "2026-07-14 10:20:00 -0700", "2026-07-14 10:40:00 -0700", 2600),
    # ... and on the wrist: 1,700 + 1,750 + 1,650 + 1,700 = 6,800 for the same 40 minutes.
    steps(WATCH, "2026-07-14 10:00:00 -0700", "2026-07-14 10:10:00 -0700", 1700),
    steps(WATCH, "2026-07-14 10:10:00 -0700", "2026-07-14 10:20:00 -0700", 1750),
    steps(WATCH, "2026-07-14 10:20:00 -0700", "2026-07-14 10:30:00 -0700", 1650),
    steps(WATCH, "2026-07-14 10:30:00 -0700", "2026-07-14 10:40:00 -0700", 1700),
]


def test_a_tokyo_to_los_angeles_day_counts_both_10_oclock_walks(tmp_path: Path) -> None:
    # Two walks 16 hours apart: Tokyo's 1,500 (phone only) + Los Angeles' 6,800 (the Watch, which
    # counted more of that walk than the phone's 5,000) = 8,300 on 2026-07-14. Grouping by local
    # hour put both in "10:00" and took the busier device for it: max(1,500 + 5,000, 6,800) = 6,800.
    path = export(tmp_path, TOKYO_TO_LA)
    assert steps_by_date(read_apple_health(path)) == {"2026-07-14": 8300}


def test_the_order_of_the_samples_in_the_file_does_not_matter(tmp_path: Path) -> None:
    path = export(tmp_path, TOKYO_TO_LA[::-1])
    assert steps_by_date(read_apple_health(path)) == {"2026-07-14": 8300}


def test_one_walk_seen_by_a_watch_in_la_and_a_phone_on_tokyo_time_counts_once(tmp_path: Path) -> None:
    path = export(tmp_path, [
        # The phone kept Tokyo time: 03:00-03:30 +0900 on 07-16 = 18:00-18:30 UTC on 07-15.
        steps(PHONE, "2026-07-16 03:00:00 +0900", "2026-07-16 03:30:00 +0900", 2900),
        # The Watch, on Los Angeles time: 11:00-11:30 -0700 on 07-15 = the same 18:00-18:30 UTC.
        # 1,000 + 1,050 + 950 = 3,000.
        steps(WATCH, "2026-07-15 11:00:00 -0700", "2026-07-15 11:10:00 -0700", 1000),
        steps(WATCH, "2026-07-15 11:10:00 -0700", "2026-07-15 11:20:00 -0700", 1050),
        steps(WATCH, "2026-07-15 11:20:00 -0700", "2026-07-15 11:30:00 -0700", 950),
    ])
    # One walk: the Watch's 3,000 (more than the phone's 2,900), on the Watch's date, 07-15; the
    # phone's copy of the same half hour adds nothing, so 07-16 has no steps. Comparing local
    # clocks put 3,000 on 07-15 and 2,900 on 07-16.
    assert steps_by_date(read_apple_health(path)) == {"2026-07-15": 3000}


def test_two_walks_in_berlins_repeated_2_am_hour_both_count(tmp_path: Path) -> None:
    # 2026-10-25: at 03:00 +0200 Berlin's clocks go back to 02:00 +0100, so 02:00-03:00 comes twice.
    path = export(tmp_path, [
        # The second pass, 02:10-02:40 +0100 = 01:10-01:40 UTC: the Watch's battery is flat, the
        # phone counts 1,700.
        steps(PHONE, "2026-10-25 02:10:00 +0100", "2026-10-25 02:40:00 +0100", 1700),
        # The first pass, 02:10-02:40 +0200 = 00:10-00:40 UTC: the phone is in a locker, the
        # Watch counts 900 + 900.
        steps(WATCH, "2026-10-25 02:10:00 +0200", "2026-10-25 02:25:00 +0200", 900),
        steps(WATCH, "2026-10-25 02:25:00 +0200", "2026-10-25 02:40:00 +0200", 900),
    ])
    # An hour apart in UTC: 1,800 + 1,700 = 3,500. Grouping by local hour took max(1,800, 1,700).
    assert steps_by_date(read_apple_health(path)) == {"2026-10-25": 3500}


def test_a_source_counts_only_where_the_ones_with_more_steps_saw_nothing(tmp_path: Path) -> None:
    path = export(tmp_path, [
        # 09:20-09:50: the phone's 1,200 + 1,200 = 2,400 (80 steps a minute).
        steps(PHONE, "2026-02-10 09:20:00 -0800", "2026-02-10 09:35:00 -0800", 1200),
        steps(PHONE, "2026-02-10 09:35:00 -0800", "2026-02-10 09:50:00 -0800", 1200),
        # 09:00-09:30: the Watch's 3 x 1,000 = 3,000.
        steps(WATCH, "2026-02-10 09:00:00 -0800", "2026-02-10 09:10:00 -0800", 1000),
        steps(WATCH, "2026-02-10 09:10:00 -0800", "2026-02-10 09:20:00 -0800", 1000),
        steps(WATCH, "2026-02-10 09:20:00 -0800", "2026-02-10 09:30:00 -0800", 1000),
        # 09:40-10:00: an app's 900 (45 a minute).
        steps(APP, "2026-02-10 09:40:00 -0800", "2026-02-10 10:00:00 -0800", 900),
        # A walk in the evening that overlaps nothing: all of it counts.
        steps(APP, "2026-02-10 18:00:00 -0800", "2026-02-10 18:10:00 -0800", 500),
    ])
    # 09:00-10:00 overlaps end to end: the Watch (3,000) counts first, in full; then the phone
    # (2,400), except 09:20-09:30, which the Watch saw: 20 of its 30 minutes, 1,600; then the app,
    # except 09:40-09:50, which the phone saw: 10 of its 20 minutes, 450. 3,000 + 1,600 + 450 + 500
    # = 5,550. (Grouping by hour: max(3,000, 2,400, 900) + 500 = 3,500.)
    assert steps_by_date(read_apple_health(path)) == {"2026-02-10": 5550}


def test_a_sample_past_local_midnight_is_shared_over_both_dates(tmp_path: Path) -> None:
    path = export(tmp_path, [
        # 23:55-00:10 -0800: 5 of its 15 minutes on 02-10, 10 on 02-11: 200 and 400 of 600.
        steps(PHONE, "2026-02-10 23:55:00 -0800", "2026-02-11 00:10:00 -0800", 600),
        # A sample with no length (start = end) still counts, on its date.
        steps(PHONE, "2026-02-11 07:00:00 -0800", "2026-02-11 07:00:00 -0800", 25),
    ])
    assert steps_by_date(read_apple_health(path)) == {"2026-02-10": 200, "2026-02-11": 425}
