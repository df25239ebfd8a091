"""Warnings: values that are accepted but implausible, shown to the user beside the entry."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pulse_core.entry import Entry, FieldValue
from pulse_core.rules import MESSAGES, WARNINGS, WEIGHT_CHANGE_WARN_PCT, WEIGHT_CHANGE_WINDOW_DAYS


@dataclass(frozen=True)
class FieldWarning:
    code: str
    field: str
    value: Any
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "value": self.value, "message": self.message}


def _plain(value: Decimal | int) -> str:
    return format(Decimal(value).normalize(), "f")


def field_warnings(
    fields: dict[str, FieldValue], previous_weight: Entry | None, day: dt.date
) -> list[FieldWarning]:
    """Warnings for the values being set now on `day` (not for values already stored).

    `previous_weight` is the latest earlier entry with a weight; the change is measured against it
    only when it is from the WEIGHT_CHANGE_WINDOW_DAYS days before `day`."""
    found: list[FieldWarning] = []
    for name, threshold in WARNINGS.items():
        value = fields.get(name)
        if value is None:
            continue
        assert isinstance(value, (Decimal, int))
        shown = _plain(value)
        if threshold.low is not None and value < threshold.low:
            message = MESSAGES["warn_low"].format(
                field=name, value=shown, unit=threshold.unit, low=_plain(threshold.low)
            )
            found.append(FieldWarning("warn_low", name, shown, message))
        if threshold.high is not None and value > threshold.high:
            message = MESSAGES["warn_high"].format(
                field=name, value=shown, unit=threshold.unit, high=_plain(threshold.high)
            )
            found.append(FieldWarning("warn_high", name, shown, message))
    weight = fields.get("weight_kg")
    if isinstance(weight, Decimal) and previous_weight is not None and _in_window(previous_weight, day):
        found.extend(_weight_change(weight, previous_weight))
    return found


def _in_window(previous: Entry, day: dt.date) -> bool:
    """A weight from the WEIGHT_CHANGE_WINDOW_DAYS days before `day` (a zero one cannot be compared)."""
    return bool(previous.weight_kg) and 0 < (day - previous.date).days <= WEIGHT_CHANGE_WINDOW_DAYS


def _weight_change(weight: Decimal, previous: Entry) -> list[FieldWarning]:
    assert previous.weight_kg is not None
    before = previous.weight_kg
    pct = abs(weight - before) / before * 100
    if pct <= WEIGHT_CHANGE_WARN_PCT:
        return []
    message = MESSAGES["warn_weight_change"].format(
        value=_plain(weight),
        pct=_plain(pct.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)),
        previous=_plain(before),
        previous_date=previous.date.isoformat(),
        limit=_plain(WEIGHT_CHANGE_WARN_PCT),
    )
    return [FieldWarning("warn_weight_change", "weight_kg", _plain(weight), message)]
