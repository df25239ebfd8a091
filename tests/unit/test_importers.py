"""The Fitbit, Welltory and Apple Health readers, on the real sample data in tests/data and on
small hand-built files whose expected values were worked out by hand (in the comments).

Expected figures for the real data are computed here independently of the readers: straight from
the CSV with the csv module, or from values looked up in the files and written down.
"""

from __future__ import annotations

import csv
import datetime as dt
import tracemalloc
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import pytest

from pulse_cli.store.connection import open_store
from pulse_cli.store.uow import SqliteUnitOfWork
from pulse_core.errors import UsageError
from pulse_core.importers.apple_health import read_apple_health
from pulse_core.importers.fitbit import read_fitbit
from pulse_core.importers.welltory import read_welltory
from pulse_core.usecases import DayRecord, ImportSummary, import_days
from pulse_core.values import parse_fields

DATA = Path(__file__).resolve().parents[1] / "data"
FITBIT = DATA / "fitbit"
WELLTORY = DATA / "welltory"
APPLE = DATA / "apple_health"
TODAY = dt.date(2026, 1, 1)


def by_date(records: Iterator[DayRecord]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for record in records:
        key = record.date.isoformat()
        assert key not in out, f"two records for {key}"
        out[key] = record.fields
    return out


def checked(fields: dict[str, object]) -> dict[str, object]:
    """The values as the core will store them (quantized to 0.01, ints for steps)."""
    return dict(parse_fields(fields))


def import_into(home: Path, records: Iterator[DayRecord], source: str) -> ImportSummary:
    conn = open_store(home)
    try:
        return import_days(SqliteUnitOfWork(conn), "", records, source, TODAY)
    finally:
        conn.close()


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def us_day(text: str) -> str:
    month, day, year = text.split(" ")[0].split("/")
    return f"{year}-{int(month):02d}-{int(day):02d}"


# --- Fitbit, real data ------------------------------------------------------------------------------


def test_fitbit_steps_match_the_csv_for_every_user_with_unworn_days_left_out() -> None:
    activity = rows(FITBIT / "dailyActivity_merged.csv")
    users = sorted({row["Id"] for row in activity})
    assert len(users) == 33
    for user in users:
        expected = {}
        for row in activity:
            if row["Id"] != user:
                continue
            active = sum(int(row[c]) for c in ("VeryActiveMinutes", "FairlyActiveMinutes",
                                               "LightlyActiveMinutes"))
            unworn = row["TotalSteps"] == "0" and (row["SedentaryMinutes"] == "1440" or active == 0)
            if not unworn:
                expected[us_day(row["ActivityDate"])] = int(row["TotalSteps"])
        days = by_date(read_fitbit(FITBIT, user))
        got = {day: fields["steps"] for day, fields in days.items() if "steps" in fields}
        assert {day: int(str(steps)) for day, steps in got.items()} == expected, user


def test_fitbit_not_worn_days_have_no_steps_and_no_record() -> None:
    days = by_date(read_fitbit(FITBIT, "1844505072"))
    # In the CSV: 5/7, 5/9, 5/10, 5/11 are 0 steps with 1440 sedentary minutes; 5/12 is 0 steps,
    # 711 sedentary and no active minute (the export's last, partial day): all not worn, and none
    # has sleep or weight, so none gives a record. 5/6 has 44 steps.
    for day in ("2016-05-07", "2016-05-09", "2016-05-10", "2016-05-11", "2016-05-12"):
        assert day not in days
    assert days["2016-05-06"] == {"steps": "44"}
    # 1503960366: 31 activity rows, one (5/12, 0 steps, 1440 sedentary) not worn.
    records = list(read_fitbit(FITBIT, "1503960366"))
    assert len(records) == 30
    assert dt.date(2016, 5, 12) not in {record.date for record in records}
    assert all(record.fields.get("steps") not in ("0", 0) for record in records)


def test_fitbit_keeps_a_zero_step_day_that_had_active_minutes() -> None:
    # 6290855005 on 4/23/2016: 0 steps but 33 very active minutes, so the tracker was worn.
    assert by_date(read_fitbit(FITBIT, "6290855005"))["2016-04-23"]["steps"] == "0"


def test_fitbit_sleep_is_minutes_asleep_over_60_and_exact_duplicate_rows_count_once() -> None:
    sleep_rows = rows(FITBIT / "sleepDay_merged.csv")
    duplicates = [key for key, n in Counter(tuple(row.values()) for row in sleep_rows).items() if n > 1]
    assert len(duplicates) == 3  # the data's three duplicated rows
    for user in {row["Id"] for row in sleep_rows}:
        expected = {us_day(row["SleepDay"]): Decimal(row["TotalMinutesAsleep"]) / 60
                    for row in sleep_rows if row["Id"] == user}
        days = by_date(read_fitbit(FITBIT, user))
        got = {day: fields["sleep_hours"] for day, fields in days.items() if "sleep_hours" in fields}
        assert got == expected, user
    # 4388161847 on 5/5/2016 is written twice with 471 minutes: 7.85 h, not 15.70.
    assert checked(by_date(read_fitbit(FITBIT, "4388161847"))["2016-05-05"])["sleep_hours"] == Decimal("7.85")


def test_fitbit_weights_match_the_csv() -> None:
    weights = [row for row in rows(FITBIT / "weightLogInfo_merged.csv") if row["Id"] == "6962181067"]
    assert len(weights) == 30
    days = by_date(read_fitbit(FITBIT, "6962181067"))
    got = {day: checked(fields)["weight_kg"] for day, fields in days.items() if "weight_kg" in fields}
    expected = {us_day(row["Date"]): Decimal(row["WeightKg"]).quantize(Decimal("0.01")) for row in weights}
    assert got == expected
    # the first log: 5/2/2016 11:59:59 PM, WeightKg 52.5999984741211 for 1503960366
    assert checked(by_date(read_fitbit(FITBIT, "1503960366"))["2016-05-02"])["weight_kg"] == Decimal("52.60")


def test_fitbit_reports_progress_up_to_the_total_bytes() -> None:
    calls: list[tuple[int, int]] = []
    list(read_fitbit(FITBIT, "1503960366", lambda done, total: calls.append((done, total))))
    total = sum((FITBIT / name).stat().st_size for name in
                ("dailyActivity_merged.csv", "sleepDay_merged.csv", "weightLogInfo_merged.csv"))
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_fitbit_import_into_the_store_is_complete_and_idempotent(tmp_path: Path) -> None:
    first = import_into(tmp_path, read_fitbit(FITBIT, "6962181067"), "fitbit")
    assert (first.read, first.imported, first.skipped) == (31, 31, Counter())
    again = import_into(tmp_path, read_fitbit(FITBIT, "6962181067"), "fitbit")
    assert (again.unchanged, again.imported, again.updated) == (31, 0, 0)


# --- Fitbit, hand-built files -----------------------------------------------------------------------

ACTIVITY_HEADER = (
    "Id,ActivityDate,TotalSteps,VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes"
)


def write_fitbit(folder: Path, activity: list[str], sleep: list[str] | None = None,
                 weight: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\r\n".join([ACTIVITY_HEADER, *activity]) + "\r\n"  # CRLF, as Fitbit writes it
    (folder / "dailyActivity_merged.csv").write_bytes(text.encode())
    if sleep is not None:
        header = "Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed"
        (folder / "sleepDay_merged.csv").write_text("\n".join([header, *sleep]) + "\n")
    if weight is not None:
        header = "Id,Date,WeightKg,WeightPounds,Fat,BMI,IsManualReport,LogId"
        (folder / "weightLogInfo_merged.csv").write_text("\n".join([header, *weight]) + "\n")
    return folder


def test_fitbit_last_weight_of_the_day_wins_by_time_then_log_id(tmp_path: Path) -> None:
    folder = write_fitbit(
        tmp_path / "fb",
        ["7,5/1/2016,5000,0,0,100,700", "7,5/2/2016,0,0,0,0,1440"],
        sleep=[
            "7,5/2/2016 12:00:00 AM,1,450,470",
            "7,5/2/2016 12:00:00 AM,1,450,470",  # an exact duplicate: read once
            "7,5/2/2016 12:00:00 AM,1,420,430",  # another total for the same day: the larger is kept
        ],
        weight=[
            "7,5/1/2016 9:10:00 PM,81.5,,,,True,300",  # the latest time of 5/1: kept
            "7,5/1/2016 7:00:00 AM,80.9,,,,True,900",  # a bigger LogId but earlier
            "8,5/1/2016 11:00:00 PM,99.0,,,,True,1",  # another user
            "7,5/2/2016 8:00:00 AM,82.0,,,,True,5",
            "7,5/2/2016 8:00:00 AM,82.4,,,,True,6",  # same time, bigger LogId: kept
            "7,5/3/2016 8:00:00 AM,,200,,,True,7",  # pounds only: 200 x 0.45359237 = 90.718474
        ],
    )
    days = by_date(read_fitbit(folder, "7"))
    assert days["2016-05-01"] == {"steps": "5000", "weight_kg": "81.5"}
    # 5/2 not worn, but it has sleep (450 / 60 = 7.5 h, not 450 + 450 + 420) and a weight: a record
    # without steps
    assert checked(days["2016-05-02"]) == {"sleep_hours": Decimal("7.50"), "weight_kg": Decimal("82.40")}
    assert days["2016-05-03"] == {"weight_kg": Decimal("90.718474")}


def test_fitbit_unknown_user_is_a_one_line_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        read_fitbit(FITBIT, "123")
    assert caught.value.message == (
        "source-user: 123 is not in dailyActivity_merged.csv (allowed one of 33 ids, e.g. 1503960366)"
    )
    assert caught.value.field == "source-user" and caught.value.value == "123"


def test_fitbit_missing_folder_or_file_or_column_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^folder: .*nowhere does not exist \(allowed a Fitbit export"):
        read_fitbit(tmp_path / "nowhere", "1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"has no dailyActivity_merged.csv \(allowed"):
        read_fitbit(tmp_path / "empty", "1")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dailyActivity_merged.csv").write_text("Id,ActivityDate,Steps\n1,4/12/2016,10\n")
    with pytest.raises(UsageError) as caught:
        read_fitbit(bad, "1")
    assert "\n" not in caught.value.message
    assert caught.value.message.startswith(
        "header: dailyActivity_merged.csv has no column TotalSteps, SedentaryMinutes (allowed a header with"
    )
    broken = write_fitbit(tmp_path / "broken", ["1,2016-04-12,10,0,0,5,100"])
    with pytest.raises(UsageError, match=r"ActivityDate: '2016-04-12' in dailyActivity_merged.csv line 2"):
        read_fitbit(broken, "1")


# --- Welltory, real data ----------------------------------------------------------------------------


def test_welltory_prefers_the_first_morning_reading_else_the_first_of_the_day() -> None:
    days = by_date(read_welltory(WELLTORY, "1ce1d77659"))
    # 2020-05-04: evening 00:15 (18.686), evening 00:17, morning 09:32 (32.654), morning 10:44 ...
    assert days["2020-05-04"]["hrv_ms"] == "32.654"
    assert days["2020-05-04"]["hrv_method"] == "rmssd"
    # 01bad5a519 on 2020-04-27: day 13:07 (24.492), day 16:35, evening 21:06: no morning
    assert by_date(read_welltory(WELLTORY, "01bad5a519"))["2020-04-27"]["hrv_ms"] == "24.492"


def test_welltory_hrv_for_every_user_matches_a_plain_reading_of_the_csv() -> None:
    readings: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows(WELLTORY / "hrv_measurements_no_rr.csv"):
        readings[row["user_code"]][row["measurement_datetime"][:10]].append(row)
    assert len(readings) == 185
    for user in sorted(readings)[::9]:  # every ninth user: 21 of them
        expected = {}
        for day, day_rows in readings[user].items():
            ordered = sorted(day_rows, key=lambda row: row["measurement_datetime"])
            mornings = [row for row in ordered if row["time_of_day"] == "morning"]
            expected[day] = (mornings or ordered)[0]["rmssd"]
        got = {day: fields["hrv_ms"] for day, fields in by_date(read_welltory(WELLTORY, user)).items()
               if "hrv_ms" in fields}
        assert got == expected, user


def test_welltory_sleep_counts_a_night_written_twice_once() -> None:
    days = by_date(read_welltory(WELLTORY, "a1c2e6b2eb"))
    # 2020-05-27 has four rows, all 30780 s (19:42-04:15, 22:42-07:15, ...): one night of 8.55 h
    assert checked(days["2020-05-27"])["sleep_hours"] == Decimal("8.55")
    # 2020-01-02 has one row of 24840 s = 6.9 h
    assert days["2020-01-02"]["sleep_hours"] == Decimal("6.9")


def test_welltory_steps_match_the_csv_and_empty_values_are_skipped() -> None:
    wearables = [row for row in rows(WELLTORY / "wearables.csv") if row["user_code"] == "0d297d2410"]
    expected = {row["day"]: row["steps_count"] for row in wearables if row["steps_count"]}
    assert (len(expected), len(wearables)) == (157, 170)  # 13 rows without steps
    days = by_date(read_welltory(WELLTORY, "0d297d2410"))
    assert {day: fields["steps"] for day, fields in days.items() if "steps" in fields} == expected


def test_welltory_out_of_range_rmssd_is_passed_on_and_the_import_skips_that_day(tmp_path: Path) -> None:
    days = by_date(read_welltory(WELLTORY, "ec5fda0a7a"))
    assert days["2020-05-06"]["hrv_ms"] == "310.800"
    summary = import_into(tmp_path, read_welltory(WELLTORY, "ec5fda0a7a"), "welltory")
    assert (summary.read, summary.imported) == (3, 2)
    assert summary.skipped == Counter({"invalid hrv_ms (allowed 1 to 300 ms)": 1})


def test_welltory_unknown_user_and_missing_file_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        read_welltory(WELLTORY, "nobody")
    assert caught.value.message == (
        "source-user: nobody is not in hrv_measurements_no_rr.csv, sleep.csv, wearables.csv"
        " (allowed one of 185 ids, e.g. 007b8190cf)"
    )
    with pytest.raises(UsageError, match=r"has no hrv_measurements_no_rr.csv"):
        read_welltory(FITBIT, "x")


# --- Welltory, hand-built files ---------------------------------------------------------------------


def test_welltory_morning_vs_evening_and_naps_by_hand(tmp_path: Path) -> None:
    (tmp_path / "hrv_measurements_no_rr.csv").write_text(
        "user_code,rr_code,measurement_datetime,time_of_day,bpm,sdnn,rmssd\r\n"
        "u1,a,2020-05-01 07:30:00,evening,60,40,70.5\r\n"  # first of the day, not morning
        "u1,b,2020-05-01 21:00:00,morning,60,40,44.25\r\n"  # mislabelled but "morning": kept
        "u1,c,2020-05-01 08:00:00,morning,60,40,50\r\n"  # the earliest morning: kept
        "u1,d,2020-05-02 22:00:00,evening,60,40,33\r\n"
        "u1,e,2020-05-02 06:00:00,night,60,40,\r\n"  # empty rmssd: skipped
        "u2,f,2020-05-02 06:00:00,morning,60,40,99\r\n"
    )
    (tmp_path / "sleep.csv").write_text(
        '"user_code","day","sleep_begin","sleep_end","sleep_duration"\n'
        '"u1","2020-05-02","2020-05-01 23:00:00","2020-05-02 06:00:00","25200.000"\n'  # 7 h
        '"u1","2020-05-02","2020-05-02 00:00:00","2020-05-02 07:00:00","25200.000"\n'  # same night, shifted
        '"u1","2020-05-02","2020-05-02 14:00:00","2020-05-02 14:45:00","2700.000"\n'  # a nap: 0.75 h
    )
    days = by_date(read_welltory(tmp_path, "u1"))
    assert days == {
        "2020-05-01": {"hrv_ms": "50", "hrv_method": "rmssd"},
        "2020-05-02": {"hrv_ms": "33", "hrv_method": "rmssd", "sleep_hours": Decimal("7.75")},
    }


# --- Apple Health, hand-built exports ---------------------------------------------------------------

PHONE = 'sourceName="Ann’s iPhone" sourceVersion="16.1" unit="count"'
WATCH = 'sourceName="Ann’s Apple Watch" sourceVersion="9.1" unit="count"'
SLEEP = 'type="HKCategoryTypeIdentifierSleepAnalysis"'
STEPS = 'type="HKQuantityTypeIdentifierStepCount"'
VALUE = "HKCategoryValueSleepAnalysis"


def stamp(text: str, zone: str = "-0800") -> str:
    return f"2023-03-{text} {zone}"


def steps(source: str, start: str, end: str, value: int, zone: str = "-0800") -> str:
    return (f'<Record {STEPS} {source} creationDate="{stamp(end, zone)}" startDate="{stamp(start, zone)}" '
            f'endDate="{stamp(end, zone)}" value="{value}"/>')


def asleep(source: str, start: str, end: str, value: str) -> str:
    return (f'<Record {SLEEP} sourceName="{source}" startDate="{stamp(start)}" endDate="{stamp(end)}" '
            f'value="{VALUE}{value}"/>')


def quantity(kind: str, unit: str, start: str, value: str) -> str:
    return (f'<Record type="HKQuantityTypeIdentifier{kind}" sourceName="Scale" unit="{unit}" '
            f'startDate="{stamp(start)}" endDate="{stamp(start)}" value="{value}"/>')


HAND_BUILT = "\n".join([
    '<?xml version="1.0" encoding="UTF-8"?>',
    "<!DOCTYPE HealthData [\n<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout)*)>\n]>",
    '<HealthData locale="en_US">',
    '<ExportDate value="2023-03-08 09:00:00 -0800"/>',
    '<Me HKCharacteristicTypeIdentifierDateOfBirth="1990-01-01"/>',
    # Steps on 03-04. 09:00-09:10: phone 1000 vs watch 480 + 500 = 980 for the same minutes -> 1000.
    steps(PHONE, "04 09:00:00", "04 09:10:00", 1000),
    steps(WATCH, "04 09:00:00", "04 09:05:00", 480),
    steps(WATCH, "04 09:05:00", "04 09:10:00", 500),
    # 07:15-07:30: the watch is charging, only the phone counts -> 700.
    steps(PHONE, "04 07:15:00", "04 07:30:00", 700),
    # 18:00-18:20: the phone was left behind, only the watch counts -> 2000.
    steps(WATCH, "04 18:00:00", "04 18:20:00", 2000),
    # 10:50-11:10: phone 600, watch 290 + 310 = 600 for the same walk -> 600 (one device's count;
    # taking the better device hour by hour, 300 + 310 = 610, counted more than either saw).
    steps(PHONE, "04 10:50:00", "04 11:10:00", 600),
    steps(WATCH, "04 10:50:00", "04 11:00:00", 290),
    steps(WATCH, "04 11:00:00", "04 11:10:00", 310),
    # 03-04 total: 1000 + 700 + 2000 + 600 = 4300 (all samples: 5880; best device: 3580).
    # 00:30 at +0100 is 23:30 on 03-04 in UTC, but the day is the local date as written: 03-05.
    steps(PHONE, "05 00:30:00", "05 00:40:00", 123, zone="+0100"),
    # A Correlation's nested records are copies of top-level ones: ignored.
    '<Correlation type="HKCorrelationTypeIdentifierFood" sourceName="App" '
    'startDate="2023-03-05 12:00:00 -0800" endDate="2023-03-05 12:00:00 -0800">',
    steps(PHONE, "05 12:00:00", "05 12:05:00", 5000),
    "</Correlation>",
    # The night ending 03-05: in bed 22:30-07:00 (not counted); watch stages Core 23:00-01:00,
    # Deep 01:00-02:00, Awake 02:00-02:15, REM 02:15-06:30 (7.25 h asleep); a sleep app's
    # overlapping 23:30-06:45. Union: 23:00-06:45 = 7.75 h, not 7.25 + 7.25.
    asleep("Ann’s iPhone", "04 22:30:00", "05 07:00:00", "InBed"),
    asleep("Watch", "04 23:00:00", "05 01:00:00", "AsleepCore"),
    asleep("Watch", "05 01:00:00", "05 02:00:00", "AsleepDeep"),
    asleep("Watch", "05 02:00:00", "05 02:15:00", "Awake"),
    asleep("Watch", "05 02:15:00", "05 06:30:00", "AsleepREM"),
    asleep("AutoSleep", "04 23:30:00", "05 06:45:00", "AsleepUnspecified"),
    # A nap the same day: + 0.5 h -> 03-05 sleeps 8.25 h.
    asleep("Watch", "05 14:00:00", "05 14:30:00", "AsleepCore"),
    # The legacy value on the next night: 6 h for 03-06; 03-07 has only time in bed: no sleep.
    asleep("Old app", "06 00:00:00", "06 06:00:00", "Asleep"),
    asleep("Ann’s iPhone", "06 23:00:00", "07 07:00:00", "InBed"),
    # Weight on 03-05: 21:00 in lb comes first in the file but is the day's last:
    # 176.4 x 0.45359237 = 80.013694068 kg. 81000 g on 03-06 is 81 kg.
    quantity("BodyMass", "lb", "05 21:00:00", "176.4"),
    quantity("BodyMass", "kg", "05 07:00:00", "80.0"),
    quantity("BodyMass", "g", "06 07:00:00", "81000"),
    # HRV on 03-05: the 06:00 reading is the first of the day though written second.
    quantity("HeartRateVariabilitySDNN", "ms", "05 08:00:00", "45.5"),
    quantity("HeartRateVariabilitySDNN", "ms", "05 06:00:00", "38.2"),
    # Other types are ignored, with or without children.
    '<Record type="HKQuantityTypeIdentifierHeartRate" sourceName="Watch" unit="count/min" '
    'startDate="2023-03-08 08:00:00 -0800" endDate="2023-03-08 08:00:00 -0800" value="61">'
    '<MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="0"/></Record>',
    '<ActivitySummary dateComponents="2023-03-05" activeEnergyBurned="512"/>',
    "</HealthData>",
])

EXPECTED_HAND_BUILT: dict[str, dict[str, object]] = {
    "2023-03-04": {"steps": 4300},
    "2023-03-05": {"steps": 123, "sleep_hours": Decimal("8.25"), "weight_kg": Decimal("80.013694068"),
                   "hrv_ms": "38.2", "hrv_method": "sdnn"},
    "2023-03-06": {"sleep_hours": Decimal(6), "weight_kg": Decimal("81")},
}


def test_apple_health_dedups_steps_merges_sleep_and_converts_weight(tmp_path: Path) -> None:
    path = tmp_path / "export.xml"
    path.write_text(HAND_BUILT, encoding="utf-8")
    assert by_date(read_apple_health(path)) == EXPECTED_HAND_BUILT
    assert checked(EXPECTED_HAND_BUILT["2023-03-05"])["weight_kg"] == Decimal("80.01")


def test_apple_health_reads_the_zip_streaming_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    data = HAND_BUILT.encode("utf-8")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("apple_health_export/export_cda.xml", "<ClinicalDocument/>")
        archive.writestr("apple_health_export/export.xml", data)
    calls: list[tuple[int, int]] = []
    records = read_apple_health(path, lambda done, total: calls.append((done, total)))
    assert by_date(records) == EXPECTED_HAND_BUILT
    assert calls[-1] == (len(data), len(data))
    # the unzipped folder works too
    folder = tmp_path / "apple_health_export"
    folder.mkdir()
    (folder / "export.xml").write_bytes(data)
    assert by_date(read_apple_health(folder)) == EXPECTED_HAND_BUILT


def test_apple_health_survives_the_broken_ios16_dtd_and_forbidden_control_characters(tmp_path: Path) -> None:
    # iOS 16 exports end the VisionPrescription ATTLIST without its ">" (expat: "syntax error"),
    # and some apps write U+000B into names, which XML 1.0 forbids.
    dtd = "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!DOCTYPE HealthData [",
        "<!-- HealthKit Export Version: 12 -->",
        "<!ELEMENT HealthData (ExportDate,Me,(Record|VisionPrescription)*)>",
        "<!ATTLIST VisionPrescription",
        "  type             CDATA #REQUIRED",
        "  dateIssued       CDATA #REQUIRED",
        "<!ELEMENT Attachment EMPTY>",
        "]>",
    ])
    body = HAND_BUILT.split("]>\n", 1)[1].replace("Ann’s iPhone", "Ann’s\x0biPhone")
    path = tmp_path / "export.xml"
    path.write_text(dtd + "\n" + body, encoding="utf-8")
    with pytest.raises(ElementTree.ParseError):
        ElementTree.parse(path)  # what a plain parse makes of it
    assert by_date(read_apple_health(path)) == EXPECTED_HAND_BUILT


def test_apple_health_memory_does_not_grow_with_the_number_of_records(tmp_path: Path) -> None:
    """60,000 heart-rate records with metadata (about 15 MB) on 3 days: a parse that kept the
    elements would hold tens of megabytes; a streaming one holds the parser's buffers."""
    path = tmp_path / "export.xml"
    record = ('<Record type="HKQuantityTypeIdentifierHeartRate" sourceName="Watch" unit="count/min" '
              'startDate="2023-03-0{d} 08:00:00 -0800" endDate="2023-03-0{d} 08:00:00 -0800" value="61">'
              '<MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="0"/></Record>\n')
    with path.open("w", encoding="utf-8") as out:
        out.write('<HealthData locale="en_US">\n')
        for day in (1, 2, 3):
            out.write(record.format(d=day) * 20_000)
            out.write(steps(PHONE, f"0{day} 09:00:00", f"0{day} 09:10:00", 100 * day) + "\n")
        out.write("</HealthData>\n")
    tracemalloc.start()
    try:
        days = by_date(read_apple_health(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert days == {"2023-03-01": {"steps": 100}, "2023-03-02": {"steps": 200}, "2023-03-03": {"steps": 300}}
    assert path.stat().st_size > 14_000_000
    assert peak < 2_000_000


def test_apple_health_real_samples_parse() -> None:
    tdda = APPLE / "tdda_export6s3sample.xml"
    values = [int(r.get("value", "")) for r in ElementTree.parse(tdda).getroot().iter("Record")
              if r.get("type") == "HKQuantityTypeIdentifierStepCount"]
    assert len(values) == 10  # one source ("Health"), all on 2014-09-13 at +0100
    assert by_date(read_apple_health(tdda)) == {"2014-09-13": {"steps": sum(values)}}
    assert sum(values) == 2517
    # the dogsheep exports hold BodyMassIndex and HeartRate records only: no day to import
    assert list(read_apple_health(APPLE / "dogsheep_healthkit_to_sqlite_export.xml")) == []
    assert list(read_apple_health(APPLE / "dogsheep_zip_export.xml")) == []


def test_apple_health_import_into_the_store(tmp_path: Path) -> None:
    path = tmp_path / "export.xml"
    path.write_text(HAND_BUILT, encoding="utf-8")
    summary = import_into(tmp_path / "home", read_apple_health(path), "apple-health")
    assert (summary.read, summary.imported, summary.skipped) == (3, 3, Counter())


def test_apple_health_bad_input_is_a_one_line_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^file: .*missing.xml does not exist \(allowed an Apple Health"):
        read_apple_health(tmp_path / "missing.xml")
    not_xml = tmp_path / "notes.xml"
    not_xml.write_text("<HealthData><Record></HealthData>")
    with pytest.raises(UsageError, match=r"^file: notes.xml is not well-formed XML: mismatched tag: line 1"):
        read_apple_health(not_xml)
    other = tmp_path / "other.xml"
    other.write_text("<html><body/></html>")
    with pytest.raises(UsageError, match=r"is not an Apple Health export \(its root is <html>\)"):
        read_apple_health(other)
    empty_zip = tmp_path / "export.zip"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UsageError) as caught:
        read_apple_health(empty_zip)
    assert "is a zip without apple_health_export/export.xml" in caught.value.message
    assert "\n" not in caught.value.message
