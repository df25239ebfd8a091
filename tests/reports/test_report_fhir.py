"""`pulse report --format fhir` on the demo coach's device: one Bundle, a Patient per athlete, every value of
the range as an Observation, checked with fhir.resources and against the raw CSV files (raw_figures.py)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from raw_figures import DATA, fitbit_days, welltory_days
from report_support import Pulse

CODES = {"41950-7": "steps", "93832-4": "sleep_hours", "29463-7": "weight_kg", "80404-7": "hrv_ms",
         "hrv-rmssd": "hrv_ms"}
FIRST, LAST = dt.date(2016, 4, 12), dt.date(2016, 5, 12)


def report(device: Pulse, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "report.fhir.json"
    device.ok("report", *args, "--format", "fhir", "-o", str(out))
    document: dict[str, Any] = json.loads(out.read_text())
    Bundle.model_validate(document)
    return document


def observations_by_athlete(document: dict[str, Any]) -> dict[str, dict[tuple[str, str], Decimal]]:
    """athlete -> (date, metric) -> value, the athlete named by their Patient's identifier."""
    patients = {f"urn:uuid:{e['resource']['id']}": e["resource"]["identifier"][0]["value"]
                for e in document["entry"] if e["resource"]["resourceType"] == "Patient"}
    out: dict[str, dict[tuple[str, str], Decimal]] = {name: {} for name in patients.values()}
    for entry in document["entry"]:
        obs = entry["resource"]
        if obs["resourceType"] != "Observation":
            continue
        metric = CODES[obs["code"]["coding"][0]["code"]]
        value = Decimal(str(obs["valueQuantity"]["value"]))
        out[patients[obs["subject"]["reference"]]][(obs["effectiveDateTime"], metric)] = value
    return out


def raw(days: dict[dt.date, dict[str, Decimal]], first: dt.date, last: dt.date) -> dict[tuple[str, str], Decimal]:
    return {(d.isoformat(), m): v for d, day in days.items() if first <= d <= last
            for m, v in day.items() if m != "score"}


def test_a_team_report_in_fhir_has_a_patient_per_athlete_and_the_raw_values(
    coach_device: Pulse, tmp_path: Path
) -> None:
    document = report(coach_device, tmp_path, "--athlete", "fitbit-16*", "--athlete", "fitbit-1503960366",
                      "--from", FIRST.isoformat(), "--to", LAST.isoformat())
    found = observations_by_athlete(document)
    with (DATA / "fitbit" / "dailyActivity_merged.csv").open(newline="") as f:
        ids = {row["Id"] for row in csv.DictReader(f) if row["Id"].startswith("16")}
    assert set(found) == {f"fitbit-{i}" for i in ids | {"1503960366"}} and len(ids) >= 2
    for athlete, values in found.items():
        assert values == raw(fitbit_days(athlete.removeprefix("fitbit-")), FIRST, LAST), athlete
    patient = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["identifier"][0]["system"].startswith("http://127.0.0.1:")  # the coach's sync server
    tags = {e["resource"]["meta"]["tag"][0]["code"] for e in document["entry"]
            if e["resource"]["resourceType"] == "Observation"}
    assert tags == {"fitbit"}


def test_welltory_hrv_is_rmssd_under_the_projects_own_code(coach_device: Pulse, tmp_path: Path) -> None:
    code, last = "01bad5a519", dt.date(2020, 4, 22)
    first = last - dt.timedelta(days=27)
    document = report(coach_device, tmp_path, "--athlete", f"welltory-{code}", "--from", first.isoformat(),
                      "--to", last.isoformat())
    hrv = {k: v for k, v in observations_by_athlete(document)[f"welltory-{code}"].items() if k[1] == "hrv_ms"}
    expected = {k: v for k, v in raw(welltory_days(code), first, last).items() if k[1] == "hrv_ms"}
    assert hrv == expected and hrv
    codings = {e["resource"]["code"]["coding"][0]["system"] + "#" + e["resource"]["code"]["coding"][0]["code"]
               for e in document["entry"] if e["resource"]["resourceType"] == "Observation"
               and e["resource"]["valueQuantity"]["code"] == "ms"}
    assert codings == {"urn:ngx-pulse:fhir:metric#hrv-rmssd"}
    devices = [e["resource"]["deviceName"][0]["name"] for e in document["entry"]
               if e["resource"]["resourceType"] == "Device"]
    assert devices == ["Welltory"]
