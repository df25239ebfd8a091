"""Use cases: log a day, delete a day, import days. Each runs in one unit of work."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulse_core.entry import DELETED, MERGE_FIELDS, Entry, FieldValue
from pulse_core.errors import NotFoundError, UsageError, ValidationError
from pulse_core.ports import EntryChange, UnitOfWork
from pulse_core.score import rescore
from pulse_core.values import parse_date, parse_fields
from pulse_core.warnings import FieldWarning, field_warnings

MANUAL = "manual"


@dataclass
class LogResult:
    entry: Entry
    warnings: list[FieldWarning]
    changed: bool


def _merge_name(name: str) -> str:
    return "hrv_ms" if name == "hrv_method" else name


def apply_set(
    entry: Entry, fields: Mapping[str, FieldValue], stamp: str, source: str
) -> dict[str, str | None]:
    """Set the given fields at `stamp`; returns the base stamps they replaced (for the mutation)."""
    base: dict[str, str | None] = {}
    for name, value in fields.items():
        merge = _merge_name(name)
        base.setdefault(merge, entry.stamps.get(merge))
        setattr(entry, name, value)
        entry.stamps[merge] = stamp
        entry.sources[merge] = source
    if entry.hrv_ms is None:
        entry.hrv_method = None
    entry.deleted = False
    rescore(entry)
    return base


def _unchanged(entry: Entry, fields: Mapping[str, FieldValue], source: str) -> bool:
    return not entry.deleted and all(
        entry.value(name) == value and entry.sources.get(_merge_name(name)) == source
        for name, value in fields.items()
    )


def log_entry(
    uow: UnitOfWork,
    user: str,
    day: object,
    raw: Mapping[str, object],
    today: dt.date,
    clear: Iterable[str] = (),
) -> LogResult:
    """Set the given fields of a day's entry, merging into what is there; `clear` unsets fields."""
    date = parse_date(day, today)
    fields = parse_fields(raw)
    for name in clear:
        if name not in MERGE_FIELDS:
            raise UsageError("clear", name, ", ".join(MERGE_FIELDS), f"clear: {name!r} is not a field"
                             f" (allowed {', '.join(MERGE_FIELDS)})")
        fields[name] = None
        if name == "hrv_ms":
            fields["hrv_method"] = None
    if not fields:
        raise UsageError(
            "fields", None, "at least one of " + ", ".join(MERGE_FIELDS),
            "fields: nothing to set (allowed at least one of sleep_hours, hrv_ms, steps, weight_kg, note)",
        )
    with uow:
        existing = uow.entries.get(user, date)
        if (existing is None or existing.deleted) and all(v is None for v in fields.values()):
            raise NotFoundError(f"date: no entry for {date.isoformat()} (nothing to clear)")
        entry = existing or Entry(user=user, date=date)
        previous = uow.entries.previous_with(user, date, "weight_kg")
        warnings = field_warnings(fields, previous)
        if _unchanged(entry, fields, MANUAL):
            return LogResult(entry, warnings, changed=False)
        stamp = uow.next_stamp()
        base = apply_set(entry, fields, stamp, MANUAL)
        uow.entries.save(entry)
        uow.record(EntryChange(user, date, "set", dict(fields), base, stamp, MANUAL))
        uow.commit()
    return LogResult(entry, warnings, changed=True)


def delete_entry(uow: UnitOfWork, user: str, day: object, today: dt.date) -> Entry:
    """Tombstone a day: every field null at the delete's stamp, so older writes cannot revive it."""
    date = parse_date(day, today)
    with uow:
        entry = uow.entries.get(user, date)
        if entry is None or entry.deleted:
            raise NotFoundError(f"date: no entry for {date.isoformat()}")
        stamp = uow.next_stamp()
        base = {name: entry.stamps.get(name) for name in MERGE_FIELDS}
        for name in (*MERGE_FIELDS, "hrv_method"):
            setattr(entry, name, None)
        for name in (*MERGE_FIELDS, DELETED):
            entry.stamps[name] = stamp
            entry.sources[name] = MANUAL
        entry.deleted = True
        rescore(entry)
        uow.entries.save(entry)
        uow.record(EntryChange(user, date, "delete", {}, base, stamp, MANUAL))
        uow.commit()
    return entry


@dataclass(frozen=True)
class DayRecord:
    """One day's values read by an importer, before validation. `origin` says where, for messages."""

    date: dt.date
    fields: dict[str, object]
    origin: str = ""


@dataclass
class ImportSummary:
    source: str
    read: int = 0
    imported: int = 0  # days that had no entry before
    updated: int = 0  # days whose values changed
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "days_read": self.read,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": dict(sorted(self.skipped.items())),
        }


def import_days(
    uow: UnitOfWork,
    user: str,
    records: Iterable[DayRecord],
    source: str,
    today: dt.date,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Merge imported days in one transaction. Re-importing changes nothing; a value the user set
    by hand (or a day they deleted) is never overwritten."""
    summary = ImportSummary(source)
    with uow:
        for record in records:
            summary.read += 1
            if progress is not None:
                progress(summary.read)
            _import_one(uow, user, record, source, today, summary)
        uow.commit()
    return summary


def _import_one(
    uow: UnitOfWork, user: str, record: DayRecord, source: str, today: dt.date, summary: ImportSummary
) -> None:
    try:
        date = parse_date(record.date, today)
        fields = parse_fields(record.fields)
    except ValidationError as exc:
        summary.skipped[f"invalid {exc.field}"] += 1
        return
    if not fields:
        summary.skipped["no values"] += 1
        return
    existing = uow.entries.get(user, date)
    if existing is not None and existing.deleted and existing.sources.get(DELETED) == MANUAL:
        summary.skipped["day deleted by hand"] += 1
        return
    entry = existing or Entry(user=user, date=date)
    wanted: dict[str, FieldValue] = {}
    kept_manual: set[str] = set()
    for name, value in fields.items():
        merge = _merge_name(name)
        if entry.sources.get(merge) == MANUAL:  # set or cleared by hand: never overwritten by an import
            if entry.value(name) != value:
                kept_manual.add(merge)
            continue
        if entry.value(name) != value:
            wanted[name] = value
    for merge in kept_manual:
        summary.skipped[f"{merge} kept (set by hand)"] += 1
    if "hrv_method" in wanted and "hrv_ms" not in wanted:
        wanted["hrv_ms"] = fields["hrv_ms"]
    if "hrv_ms" in wanted and "hrv_method" not in wanted:
        wanted["hrv_method"] = fields["hrv_method"]
    if not wanted:
        summary.unchanged += 1
        return
    stamp = uow.next_stamp()
    was_new = existing is None or existing.is_empty()
    base = apply_set(entry, wanted, stamp, source)
    uow.entries.save(entry)
    uow.record(EntryChange(user, date, "set", wanted, base, stamp, source))
    if was_new:
        summary.imported += 1
    else:
        summary.updated += 1
