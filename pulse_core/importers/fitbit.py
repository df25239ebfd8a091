"""Reading one user's days from a Fitbit (Fitabase) export folder.

The folder holds `dailyActivity_merged.csv` (required), `sleepDay_merged.csv` and
`weightLogInfo_merged.csv` (either may be absent). Rows carry an `Id` column naming the user; only
`source_user`'s rows are read. Dates are M/D/YYYY (`4/12/2016`, `4/12/2016 12:00:00 AM`).

Choices, checked against the public "Fitabase Data 4.12.16-5.12.16" set (33 users, 31 days):

- steps: `TotalSteps`. A day with 0 steps and no activity at all is a day the tracker was not
  worn, so it has no steps (absent, never 0): `SedentaryMinutes` 1440 (72 rows), or no
  very/fairly/lightly active minutes (4 more rows, all the last day of a run of unworn 1440-minute
  days, cut short, e.g. 0 steps and 48 sedentary minutes). A day with 0 steps but some active
  minutes keeps its 0. A day left with no values at all gives no record.
- sleep_hours: the day's `TotalMinutesAsleep` / 60 (not `TotalTimeInBed`). A sleepDay row is
  already the day's total over its `TotalSleepRecords` sleeps, so a second row for the same day is
  another copy of that total, not another sleep: exact duplicate rows (3 in the set) are read once,
  and if differing rows for one day ever occur the largest total is kept (never summed).
- weight_kg: `WeightKg` (or `WeightPounds` × 0.45359237 when WeightKg is empty); of several logs
  in a day the last one wins, by the `Date` time and then by `LogId`.
- A value that is not a number is passed on as written, so the import counts the day as skipped
  (invalid) instead of guessing; a malformed date stops the import with the file and line.

The files are read and checked when `read_fitbit` is called (errors and progress come before the
store is locked); it returns an iterator over the user's days in date order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pulse_core.importers._common import (
    ByteCounter,
    CsvFile,
    Progress,
    bad_row,
    decimal_or_none,
    file_size,
    require_dir,
    require_file,
    unknown_user,
    us_date,
)
from pulse_core.usecases import DayRecord

ACTIVITY = "dailyActivity_merged.csv"
SLEEP = "sleepDay_merged.csv"
WEIGHT = "weightLogInfo_merged.csv"

ACTIVITY_COLUMNS = ("Id", "ActivityDate", "TotalSteps", "SedentaryMinutes")
ACTIVE_MINUTES = ("VeryActiveMinutes", "FairlyActiveMinutes", "LightlyActiveMinutes")
SLEEP_COLUMNS = ("Id", "SleepDay", "TotalMinutesAsleep")
WEIGHT_COLUMNS = ("Id", "Date", "WeightKg", "LogId")

MINUTES_PER_DAY = 1440
KG_PER_LB = Decimal("0.45359237")
FOLDER_ALLOWED = f"a Fitbit export folder with {ACTIVITY}"


@dataclass
class _Day:
    fields: dict[str, object] = field(default_factory=dict)
    origin: list[str] = field(default_factory=list)
    sleep_rows: set[tuple[str, ...]] = field(default_factory=set)
    sleep_minutes: Decimal | None = None
    weight_key: tuple[dt.datetime, int] | None = None


def read_fitbit(
    folder: Path, source_user: str, progress: Progress | None = None
) -> Iterator[DayRecord]:
    """`source_user`'s days from the export in `folder`, in date order."""
    folder = Path(folder)
    require_dir(folder, "folder", FOLDER_ALLOWED)
    paths = [require_file(folder, ACTIVITY, "folder", FOLDER_ALLOWED)]
    paths += [folder / name for name in (SLEEP, WEIGHT) if (folder / name).is_file()]
    counter = ByteCounter(sum(file_size(path) for path in paths), progress)
    user = str(source_user).strip()
    days: dict[dt.date, _Day] = {}

    _read_activity(CsvFile(paths[0], ACTIVITY_COLUMNS, counter), user, days)
    for path in paths[1:]:
        if path.name == SLEEP:
            _read_sleep(CsvFile(path, SLEEP_COLUMNS, counter), user, days)
        else:
            _read_weight(CsvFile(path, WEIGHT_COLUMNS, counter), user, days)
    counter.finish()

    records = [
        DayRecord(date, day.fields, "fitbit " + ", ".join(day.origin))
        for date, day in sorted(days.items())
        if day.fields
    ]
    return iter(records)


