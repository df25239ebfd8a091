"""Entries as a FHIR R4 Bundle of Observations, for a clinician's system (docs/fhir.md).

Plain JSON built here: no FHIR library is needed at run time (the tests validate the output with
fhir.resources). One `collection` Bundle holds, per person, a Patient, a Device per tracker or app
their values came from, and an Observation per metric and day: LOINC-coded where LOINC has a term,
UCUM units, the entry's date as the effective date, and the value's source as provenance (a Device
for an import, the Patient as performer for a value set by hand, and a tag naming the source).

Identifiers are name-based UUIDs (uuid5), so exporting the same data twice gives the same resource ids
and a receiving system can recognise what it already has.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pulse_core.entry import Entry
from pulse_core.rules import MANUAL

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# The project's own code systems (a URN: the project publishes no web domain of its own).
METRIC_SYSTEM = "urn:ngx-pulse:fhir:metric"
SOURCE_SYSTEM = "urn:ngx-pulse:fhir:source"
NAMESPACE = uuid.UUID("6f1d3c52-4c0b-4b57-9a38-1d2f5b0e7a41")  # fixed: stable resource ids across exports

SOURCES = {
    MANUAL: "Entered by hand",
    "fitbit": "Imported from Fitbit",
    "welltory": "Imported from Welltory",
    "apple-health": "Imported from Apple Health",
}
DEVICE_NAMES = {"fitbit": "Fitbit", "welltory": "Welltory", "apple-health": "Apple Health"}


@dataclass(frozen=True)
class Metric:
    field: str
    text: str
    coding: Callable[[Entry], dict[str, str]]
    unit: str
    ucum: str
    category: tuple[str, str] | None  # (code, display) in the observation-category code system


def _loinc(code: str, display: str) -> Callable[[Entry], dict[str, str]]:
    return lambda _entry: {"system": LOINC, "code": code, "display": display}


def _hrv(entry: Entry) -> dict[str, str]:
    """SDNN has a LOINC term; RMSSD has none that we could find, so it is a code of the project's own."""
    if entry.hrv_method == "sdnn":
        return {"system": LOINC, "code": "80404-7",
                "display": "R-R interval.standard deviation (Heart rate variability)"}
    return {"system": METRIC_SYSTEM, "code": "hrv-rmssd",
            "display": "Heart rate variability, RMSSD (root mean square of successive R-R interval differences)"}


METRICS = (
    # The HL7 Physical Activity IG's daily steps: LOINC 41950-7, UCUM "/d", category activity.
    Metric("steps", "Steps", _loinc("41950-7", "Number of steps in 24 hour Measured"), "steps/day", "/d",
           ("activity", "Activity")),
    Metric("sleep_hours", "Sleep duration", _loinc("93832-4", "Sleep duration"), "h", "h", None),
    # The FHIR vital signs profile's body weight: LOINC 29463-7, UCUM kg, category vital-signs.
    Metric("weight_kg", "Body weight", _loinc("29463-7", "Body weight"), "kg", "kg",
           ("vital-signs", "Vital Signs")),
    Metric("hrv_ms", "Heart rate variability", _hrv, "ms", "ms", None),
)


@dataclass(frozen=True)
class Person:
    """Whose entries: their username on the sync server `server` (None on a device never signed in)."""

    username: str
    server: str | None
    entries: Sequence[Entry]


def bundle(people: Sequence[Person], generated_at: dt.datetime) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for person in people:
        resources.extend(_person_resources(person))
    stamp = generated_at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": stamp},
        "type": "collection",
        "timestamp": stamp,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _person_resources(person: Person) -> list[dict[str, Any]]:
    patient_id = _id("patient", person.server or "", person.username)
    patient: dict[str, Any] = {"resourceType": "Patient", "id": patient_id}
    if person.server:
        patient["identifier"] = [{"system": person.server, "value": person.username}]
    devices: dict[str, dict[str, Any]] = {}
    observations = []
    for entry in person.entries:
        if entry.deleted:
            continue
        for metric in METRICS:
            if entry.value(metric.field) is None:
                continue
            source = entry.source(metric.field)
            if source in DEVICE_NAMES and source not in devices:
                devices[source] = _device(patient_id, source)
            observations.append(_observation(patient_id, entry, metric, source, devices.get(source or "")))
    return [patient, *devices.values(), *observations]


def _device(patient_id: str, source: str) -> dict[str, Any]:
    return {"resourceType": "Device", "id": _id("device", patient_id, source),
            "deviceName": [{"name": DEVICE_NAMES[source], "type": "user-friendly-name"}],
            "patient": {"reference": f"urn:uuid:{patient_id}"}}


def _observation(patient_id: str, entry: Entry, metric: Metric, source: str | None,
                 device: dict[str, Any] | None) -> dict[str, Any]:
    day = entry.date.isoformat()
    subject = {"reference": f"urn:uuid:{patient_id}"}
    resource: dict[str, Any] = {"resourceType": "Observation", "id": _id("observation", patient_id, day, metric.field)}
    if source in SOURCES:
        resource["meta"] = {"tag": [{"system": SOURCE_SYSTEM, "code": source, "display": SOURCES[source]}]}
    resource["status"] = "final"
    if metric.category:
        code, display = metric.category
        resource["category"] = [{"coding": [{"system": CATEGORY, "code": code, "display": display}]}]
    label = metric.text + (f" ({entry.hrv_method.upper()})" if metric.field == "hrv_ms" and entry.hrv_method else "")
    resource["code"] = {"coding": [metric.coding(entry)], "text": label}
    resource["subject"] = subject
    resource["effectiveDateTime"] = day
    if source == MANUAL:  # the person measured it and typed it in
        resource["performer"] = [subject]
    if device is not None:
        resource["device"] = {"reference": f"urn:uuid:{device['id']}", "display": DEVICE_NAMES[source or ""]}
    resource["valueQuantity"] = {"value": _number(entry.value(metric.field)), "unit": metric.unit,
                                 "system": UCUM, "code": metric.ucum}
    if entry.note:
        resource["note"] = [{"text": entry.note}]
    return resource


def _number(value: object) -> int | float:
    if isinstance(value, Decimal):  # kept to 0.01: a float prints back the same digits
        return float(value)
    assert isinstance(value, int)
    return value


def _id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))
