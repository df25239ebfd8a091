"""Digests of entries, per day and per month, the same on the server and on a device (docs/verify.md).

A day's digest is the SHA-256 of one canonical encoding of its entry: every value with its stamp and
source, tombstones included. A month's digest is the SHA-256 of its days' digests in date order. The
server answers month digests (`GET /v1/checksums`); a device computes the same from its copy of the
server's rows (`server_entries`), and only a month that differs is looked at day by day.

Pure functions over `Entry`: the Postgres row (numeric(4,2) -> Decimal('7.50')) and the SQLite row (text
'7.50') become the same Entry, and the encoding writes each value in one canonical text form.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pulse_core.entry import Entry

ALGORITHM = "pulse-entry-sha256/1"
TAG = "pulse-entry/1"  # the first item of every encoding: a later encoding can never collide with this one
CENT = Decimal("0.01")

# (value, its stamp and source) in the order they are encoded; hrv_method travels with hrv_ms.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sleep_hours", ("sleep_hours",)),
    ("hrv_ms", ("hrv_ms", "hrv_method")),
    ("steps", ("steps",)),
    ("weight_kg", ("weight_kg",)),
    ("note", ("note",)),
    ("deleted", ("deleted",)),
)


def value_text(value: object) -> str | None:
    """One text per value: decimals with exactly two places when that loses nothing ('7.5' and
    Decimal('7.50') are both '7.50'; '7.505' stays '7.505'), integers in decimal, booleans 'true'/'false'."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        try:
            cents = value.quantize(CENT)
        except InvalidOperation:  # not finite, or too large to have cents: written as it is
            return str(value)
        return format(cents, "f") if cents == value else format(value.normalize(), "f")
    return str(value)


def canonical_items(entry: Entry) -> list[str | None]:
    """The encoded items, in their fixed order (docs/verify.md, "The encoding")."""
    items: list[str | None] = [TAG, entry.date.isoformat()]
    for stamped, columns in PARTS:
        items.extend(value_text(getattr(entry, column)) for column in columns)
        items.append(entry.stamps.get(stamped))
        items.append(entry.sources.get(stamped))
    items.append(value_text(entry.score))
    items.append(value_text(entry.score_version))
    return items


def canonical(entry: Entry) -> bytes:
    """A JSON array of strings and nulls, no whitespace, non-ASCII written as UTF-8 (not escaped)."""
    return json.dumps(canonical_items(entry), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def entry_digest(entry: Entry) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def day_digests(entries: Iterable[Entry]) -> dict[dt.date, str]:
    """One user's entries (at most one per date) -> each date's digest."""
    return {entry.date: entry_digest(entry) for entry in entries}


@dataclass(frozen=True)
class MonthDigest:
    digest: str
    days: int  # how many days of the month (within the range asked) have a row

    def as_json(self) -> dict[str, object]:
        return {"digest": self.digest, "days": self.days}


def month_key(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_digests(days: Mapping[dt.date, str]) -> dict[str, MonthDigest]:
    """Per month ('YYYY-MM'): the SHA-256 of the lines 'YYYY-MM-DD <day digest>\\n' of its days, in date order."""
    lines: dict[str, list[str]] = {}
    for day in sorted(days):
        lines.setdefault(month_key(day), []).append(f"{day.isoformat()} {days[day]}\n")
    return {month: MonthDigest(hashlib.sha256("".join(rows).encode("ascii")).hexdigest(), len(rows))
            for month, rows in lines.items()}


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """'YYYY-MM' -> its first and last day."""
    first = dt.date.fromisoformat(f"{month}-01")
    following = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following - dt.timedelta(days=1)


def differing_parts(ours: Entry, theirs: Entry) -> list[str]:
    """What differs between two entries of one day, in the encoding's terms: 'steps' (the value),
    'steps stamp', 'steps source', 'deleted', 'score'..."""
    out: list[str] = []
    for stamped, columns in PARTS:
        if any(value_text(getattr(ours, c)) != value_text(getattr(theirs, c)) for c in columns):
            out.append(stamped)
        if ours.stamps.get(stamped) != theirs.stamps.get(stamped):
            out.append(f"{stamped} stamp")
        if ours.sources.get(stamped) != theirs.sources.get(stamped):
            out.append(f"{stamped} source")
    for column in ("score", "score_version"):
        if value_text(getattr(ours, column)) != value_text(getattr(theirs, column)):
            out.append(column)
    return out