def _read_activity(csv_file: CsvFile, user: str, days: dict[dt.date, _Day]) -> None:
    ids: set[str] = set()
    for line, row in csv_file.rows():
        row_id = row.get("Id", "").strip()
        ids.add(row_id)
        if row_id != user:
            continue
        date = us_date(csv_file, line, "ActivityDate", row.get("ActivityDate", ""))
        day = days.setdefault(date, _Day())
        day.origin.append(f"{csv_file.name}:{line}")
        steps = row.get("TotalSteps", "").strip()
        if steps and not _not_worn(row):
            day.fields["steps"] = steps
    if user not in ids:
        raise unknown_user(user, csv_file.name, sorted(ids - {""}))


def _not_worn(row: dict[str, str]) -> bool:
    """0 steps and nothing but sedentary minutes: the whole day (1440), or no active minute at all."""
    if decimal_or_none(row.get("TotalSteps", "")) != 0:
        return False
    if decimal_or_none(row.get("SedentaryMinutes", "")) == MINUTES_PER_DAY:
        return True
    active = [decimal_or_none(row.get(name, "")) for name in ACTIVE_MINUTES]
    return all(minutes == 0 for minutes in active)


def _read_sleep(csv_file: CsvFile, user: str, days: dict[dt.date, _Day]) -> None:
    for line, row in csv_file.rows():
        if row.get("Id", "").strip() != user:
            continue
        date = us_date(csv_file, line, "SleepDay", row.get("SleepDay", ""))
        day = days.setdefault(date, _Day())
        key = tuple(value.strip() for value in row.values())
        if key in day.sleep_rows:
            continue  # an exact duplicate row
        day.sleep_rows.add(key)
        day.origin.append(f"{csv_file.name}:{line}")
        raw = row.get("TotalMinutesAsleep", "").strip()
        if not raw:
            continue
        minutes = decimal_or_none(raw)
        if minutes is None:
            day.fields.setdefault("sleep_hours", raw)  # not a number: the import will skip the day
            continue
        if day.sleep_minutes is None or minutes > day.sleep_minutes:
            day.sleep_minutes = minutes
            day.fields["sleep_hours"] = minutes / 60


def _read_weight(csv_file: CsvFile, user: str, days: dict[dt.date, _Day]) -> None:
    for line, row in csv_file.rows():
        if row.get("Id", "").strip() != user:
            continue
        stamp = _us_datetime(csv_file, line, row.get("Date", ""))
        log_id = row.get("LogId", "").strip()
        key = (stamp, int(log_id) if log_id.isdigit() else -1)
        day = days.setdefault(stamp.date(), _Day())
        day.origin.append(f"{csv_file.name}:{line}")
        weight: object = row.get("WeightKg", "").strip()
        if not weight:
            pounds = decimal_or_none(row.get("WeightPounds", ""))
            weight = None if pounds is None else pounds * KG_PER_LB
        if weight is None:
            continue
        if day.weight_key is None or key >= day.weight_key:
            day.weight_key = key
            day.fields["weight_kg"] = weight


def _us_datetime(csv_file: CsvFile, line: int, value: str) -> dt.datetime:
    """`5/2/2016 11:59:59 PM` (a bare date counts as midnight)."""
    text = value.strip()
    formats = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y")
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise bad_row(csv_file, line, "Date", value, "a time as M/D/YYYY h:mm:ss AM")

