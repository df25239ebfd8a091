"""The installed `pulse` imports the real Fitbit, Welltory and Apple Health samples with the right totals.

Expected figures are computed here straight from the raw CSV and XML with the csv module and plain
arithmetic, following the import rules in docs/cli.md, not with the importers under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.e2e
CENT = Decimal("0.01")


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def us_date(text: str) -> str:
    month, day, year = text.split(" ")[0].split("/")
    return dt.date(int(year), int(month), int(day)).isoformat()


def expected_fitbit() -> dict[str, dict[str, Any]]:
    """Per user: days, and sums of steps, sleep hours and weight, by the documented rules."""
    days: dict[str, dict[str, dict[str, Decimal]]] = defaultdict(lambda: defaultdict(dict))
    with (DATA / "fitbit" / "dailyActivity_merged.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            active = sum(int(row[k]) for k in ("VeryActiveMinutes", "FairlyActiveMinutes", "LightlyActiveMinutes"))
            not_worn = row["TotalSteps"] == "0" and (row["SedentaryMinutes"] == "1440" or active == 0)
            if not not_worn:
                days[row["Id"]][us_date(row["ActivityDate"])]["steps"] = Decimal(row["TotalSteps"])
    seen = set()
    with (DATA / "fitbit" / "sleepDay_merged.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            key = tuple(row.values())
            if key in seen:  # exact duplicate rows count once
                continue
            seen.add(key)
            day = days[row["Id"]][us_date(row["SleepDay"])]
            day["sleep"] = max(day.get("sleep", Decimal(0)), cents(Decimal(row["TotalMinutesAsleep"]) / 60))
    last_weight: dict[tuple[str, str], tuple[str, str, Decimal]] = {}
    with (DATA / "fitbit" / "weightLogInfo_merged.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            stamp = dt.datetime.strptime(row["Date"], "%m/%d/%Y %I:%M:%S %p").isoformat()
            key = (row["Id"], us_date(row["Date"]))
            candidate = (stamp, row["LogId"], cents(Decimal(row["WeightKg"])))
            if key not in last_weight or candidate[:2] > last_weight[key][:2]:
                last_weight[key] = candidate
    for (user, day), (_, _, kg) in last_weight.items():
        days[user][day]["weight"] = kg
    out = {}
    for user, by_day in days.items():
        present = {d: v for d, v in by_day.items() if v}
        out[user] = {
            "days": len(present),
            "steps": sum((v.get("steps", Decimal(0)) for v in present.values()), Decimal(0)),
            "sleep": sum((v.get("sleep", Decimal(0)) for v in present.values()), Decimal(0)),
            "weight": sum((v.get("weight", Decimal(0)) for v in present.values()), Decimal(0)),
        }
    return out


def totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    def total(name: str) -> Decimal:
        return sum((Decimal(str(e[name])) for e in entries if e[name] is not None), Decimal(0))

    return {"days": len(entries), "steps": total("steps"), "sleep": total("sleep_hours"),
            "weight": total("weight_kg")}


FITBIT = expected_fitbit()


def test_every_fitbit_user_imports_with_the_right_days_and_totals(pulse: Any) -> None:
    assert len(FITBIT) == 33
    for user, expected in sorted(FITBIT.items()):
        home = pulse.home.parent / f"fitbit-{user}"
        done = pulse("--home", str(home), "import", "fitbit", str(DATA / "fitbit"), "--source-user", user, "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["imported"] == expected["days"], user
        exported = json.loads(pulse("--home", str(home), "export", "--format", "json", "--all").stdout)
        assert totals(exported["entries"]) == expected, user


def test_reimporting_changes_nothing_and_keeps_values_set_by_hand(pulse: Any) -> None:
    user = "1503960366"
    args = ("import", "fitbit", str(DATA / "fitbit"), "--source-user", user, "--json")
    first = json.loads(pulse(*args).stdout)
    assert pulse("log", "--date", "2016-04-12", "--steps", "1234").returncode == 0
    again = json.loads(pulse(*args).stdout)
    assert again["imported"] == 0 and again["updated"] == 0
    assert again["unchanged"] == first["imported"]  # the hand-set day keeps its other imported values
    assert again["skipped"] == {} and again["kept"] == {"steps": 1}
    day = pulse.json("show", "2016-04-12")["entry"]
    assert day["steps"] == 1234 and day["sources"]["steps"] == "manual"
    assert day["sources"]["sleep_hours"] == "fitbit"


FITBIT_ARGS = ("import", "fitbit", str(DATA / "fitbit"), "--source-user", "1503960366")
GONE = "2016-04-20"  # a day of that user with steps and sleep


def adds_up(summary: dict[str, Any]) -> bool:
    parts = summary["imported"] + summary["updated"] + summary["unchanged"] + sum(summary["skipped"].values())
    return bool(summary["days_read"] == parts)


def test_a_deleted_day_is_skipped_with_its_reason_and_restore_deleted_brings_it_back(pulse: Any) -> None:
    first = json.loads(pulse(*FITBIT_ARGS, "--json").stdout)
    before = pulse.json("show", GONE)["entry"]
    assert before["steps"] is not None and before["sleep_hours"] is not None
    assert pulse("delete", GONE, "--yes").returncode == 0

    skipped = pulse(*FITBIT_ARGS)
    assert skipped.returncode == 0, skipped.stderr
    read = first["days_read"]
    assert f"{read} days read: 0 imported, 0 updated, {read - 1} unchanged, 1 skipped" in skipped.stdout
    assert "skipped 1: deleted by hand (bring it back with --restore-deleted)" in skipped.stdout
    assert pulse("show", GONE).returncode == 1  # still deleted

    restored = pulse(*FITBIT_ARGS, "--restore-deleted", "--json")
    assert restored.returncode == 0, restored.stderr
    summary = json.loads(restored.stdout)
    assert (summary["imported"], summary["restored"], summary["skipped"]) == (1, 1, {})
    assert adds_up(summary)
    # The same values and score again; brought back by hand, so they count as set by hand.
    again = pulse.json("show", GONE)["entry"]
    manual = {name: (None if source is None else "manual") for name, source in before["sources"].items()}
    assert again == {**before, "sources": manual}
    with sqlite3.connect(pulse.home / "pulse.db") as conn:
        last = conn.execute("SELECT op, source, status FROM outbox WHERE date = ? ORDER BY seq DESC LIMIT 1",
                            (GONE,)).fetchone()
    assert last == ("set", "manual", "pending")  # an ordinary write, waiting to sync


def test_a_day_brought_back_by_a_note_keeps_its_emptied_fields_until_restore_deleted(pulse: Any) -> None:
    pulse(*FITBIT_ARGS)
    before = pulse.json("show", GONE)["entry"]
    assert pulse("delete", GONE, "--yes").returncode == 0
    assert pulse("log", "--date", GONE, "--note", "back").returncode == 0
    noted = pulse.json("show", GONE)["entry"]
    assert noted["sources"] == {"sleep_hours": None, "hrv_ms": None, "steps": None, "weight_kg": None,
                                "note": "manual"}  # an unset field has no source
    done = pulse(*FITBIT_ARGS)
    assert done.returncode == 0, done.stderr
    assert "set by hand" not in done.stdout, "nothing set by hand is kept: the fields are empty"
    assert "left 2 fields empty that you deleted or cleared by hand: sleep_hours 1, steps 1" in done.stdout
    assert pulse.json("show", GONE)["entry"] == noted
    filled = pulse(*FITBIT_ARGS, "--restore-deleted")
    assert ", 1 updated," in filled.stdout, filled.stdout
    after = pulse.json("show", GONE)["entry"]
    assert (after["steps"], after["sleep_hours"], after["note"]) == (before["steps"], before["sleep_hours"], "back")


def test_the_import_summary_adds_up_on_every_run(pulse: Any) -> None:
    pulse(*FITBIT_ARGS)
    assert pulse("delete", GONE, "--yes").returncode == 0
    assert pulse("log", "--date", "2016-04-12", "--steps", "1234", "--sleep", "1").returncode == 0
    assert pulse("log", "--date", "2016-04-13", "--clear", "sleep_hours").returncode == 0
    summaries = []
    for extra in ((), ("--restore-deleted",), ()):
        summaries.append(json.loads(pulse(*FITBIT_ARGS, *extra, "--json").stdout))
        assert adds_up(summaries[-1]), summaries[-1]
    assert [s["kept"] for s in summaries] == [{"sleep_hours": 1, "steps": 1}] * 3
    # 2016-04-13's sleep, cleared by hand, is left empty until --restore-deleted fills it
    assert [s["updated"] for s in summaries] == [0, 1, 0]
    assert [s["left_empty"] for s in summaries] == [{"sleep_hours": 1}, {}, {}]
    assert [s["restored"] for s in summaries] == [0, 1, 0]


def test_an_unknown_fitbit_user_is_one_clear_line(pulse: Any) -> None:
    done = pulse("import", "fitbit", str(DATA / "fitbit"), "--source-user", "42")
    assert done.returncode == 2
    assert "source-user" in done.stderr and "42" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def expected_welltory(code: str) -> dict[str, Any]:
    hrv: dict[str, tuple[int, str, Decimal]] = {}
    with (DATA / "welltory" / "hrv_measurements_no_rr.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["user_code"] != code or not row["rmssd"]:
                continue
            day = row["measurement_datetime"][:10]
            rank = (0 if row["time_of_day"] == "morning" else 1, row["measurement_datetime"])
            value = Decimal(row["rmssd"])
            if day not in hrv or rank < hrv[day][:2]:
                hrv[day] = (*rank, value)  # type: ignore[assignment]
    steps = {}
    with (DATA / "welltory" / "wearables.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["user_code"] == code and row["steps_count"]:
                steps[row["day"]] = Decimal(row["steps_count"])
    valid_hrv = {d: cents(v) for d, (_, _, v) in hrv.items() if 1 <= v <= 300}
    return {"hrv_days": len(valid_hrv), "hrv_sum": sum(valid_hrv.values(), Decimal(0)),
            "steps_sum": sum(steps.values(), Decimal(0)), "steps_days": len(steps)}


@pytest.mark.parametrize("code", ["6be5033971", "c174f32d88", "0d297d2410"])
def test_welltory_users_import_morning_rmssd_and_steps(pulse: Any, code: str) -> None:
    expected = expected_welltory(code)
    home = pulse.home.parent / f"welltory-{code}"
    done = pulse("--home", str(home), "import", "welltory", str(DATA / "welltory"), "--source-user", code)
    assert done.returncode == 0, done.stderr
    entries = json.loads(pulse("--home", str(home), "export", "--format", "json", "--all").stdout)["entries"]
    with_hrv = [e for e in entries if e["hrv_ms"] is not None]
    assert len(with_hrv) == expected["hrv_days"]
    assert {e["hrv_method"] for e in with_hrv} <= {"rmssd"}
    assert sum((Decimal(str(e["hrv_ms"])) for e in with_hrv), Decimal(0)) == expected["hrv_sum"]
    with_steps = [e for e in entries if e["steps"] is not None]
    assert len(with_steps) == expected["steps_days"]
    assert sum(e["steps"] for e in with_steps) == expected["steps_sum"]


def test_apple_health_sample_imports_its_one_day_of_steps(pulse: Any) -> None:
    done = pulse("import", "apple-health", str(DATA / "apple_health" / "tdda_export6s3sample.xml"), "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(pulse("export", "--format", "json", "--all").stdout)["entries"]
    # The sample holds 10 StepCount records from one iPhone on 2014-09-13.
    import xml.etree.ElementTree as ET

    root = ET.parse(DATA / "apple_health" / "tdda_export6s3sample.xml").getroot()
    steps = sum(int(r.get("value", "0")) for r in root.iter("Record")
                if r.get("type") == "HKQuantityTypeIdentifierStepCount")
    assert [(e["date"], e["steps"]) for e in entries] == [("2014-09-13", steps)]


def test_apple_health_export_dedupes_devices_counts_asleep_and_converts_pounds(pulse: Any, tmp_path: Path) -> None:
    export = tmp_path / "export.xml"
    export.write_text("""<?xml version="1.0" encoding="UTF-8"?>
