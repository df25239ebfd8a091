"""Writing entries as CSV or JSON, with the same field names as everywhere else, or as FHIR (pulse_cli.fhir)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from typing import IO

from pulse_core.entry import Entry

CSV_COLUMNS = (
    "date", "sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "score_version",
)
EXPORT_VERSION = 1


def write_export(entries: Sequence[Entry], fmt: str, out: IO[str], username: str = "me",
                 server: str | None = None) -> None:
    """`username` and `server` name the person in a FHIR export (its Patient's identifier)."""
    if fmt == "fhir":
        from pulse_cli.fhir import Person, bundle

        document = bundle([Person(username, server, entries)], dt.datetime.now(dt.UTC))
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt == "json":
        document = {"format": "ngx-pulse-export", "version": EXPORT_VERSION,
                    "entries": [e.as_json() for e in entries]}
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        values = entry.as_json()
        writer.writerow(["" if values[c] is None else _csv_text(entry, c) for c in CSV_COLUMNS])


def _csv_text(entry: Entry, column: str) -> str:
    value = getattr(entry, column)
    return value.isoformat() if column == "date" else str(value)
