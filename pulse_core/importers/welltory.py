"""Reading one user's days from the Welltory COVID-19 open data (a folder of CSV files).

The folder holds `hrv_measurements_no_rr.csv` (or the study's original `hrv_measurements.csv`,
with its long `rr_data` column), and optionally `sleep.csv` and `wearables.csv`. Rows carry a
`user_code` column; only `source_user`'s rows are read.

Choices, checked against the published data (185 users):

- hrv_ms: `rmssd`, hrv_method "rmssd". Of several readings in a day (the date of
  `measurement_datetime`; 693 user-days have more than one, up to 16) the first whose
  `time_of_day` is "morning" is kept, else the day's first reading. `time_of_day` is taken as
  written even where it disagrees with the clock (a few "morning" readings are at 20:00-21:00).
  A value outside the allowed range (one rmssd of 310.8) is passed on: the import skips that day.
- sleep_hours: `sleep_duration` in seconds / 3600 for the row's `day` (datatypes.md says hours,
  but the values, 930 to 47460, and `sleep_end - sleep_begin`, which they equal, are seconds).
  36 user-days have two to four rows that are the same night written again with the clock
  shifted by one to three hours (same duration, overlapping times). So rows of one day whose
  `sleep_begin`..`sleep_end` overlap count once (the longest); rows that do not overlap (a night
  and a nap) are added.
- steps: `steps_count` (1130 of 3098 rows are empty: no steps that day). If a day had two rows
  the last would be kept (none do).
- Empty values are skipped; a value that is not a number is passed on as written, so the import
  counts the day as skipped (invalid); a malformed date stops the import with the file and line.

The files are read and checked when `read_welltory` is called (errors and progress come before
the store is locked); it returns an iterator over the user's days in date order.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pulse_core.importers._common import (
    ByteCounter,
    CsvFile,
    Progress,
    decimal_or_none,
    file_size,
    iso_date,
    require_dir,
    unknown_user,
    usage,
)
from pulse_core.usecases import DayRecord

HRV_NAMES = ("hrv_measurements_no_rr.csv", "hrv_measurements.csv")
SLEEP = "sleep.csv"
WEARABLES = "wearables.csv"

HRV_COLUMNS = ("user_code", "measurement_datetime", "time_of_day", "rmssd")
SLEEP_COLUMNS = ("user_code", "day", "sleep_duration")
WEARABLES_COLUMNS = ("user_code", "day", "steps_count")

FOLDER_ALLOWED = f"a Welltory data folder with {HRV_NAMES[0]}"
SECONDS_PER_HOUR = 3600
RR_FIELD_LIMIT = 1 << 26  # hrv_measurements.csv keeps every beat interval of a reading in one field


@dataclass
class _Sleep:
    begin: dt.datetime | None
    end: dt.datetime | None
    seconds: Decimal


@dataclass
class _Day:
    origin: list[str] = field(default_factory=list)
    hrv_key: tuple[int, str, int] | None = None
    hrv: str | None = None
    sleeps: list[_Sleep] = field(default_factory=list)
    sleep_raw: str | None = None  # a duration that is not a number
    steps: str | None = None


def read_welltory(
    folder: Path, source_user: str, progress: Progress | None = None
) -> Iterator[DayRecord]:
    """`source_user`'s days from the Welltory data in `folder`, in date order."""
    folder = Path(folder)
    require_dir(folder, "folder", FOLDER_ALLOWED)
    hrv_path = next((folder / name for name in HRV_NAMES if (folder / name).is_file()), None)
    if hrv_path is None:
        raise usage("folder", folder, FOLDER_ALLOWED, f"has no {HRV_NAMES[0]}")
    optional = [folder / name for name in (SLEEP, WEARABLES) if (folder / name).is_file()]
    counter = ByteCounter(sum(file_size(path) for path in [hrv_path, *optional]), progress)
    user = str(source_user).strip()
    days: dict[dt.date, _Day] = {}
    ids: set[str] = set()

    if hrv_path.name != HRV_NAMES[0]:
        csv.field_size_limit(max(csv.field_size_limit(), RR_FIELD_LIMIT))
    _read_hrv(CsvFile(hrv_path, HRV_COLUMNS, counter), user, days, ids)
    for path in optional:
        if path.name == SLEEP:
            _read_sleep(CsvFile(path, SLEEP_COLUMNS, counter), user, days, ids)
        else:
            _read_wearables(CsvFile(path, WEARABLES_COLUMNS, counter), user, days, ids)
    counter.finish()
    if user not in ids:
        where = ", ".join(path.name for path in [hrv_path, *optional])
        raise unknown_user(user, where, sorted(ids - {""}))

    records = []
    for date, day in sorted(days.items()):
        fields = _fields(day)
        if fields:
            records.append(DayRecord(date, fields, "welltory " + ", ".join(day.origin)))
    return iter(records)


