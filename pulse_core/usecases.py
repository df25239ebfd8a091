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
from pulse_core.rules import MANUAL
from pulse_core.score import rescore
from pulse_core.values import parse_date, parse_fields
from pulse_core.warnings import FieldWarning, field_warnings


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
    """Set the given fields at `stamp`; returns the base stamps they replaced (for the mutation).

    A field set to a value takes `source`; a field cleared keeps the stamp but has no source (an unset
    field came from nowhere, docs/cli.md)."""
    base: dict[str, str | None] = {}
    for name, value in fields.items():
        merge = _merge_name(name)
        base.setdefault(merge, entry.stamps.get(merge))
        setattr(entry, name, value)
        entry.stamps[merge] = stamp
    if entry.hrv_ms is None:
        entry.hrv_method = None
    for merge in base:
        if entry.value(merge) is None:
            entry.sources.pop(merge, None)
        else:
            entry.sources[merge] = source
    entry.deleted = False
    rescore(entry)
    return base


def _set_by_hand(entry: Entry, merge: str) -> bool:
    """The field holds a value the user set by hand."""
    return entry.value(merge) is not None and entry.sources.get(merge) == MANUAL


def _emptied_by_hand(entry: Entry, merge: str) -> bool:
    """The field is empty but has a stamp: the user deleted the day or cleared the field (an import
    never writes an empty value)."""
    return entry.value(merge) is None and entry.stamps.get(merge) is not None


def _unchanged(entry: Entry, fields: Mapping[str, FieldValue], source: str) -> bool:
    """Nothing to write: each value is stored already from `source` (a field to clear has been cleared
    already: it is empty and has a stamp)."""
    def same(name: str, value: FieldValue) -> bool:
        merge = _merge_name(name)
        if value is None:
            return entry.value(name) is None and merge in entry.stamps
        return entry.value(name) == value and entry.sources.get(merge) == source

    return not entry.deleted and all(same(name, value) for name, value in fields.items())


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
        warnings = field_warnings(fields, previous, date)
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
        for name in MERGE_FIELDS:
            entry.sources.pop(name, None)  # the fields are unset; the tombstone is what was done by hand
        entry.sources[DELETED] = MANUAL
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


SKIPPED_DELETED = "deleted by hand (bring it back with --restore-deleted)"
SKIPPED_EMPTY = "no values"


@dataclass
class ImportSummary:
    """What an import did. Every day read is counted once, in exactly one of imported, updated,
    unchanged or skipped, so `read` is always their sum; `restored` and `kept` are details."""

    source: str
    read: int = 0
    imported: int = 0  # days that had no values before (new days, and deleted days restored)
    restored: int = 0  # of `imported`: days deleted by hand, brought back with restore_deleted
    updated: int = 0  # days that had values and gained or changed some
    unchanged: int = 0  # days with nothing to write (equal values, or only values kept as set by hand)
    skipped: Counter[str] = field(default_factory=Counter)  # days not written, by one-line reason
    kept: Counter[str] = field(default_factory=Counter)  # per field: values set by hand an import differed from
    left_empty: Counter[str] = field(default_factory=Counter)  # per field: emptied by hand, not filled

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "days_read": self.read,
            "imported": self.imported,
            "restored": self.restored,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": dict(sorted(self.skipped.items())),
            "kept": dict(sorted(self.kept.items())),
            "left_empty": dict(sorted(self.left_empty.items())),
        }


def import_days(
    uow: UnitOfWork,
    user: str,
    records: Iterable[DayRecord],
    source: str,
    today: dt.date,
    progress: Callable[[int], None] | None = None,
    *,
    restore_deleted: bool = False,
) -> ImportSummary:
    """Merge imported days in one transaction. Re-importing changes nothing; a value the user set by
    hand is never overwritten; a day they deleted is skipped unless `restore_deleted`, which writes
    it again as an ordinary `set` (so the restore syncs like any other import)."""
    summary = ImportSummary(source)
    with uow:
        for record in records:
            summary.read += 1
            if progress is not None:
                progress(summary.read)
            _import_one(uow, user, record, source, today, summary, restore_deleted)
        uow.commit()
    return summary


def _import_one(
    uow: UnitOfWork,
    user: str,
    record: DayRecord,
    source: str,
    today: dt.date,
    summary: ImportSummary,
    restore_deleted: bool,
) -> None:
    try:
        date = parse_date(record.date, today)
        fields = parse_fields(record.fields)
    except ValidationError as exc:
        summary.skipped[f"invalid {exc.field} (allowed {exc.allowed})"] += 1
        return
    if not fields:
        summary.skipped[SKIPPED_EMPTY] += 1
        return
    existing = uow.entries.get(user, date)
    deleted = existing is not None and existing.deleted
    if deleted and not restore_deleted:
        summary.skipped[SKIPPED_DELETED] += 1
        return
    entry = existing or Entry(user=user, date=date)
    wanted, kept, emptied = _imported_values(entry, fields, restore_deleted)
    summary.kept.update(kept)
    summary.left_empty.update(emptied)
    if not wanted:
        summary.unchanged += 1
        return
    was_empty = entry.deleted or entry.is_empty()
    # Filling what was emptied by hand (a delete, a clear) is itself done by hand: under the merge rule
    # (docs/sync.md, lww@2) an emptied field outranks every import, on every replica, so a restore
    # written as an import would lose to the delete again at the next sync.
    restoring = restore_deleted and any(_emptied_by_hand(entry, _merge_name(n)) for n in wanted)
    written_as = MANUAL if restoring else source
    stamp = uow.next_stamp()
    base = apply_set(entry, wanted, stamp, written_as)
    uow.entries.save(entry)
    uow.record(EntryChange(user, date, "set", wanted, base, stamp, written_as))
    if not was_empty:
        summary.updated += 1
        return
    summary.imported += 1
    if deleted:
        summary.restored += 1


def _imported_values(
    entry: Entry, fields: Mapping[str, FieldValue], restore: bool
) -> tuple[dict[str, FieldValue], set[str], set[str]]:
    """The fields an import writes (those that differ and were not set by hand), the hand-set fields it
    differs from (kept as they are), and the fields left empty because the user emptied them by hand
    (unless `restore`). HRV and its method are written together."""
    wanted: dict[str, FieldValue] = {}
    kept: set[str] = set()
    emptied: set[str] = set()
    for name, value in fields.items():
        if entry.value(name) == value:
            continue
        merge = _merge_name(name)
        if _set_by_hand(entry, merge):
            kept.add(merge)
        elif _emptied_by_hand(entry, merge) and not restore:
            emptied.add(merge)
        else:
            wanted[name] = value
    if "hrv_method" in wanted and "hrv_ms" not in wanted:
        wanted["hrv_ms"] = fields["hrv_ms"]
    if "hrv_ms" in wanted and "hrv_method" not in wanted:
        wanted["hrv_method"] = fields["hrv_method"]
    return wanted, kept, emptied
