"""The push wire format (docs/push-protocol.md): checking one mutation and shaping one result.

Pure functions: the server uses them on arrival, the client engine to build what it sends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pulse_core.entry import MERGE_FIELDS, FieldValue
from pulse_core.errors import ValidationError
from pulse_core.rules import SOURCES
from pulse_core.values import fail, parse_date, parse_fields
from sync.hlc import Stamp, StampError

PROTOCOL = 1
MAX_BATCH = 500
FIELD_NAMES = ("sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note")
STATUSES = ("applied", "conflict", "duplicate", "rejected", "clash", "held")
# What a mutation's digest covers: everything that makes it this mutation (docs/sync.md, "Exactly once").
DIGESTED = ("seq", "date", "op", "fields", "base", "hlc", "source")


@dataclass(frozen=True)
class Mutation:
    seq: int
    date: dt.date
    op: str
    fields: dict[str, FieldValue]
    base: dict[str, str | None]
    stamp: Stamp
    source: str


def _bad(code: str, field: str, value: Any, allowed: str, message: str) -> ValidationError:
    return ValidationError(field, value, allowed, message, code=code)


def parse_mutation(raw: Mapping[str, Any], client_id: str, today: dt.date) -> Mutation:
    """Check one mutation's form and meaning; raises ValidationError naming the field."""
    seq = raw.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise _bad("invalid_seq", "seq", seq, "an integer >= 0", f"seq: {seq!r} is not an integer >= 0")
    op = raw.get("op")
    if op not in ("set", "delete"):
        raise _bad("invalid_op", "op", op, "set or delete", f"op: {op!r} is not one of set or delete")
    date = parse_date(raw.get("date"), today)
    hlc = raw.get("hlc")
    try:
        stamp = Stamp.parse(hlc if isinstance(hlc, str) else "")
    except StampError:
        raise _bad("invalid_hlc", "hlc", hlc, "<16 digits>:<5 digits>:<client_id>",
                   f"hlc: {hlc!r} is not a stamp (allowed <16 digits>:<5 digits>:<client_id>)") from None
    # The stamp's node may be another id than `client_id`: a device that had to take a new client id
    # (its store was a copy) pushes its pending mutations again under the new id with their own stamps.
    source = raw.get("source", "manual")
    if source not in SOURCES:
        raise fail("invalid_choice", "source", source, ", ".join(SOURCES))
    fields = _parse_fields(raw.get("fields") or {}) if op == "set" else {}
    if op == "set" and not fields:
        raise fail("nothing_to_set", "fields", raw.get("fields"), "at least one of " + ", ".join(MERGE_FIELDS))
    base = _parse_base(raw.get("base") or {})
    return Mutation(seq, date, op, fields, base, stamp, source)


def _parse_fields(raw: Any) -> dict[str, FieldValue]:
    if not isinstance(raw, Mapping):
        raise _bad("invalid_fields", "fields", raw, "an object", "fields: is not an object (allowed an object)")
    unknown = sorted(set(raw) - set(FIELD_NAMES))
    if unknown:
        raise fail("invalid_choice", "fields", unknown[0], ", ".join(FIELD_NAMES))
    given = {k: v for k, v in raw.items() if v is not None}
    fields: dict[str, FieldValue] = dict(parse_fields(given))
    for name, value in raw.items():
        if value is None:  # an explicit null clears the field
            fields[name] = None
            if name == "hrv_ms":
                fields["hrv_method"] = None
    if "hrv_method" in raw and raw["hrv_method"] is None and fields.get("hrv_ms") is not None:
        fields["hrv_method"] = "rmssd"
    return fields


def _parse_base(raw: Any) -> dict[str, str | None]:
    if not isinstance(raw, Mapping):
        raise _bad("invalid_base", "base", raw, "an object", "base: is not an object (allowed an object)")
    base: dict[str, str | None] = {}
    for name, stamp in raw.items():
        key = "hrv_ms" if name == "hrv_method" else name
        if key not in MERGE_FIELDS:
            raise fail("invalid_choice", "base", name, ", ".join(MERGE_FIELDS))
        if stamp is not None and not isinstance(stamp, str):
            raise _bad("invalid_base", f"base.{name}", stamp, "a stamp or null",
                       f"base.{name}: {stamp!r} is not a stamp (allowed a stamp or null)")
        base[key] = stamp
    return base


def clamp(stamp: Stamp, server_ms: int, limit_ms: int) -> tuple[Stamp, bool]:
    """A stamp more than `limit_ms` ahead of server time is clamped to server time (invariant 6)."""
    if stamp.ms > server_ms + limit_ms:
        return Stamp(server_ms, stamp.counter, stamp.node), True
    return stamp, False


def storable(value: Any) -> Any:
    """A value as JSON stores can hold it (no inf or nan, no NUL, no lone surrogate): a rejected value
    is echoed back in its result, and that result is recorded for replays."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if not isinstance(value, (str, int, float, bool, type(None))):
        value = str(value)
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return value


def mutation_digest(raw: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a mutation as its client sent it: a replayed (client, seq) whose digest differs
    from the recorded one is another store using the same client id, not a duplicate."""
    canonical = {name: raw.get(name) for name in DIGESTED}
    if canonical["source"] is None:
        canonical["source"] = "manual"
    try:
        data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson cannot write (an integer past 64 bits, a lone surrogate)
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def duplicate(seq: Any, original: Mapping[str, Any] | None) -> dict[str, Any]:
    """A replay's answer: the original result, or (its result pruned after the retention window) just
    the status, never applied twice."""
    if original is None:
        return {"seq": seq, "status": "duplicate", "original_status": None, "pruned": True}
    return {**original, "status": "duplicate", "original_status": original["status"]}


def clash(seq: Any, client_id: str) -> dict[str, Any]:
    """A (client, seq) already applied with other content: two stores share one client id. Nothing is
    applied; the client takes a new id and pushes its pending mutations again under it."""
    return {"seq": seq, "status": "clash", "error": {
        "code": "client_id_reused", "field": "client_id", "value": client_id,
        "allowed": "a client id used by one store only",
        "message": f"client_id: {client_id} seq {seq} was already used for another change (a restored or copied"
                   " store); take a new client id and push the pending changes again under it"}}


def rejection(seq: Any, exc: ValidationError) -> dict[str, Any]:
    """The result of a mutation refused by the checks: one per mutation, never failing its batch."""
    return {"seq": seq, "status": "rejected", "error": {
        "code": exc.code, "message": storable(exc.message), "field": exc.field, "value": storable(exc.value),
        "allowed": exc.allowed}}


def refusal(seq: Any, exc: ValidationError) -> dict[str, Any]:
    """A mutation the checks refuse: rejected for good, or held when its only fault is a date still
    ahead of the user's today (it becomes valid as days pass: the device keeps it and sends it again;
    nothing is recorded, so the same mutation is applied once its day comes)."""
    result = rejection(seq, exc)
    if exc.code == "future_date":
        result["status"] = "held"
    return result
