"""Per-field merge rules: one rule table keyed by field, versioned.

`lww@2`: a value set by hand beats an imported one, whatever their stamps (an import never
overwrites what the user corrected, on any device); between two of the same kind the last writer
wins by HLC. Every write is ranked by (hand-set?, stamp), a total order, so the merge is
commutative, associative and idempotent: each field ends with the value of the highest-ranked write
that ever reached it, whatever order the mutations arrive in. A delete writes null to every field
at its stamp and raises the entry's delete stamp; an entry is deleted while no field has a newer
stamp than that delete (so a later `set` brings it back with only its newer fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pulse_core.entry import DELETED, MERGE_FIELDS, Entry, FieldValue
from pulse_core.rules import MANUAL
from pulse_core.score import rescore
from sync.wire import Arrival, ConflictOut, Mutation, MutationResult

LWW_V2 = "lww@2"
RULES: dict[str, str] = dict.fromkeys(MERGE_FIELDS, LWW_V2)


def rank(source: str | None, stamp: str | None) -> tuple[int, str]:
    """How writes of one field are ordered under lww@2."""
    return (1 if source == MANUAL else 0, stamp or "")
# Values written together and merged as one: `hrv_method` belongs to `hrv_ms`.
COMPANIONS: dict[str, tuple[str, ...]] = {"hrv_ms": ("hrv_ms", "hrv_method")}
# Each merge field with the values written with it, in MERGE_FIELDS order.
_PARTS = tuple((name, COMPANIONS.get(name, (name,))) for name in MERGE_FIELDS)


@dataclass(frozen=True)
class Conflict:
    """A write concurrent with the stored value: its base was not the stored stamp."""

    field: str
    kept: Any
    lost: Any
    kept_hlc: str | None
    lost_hlc: str | None
    rule: str

    def as_json(self) -> ConflictOut:
        return {"field": self.field, "kept": self.kept, "lost": self.lost, "kept_hlc": self.kept_hlc,
                "lost_hlc": self.lost_hlc, "rule": self.rule}


@dataclass
class MergeOutcome:
    written: list[str] = field(default_factory=list)  # merge fields whose value this mutation set
    conflicts: list[Conflict] = field(default_factory=list)


def values_of(entry: Entry, name: str) -> dict[str, FieldValue]:
    return {part: entry.value(part) for part in COMPANIONS.get(name, (name,))}


def shown(values: dict[str, FieldValue]) -> Any:
    """How a value appears in a conflict record: the bare value, or the pair for HRV."""
    if len(values) == 1:
        (value,) = values.values()
        return _plain(value)
    return {k: _plain(v) for k, v in values.items()}


def _plain(value: FieldValue) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _settle_deleted(entry: Entry) -> None:
    tomb = entry.stamps.get(DELETED)
    entry.deleted = tomb is not None and all(entry.stamps.get(f, "") <= tomb for f in MERGE_FIELDS)
    rescore(entry)


def merge_field(
    entry: Entry,
    name: str,
    incoming: dict[str, FieldValue],
    stamp: str,
    base: str | None,
    source: str,
    outcome: MergeOutcome,
) -> None:
    """Merge one field (with its companions) under its rule."""
    rule = RULES[name]
    stored = entry.stamps.get(name)
    if stored == stamp:
        return  # the same write again: idempotent
    concurrent = stored is not None and base != stored
    if stored is None or rank(source, stamp) > rank(entry.sources.get(name), stored):
        lost_values = values_of(entry, name)
        for part, value in incoming.items():
            setattr(entry, part, value)
        entry.stamps[name] = stamp
        entry.sources[name] = source
        outcome.written.append(name)
        if concurrent and any(v is not None for v in lost_values.values()):
            outcome.conflicts.append(Conflict(name, shown(incoming), shown(lost_values), stamp, stored, rule))
    elif (kept := values_of(entry, name)) != incoming:
        # A write older than the stored value loses, and is always recorded: either it was concurrent,
        # or its stamp was clamped to server time behind a value it had already seen.
        outcome.conflicts.append(Conflict(name, shown(kept), shown(incoming), stored, stamp, rule))


def merge_set(
    entry: Entry, fields: Mapping[str, FieldValue], base: Mapping[str, str | None], stamp: str, source: str
) -> MergeOutcome:
    """Apply a `set` mutation's fields to `entry` in place."""
    outcome = MergeOutcome()
    given = fields.keys()
    for name, parts in _PARTS:
        if given.isdisjoint(parts):
            continue
        incoming = {part: fields.get(part) for part in parts}
        if name == "hrv_ms" and incoming["hrv_ms"] is None:
            incoming["hrv_method"] = None
        merge_field(entry, name, incoming, stamp, base.get(name), source, outcome)
    _settle_deleted(entry)
    return outcome


def merge_delete(entry: Entry, base: Mapping[str, str | None], stamp: str, source: str) -> MergeOutcome:
    """Apply a `delete`: every field null at `stamp`, and the tombstone stamp raised."""
    outcome = MergeOutcome()
    for name in MERGE_FIELDS:
        nulls: dict[str, FieldValue] = dict.fromkeys(COMPANIONS.get(name, (name,)))
        merge_field(entry, name, nulls, stamp, base.get(name), source, outcome)
    if entry.stamps.get(DELETED, "") < stamp:
        entry.stamps[DELETED] = stamp
        entry.sources[DELETED] = source
    _settle_deleted(entry)
    return outcome


def apply_mutation(entry: Entry, m: Mutation, arrival: Arrival) -> tuple[MutationResult, list[Conflict], bool]:
    """Merge a checked mutation into `entry` as a receiver does, in the order of its push (`arrival`
    clamps a stamp too far ahead of the receiver's time): its result as the push response carries it,
    its conflicts, and whether it was clamped."""
    base = arrival.base(m.base)
    stamp, clamped = arrival.take(m.seq, m.stamp)
    text = str(stamp)
    if m.op == "delete":
        outcome = merge_delete(entry, base, text, m.source)
    else:
        outcome = merge_set(entry, m.fields, base, text, m.source)
    result: MutationResult = {"seq": m.seq, "status": "conflict" if outcome.conflicts else "applied",
                              "hlc": text}
    if clamped:
        result["clamped_from"] = str(m.stamp)
    if outcome.conflicts:
        result["conflicts"] = [c.as_json() for c in outcome.conflicts]
    return result, outcome.conflicts, clamped
