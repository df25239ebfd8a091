"""A day's entry for one user: the unit of data that is validated, scored, stored and synced."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# The fields that merge independently. `hrv_method` travels with `hrv_ms`: one value for merging.
MERGE_FIELDS = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note")
METRICS = ("sleep_hours", "hrv_ms", "steps", "weight_kg")
DELETED = "deleted"

FieldValue = Decimal | int | str | None


@dataclass
class Entry:
    user: str
    date: dt.date
    sleep_hours: Decimal | None = None
    hrv_ms: Decimal | None = None
    hrv_method: str | None = None
    steps: int | None = None
    weight_kg: Decimal | None = None
    note: str | None = None
    score: int | None = None
    score_version: int | None = None
    deleted: bool = False
    # Per merge field (and "deleted"): the HLC stamp of its value and where the value came from.
    stamps: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> FieldValue:
        return getattr(self, name)  # type: ignore[no-any-return]

    def source(self, name: str) -> str | None:
        """Where the field's value came from; None when it is unset (the sync merge keeps the source of
        the write that emptied it, for ranking writes: that is not where a value came from)."""
        return None if self.value(name) is None else self.sources.get(name)

    def is_empty(self) -> bool:
        return all(self.value(name) is None for name in MERGE_FIELDS)

    def as_json(self) -> dict[str, Any]:
        """The documented JSON form: every field present, an unset one is null (never zero)."""
        return {
            "date": self.date.isoformat(),
            "sleep_hours": decimal_json(self.sleep_hours),
            "hrv_ms": decimal_json(self.hrv_ms),
            "hrv_method": self.hrv_method,
            "steps": self.steps,
            "weight_kg": decimal_json(self.weight_kg),
            "note": self.note,
            "score": self.score,
            "score_version": self.score_version,
            "deleted": self.deleted,
            "sources": {name: self.source(name) for name in MERGE_FIELDS},
        }


def decimal_json(value: Decimal | None) -> float | None:
    """Values are kept to 0.01, so a float prints back exactly the same digits."""
    return None if value is None else float(value)
