"""Turning raw input (text from a command line, JSON from a request) into checked field values."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, Overflow

from pulse_core.entry import FieldValue
from pulse_core.errors import ValidationError
from pulse_core.rules import EARLIEST_DATE, HRV_METHODS, LIMITS, MAX_DAYS_AHEAD, MESSAGES, NOTE_MAX_CHARS

CENT = Decimal("0.01")
DATE_ALLOWED = "YYYY-MM-DD, today or yesterday"


def fail(code: str, field: str, value: object, allowed: str) -> ValidationError:
    message = MESSAGES[code].format(field=field, value=value, allowed=allowed)
    return ValidationError(field, value, allowed, message, code=code)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: object, today: dt.date, field: str = "date", *, reading: bool = False) -> dt.date:
    """A calendar date from EARLIEST_DATE on, and, for a write, no more than MAX_DAYS_AHEAD days after
    `today` (a read's range may end anywhere)."""
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):  # the usual case, as the branches below read it
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise fail("invalid_date", field, value, DATE_ALLOWED) from None
        return _checked_date(day, today, field, reading)
    words = {"today": today, "yesterday": today - dt.timedelta(days=1), "tomorrow": today + dt.timedelta(days=1)}
    if isinstance(value, dt.date):
        day = value
    elif str(value).strip().lower() in words:
        day = words[str(value).strip().lower()]
    else:
        text = str(value).strip()
        try:
            if not _ISO_DATE.fullmatch(text):  # fromisoformat alone also takes 20261127 and 2026-W48-5
                raise ValueError(text)
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise fail("invalid_date", field, value, DATE_ALLOWED) from None
    return _checked_date(day, today, field, reading)


def _checked_date(day: dt.date, today: dt.date, field: str, reading: bool) -> dt.date:
    if day < EARLIEST_DATE:
        raise fail("out_of_range", field, day.isoformat(), f"from {EARLIEST_DATE.isoformat()}")
    if reading:
        return day
    latest = today + dt.timedelta(days=MAX_DAYS_AHEAD)
    if day > latest:
        raise fail("future_date", field, day.isoformat(), f"up to {latest.isoformat()}")
    return day


def parse_metric(name: str, raw: object) -> Decimal | int:
    """A number within the field's limits: Decimal kept to 0.01, or an int for whole-number fields."""
    limit = LIMITS[name]
    if isinstance(raw, bool):
        raise fail("not_a_number", name, raw, limit.allowed)
    try:
        number = Decimal(str(raw).strip()) if not isinstance(raw, Decimal) else raw
    except InvalidOperation:
        raise fail("not_a_number", name, raw, limit.allowed) from None
    if not number.is_finite():
        raise fail("not_a_number", name, raw, limit.allowed)
    if limit.integer:
        if number != number.to_integral_value():
            raise fail("not_an_integer", name, raw, limit.allowed)
        if not limit.low <= number <= limit.high:
            raise fail("out_of_range", name, _show(number), limit.allowed)
        return int(number)
    if not limit.low <= number <= limit.high:  # the unrounded value: 24.004 h is out of range
        raise fail("out_of_range", name, _show(number), limit.allowed)
    return number.quantize(CENT, rounding=ROUND_HALF_UP) + 0  # + 0 turns -0.00 into 0.00


def parse_fields(raw: Mapping[str, object]) -> dict[str, FieldValue]:
    """Check every given field; `None` values mean "not given". Raises the first error found.

    `hrv_method` is returned beside `hrv_ms` (defaulting to rmssd) and never on its own.
    """
    out: dict[str, FieldValue] = {}
    for name in LIMITS:
        if raw.get(name) is not None:
            out[name] = parse_metric(name, raw[name])
    method = raw.get("hrv_method")
    if method is not None:
        method = str(method).strip().lower()
        if method not in HRV_METHODS:
            raise fail("invalid_choice", "hrv_method", raw.get("hrv_method"), " or ".join(HRV_METHODS))
        if "hrv_ms" not in out:
            raise fail("nothing_to_set", "hrv_method", method, "only together with hrv_ms")
    if "hrv_ms" in out:
        out["hrv_method"] = method or "rmssd"
    note = raw.get("note")
    if note is not None:
        text = str(note)
        if len(text) > NOTE_MAX_CHARS:
            raise fail("too_long", "note", len(text), f"up to {NOTE_MAX_CHARS} characters")
        out["note"] = text or None  # an empty note clears it
    return out


def _show(number: Decimal) -> str:
    try:
        return format(number.normalize(), "f")
    except Overflow:  # an exponent past the context's limit (1e1000000): as Decimal writes it
        return str(number)