def _fields(day: _Day) -> dict[str, object]:
    fields: dict[str, object] = {}
    if day.sleep_raw is not None:
        fields["sleep_hours"] = day.sleep_raw
    elif day.sleeps:
        fields["sleep_hours"] = _asleep_seconds(day.sleeps) / SECONDS_PER_HOUR
    if day.hrv is not None:
        fields["hrv_ms"] = day.hrv
        fields["hrv_method"] = "rmssd"
    if day.steps is not None:
        fields["steps"] = day.steps
    return fields


def _asleep_seconds(sleeps: list[_Sleep]) -> Decimal:
    """Rows whose times overlap are one sleep (the longest counts); separate sleeps add up."""
    timed = sorted((s for s in sleeps if s.begin is not None and s.end is not None), key=_begin)
    total = sum((s.seconds for s in sleeps if s.begin is None or s.end is None), Decimal(0))
    group_end: dt.datetime | None = None
    longest = Decimal(0)
    for sleep in timed:
        assert sleep.begin is not None and sleep.end is not None
        if group_end is not None and sleep.begin < group_end:
            longest = max(longest, sleep.seconds)
            group_end = max(group_end, sleep.end)
            continue
        total += longest
        longest, group_end = sleep.seconds, sleep.end
    return total + longest


def _begin(sleep: _Sleep) -> dt.datetime:
    assert sleep.begin is not None
    return sleep.begin


def _read_hrv(csv_file: CsvFile, user: str, days: dict[dt.date, _Day], ids: set[str]) -> None:
    for line, row in csv_file.rows():
        row_id = row.get("user_code", "").strip()
        ids.add(row_id)
        if row_id != user:
            continue
        when = row.get("measurement_datetime", "").strip()
        rmssd = row.get("rmssd", "").strip()
        if not rmssd:
            continue
        date = iso_date(csv_file, line, "measurement_datetime", when)
        day = days.setdefault(date, _Day())
        rank = 0 if row.get("time_of_day", "").strip().lower() == "morning" else 1
        key = (rank, when, line)
        if day.hrv_key is None or key < day.hrv_key:
            day.hrv_key = key
            day.hrv = rmssd
            day.origin = [o for o in day.origin if not o.startswith(csv_file.name)]
            day.origin.insert(0, f"{csv_file.name}:{line}")


def _read_sleep(csv_file: CsvFile, user: str, days: dict[dt.date, _Day], ids: set[str]) -> None:
    for line, row in csv_file.rows():
        row_id = row.get("user_code", "").strip()
        ids.add(row_id)
        if row_id != user:
            continue
        raw = row.get("sleep_duration", "").strip()
        if not raw:
            continue
        day = days.setdefault(iso_date(csv_file, line, "day", row.get("day", "")), _Day())
        day.origin.append(f"{csv_file.name}:{line}")
        seconds = decimal_or_none(raw)
        if seconds is None:
            day.sleep_raw = raw
            continue
        begin = _datetime(row.get("sleep_begin", ""))
        end = _datetime(row.get("sleep_end", ""))
        day.sleeps.append(_Sleep(begin, end, seconds))


def _read_wearables(csv_file: CsvFile, user: str, days: dict[dt.date, _Day], ids: set[str]) -> None:
    for line, row in csv_file.rows():
        row_id = row.get("user_code", "").strip()
        ids.add(row_id)
        if row_id != user:
            continue
        steps = row.get("steps_count", "").strip()
        if not steps:
            continue
        day = days.setdefault(iso_date(csv_file, line, "day", row.get("day", "")), _Day())
        day.origin.append(f"{csv_file.name}:{line}")
        day.steps = steps


def _datetime(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
