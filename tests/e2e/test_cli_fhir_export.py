"""`pulse export --format fhir`: a FHIR R4 Bundle validated with fhir.resources, its codes, units, values
and provenance checked against the CSV and JSON exports of the same store (not against the FHIR code)."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

pytestmark = pytest.mark.e2e

DATA = Path(__file__).resolve().parents[1] / "data"
PULSE = Path(sys.executable).parent / "pulse"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# metric -> (code system, code, UCUM unit) as docs/fhir.md documents them
EXPECTED = {
    "steps": (LOINC, "41950-7", "/d"),
    "sleep_hours": (LOINC, "93832-4", "h"),
    "weight_kg": (LOINC, "29463-7", "kg"),
    "sdnn": (LOINC, "80404-7", "ms"),
    "rmssd": ("urn:ngx-pulse:fhir:metric", "hrv-rmssd", "ms"),
}


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_the_fhir_export_is_a_valid_r4_bundle_with_loinc_ucum_and_provenance(
    pulse: Callable[..., Any], tmp_path: Path
) -> None:
    assert pulse("import", "fitbit", str(DATA / "fitbit"), "--source-user", "1503960366").returncode == 0
    assert pulse("log", "--date", "2016-04-14", "--weight", "71.4", "--hrv", "48", "--hrv-method", "sdnn",
                 "--note", "after the race").returncode == 0
    assert pulse("log", "--date", "2016-04-15", "--hrv", "62.5", "--sleep", "7.25").returncode == 0  # RMSSD
    assert pulse("delete", "2016-04-16", "--yes").returncode == 0
    for fmt in ("fhir", "csv", "json"):
        done = pulse("export", "--format", fmt, "--all", "-o", str(tmp_path / f"out.{fmt}"))
        assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "out.fhir").read_text())

    Bundle.model_validate(document)  # the library's R4 (R4B) structure, types and cardinalities
    assert document["type"] == "collection"
    (patient,) = resources(document, "Patient")
    Patient.model_validate(patient)
    devices = {d["id"]: d for d in resources(document, "Device")}
    assert [d["deviceName"][0]["name"] for d in devices.values()] == ["Fitbit"]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in document["entry"])

    # What must be there, from the CSV export (values) and the JSON export (sources, HRV method).
    with (tmp_path / "out.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    sources = {e["date"]: e["sources"] for e in json.loads((tmp_path / "out.json").read_text())["entries"]}
    expected = {}
    for row in rows:
        for metric in ("steps", "sleep_hours", "weight_kg", "hrv_ms"):
            if row[metric]:
                key = row["hrv_method"] if metric == "hrv_ms" else metric
                expected[(row["date"], key)] = (Decimal(row[metric]), sources[row["date"]][metric], row["note"])
    assert "2016-04-16" not in {d for d, _ in expected} and len(expected) > 40

    found = {}
    for obs in resources(document, "Observation"):
        Observation.model_validate(obs)
        coding = obs["code"]["coding"][0]
        key = next(k for k, (system, code, _) in EXPECTED.items()
                   if (system, code) == (coding["system"], coding["code"]))
        quantity = obs["valueQuantity"]
        assert (quantity["system"], quantity["code"]) == (UCUM, EXPECTED[key][2])
        assert obs["status"] == "final" and obs["subject"] == {"reference": f"urn:uuid:{patient['id']}"}
        tag = obs["meta"]["tag"][0]
        if tag["code"] == "manual":
            assert obs["performer"] == [obs["subject"]] and "device" not in obs
        else:
            assert tag["code"] == "fitbit" and devices[obs["device"]["reference"].removeprefix("urn:uuid:")]
        note = obs["note"][0]["text"] if "note" in obs else ""
        found[(obs["effectiveDateTime"], key)] = (Decimal(str(quantity["value"])), tag["code"], note)
    assert found == expected
    assert found[("2016-04-14", "weight_kg")] == (Decimal("71.4"), "manual", "after the race")
    assert found[("2016-04-15", "rmssd")][0] == Decimal("62.5")
    weight = next(o for o in resources(document, "Observation") if o["code"]["coding"][0]["code"] == "29463-7")
    assert weight["category"][0]["coding"][0]["code"] == "vital-signs"


def test_a_device_signed_in_names_the_patient_by_server_and_username(
    pulse: Callable[..., Any], tmp_path: Path
) -> None:
    assert pulse("log", "--date", "2016-04-14", "--steps", "100").returncode == 0
    with sqlite3.connect(pulse.home / "pulse.db") as conn:  # what `pulse login` records in the store
        conn.execute("INSERT INTO meta (key, value) VALUES ('account_username', 'ana'),"
                     " ('account_server', 'https://pulse.example.org')")
    first = json.loads(pulse("export", "--format", "fhir", "--all").stdout)
    second = json.loads(pulse("export", "--format", "fhir", "--all").stdout)
    (patient,) = resources(first, "Patient")
    assert patient["identifier"] == [{"system": "https://pulse.example.org", "value": "ana"}]
    assert [e["fullUrl"] for e in first["entry"]] == [e["fullUrl"] for e in second["entry"]], "stable ids"
    bad = pulse("export", "--format", "xml")
    assert bad.returncode == 2 and "csv, json or fhir" in bad.stderr and bad.stderr.count("\n") == 1


def test_pulse_log_and_help_load_neither_fhir_nor_verification_code(tmp_path: Path) -> None:
    """Start-up stays as it was: the FHIR builder, the checksums and the verifier load only when used."""
    code = (
        "import sys\n"
        "from pulse_cli.main import app\n"
        "for argv in (['--help'], ['log', '--steps', '8000', '--json']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m in ('pulse_cli.fhir', 'sync.checksums', 'pulse_cli.agent.verify',"
        " 'httpx')))\n"
    )
    env = {"PULSE_HOME": str(tmp_path / "home"), "PATH": str(PULSE.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