<HealthData locale="en_US">
 <ExportDate value="2026-11-20 08:00:00 +0100"/>
 <Record type="HKQuantityTypeIdentifierStepCount" sourceName="iPhone" unit="count" value="3000"
   startDate="2026-11-18 09:00:00 +0100" endDate="2026-11-18 09:30:00 +0100"/>
 <Record type="HKQuantityTypeIdentifierStepCount" sourceName="Watch" unit="count" value="3200"
   startDate="2026-11-18 09:00:00 +0100" endDate="2026-11-18 09:30:00 +0100"/>
 <Record type="HKCategoryTypeIdentifierSleepAnalysis" sourceName="Watch" value="HKCategoryValueSleepAnalysisInBed"
   startDate="2026-11-18 22:30:00 +0100" endDate="2026-11-19 07:00:00 +0100"/>
 <Record type="HKCategoryTypeIdentifierSleepAnalysis" sourceName="Watch" value="HKCategoryValueSleepAnalysisAsleepCore"
   startDate="2026-11-18 23:00:00 +0100" endDate="2026-11-19 06:30:00 +0100"/>
 <Record type="HKQuantityTypeIdentifierBodyMass" sourceName="Scale" unit="lb" value="160"
   startDate="2026-11-19 07:10:00 +0100" endDate="2026-11-19 07:10:00 +0100"/>
</HealthData>
""")
    assert pulse("import", "apple-health", str(export)).returncode == 0
    entries = {e["date"]: e for e in json.loads(pulse("export", "--format", "json", "--all").stdout)["entries"]}
    assert entries["2026-11-18"]["steps"] == 3200  # the same walk counted by two devices, once
    assert entries["2026-11-19"]["sleep_hours"] == 7.5  # asleep 23:00-06:30, on the day of waking
    assert entries["2026-11-19"]["weight_kg"] == float(cents(Decimal(160) * Decimal("0.45359237")))  # 72.57
