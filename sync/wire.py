"""The push protocol (docs/push-protocol.md) in one place: the request's checks, each mutation's checks,
and the results and the answer, typed.

Pure functions: the cloud server (its route and its plain-ASGI fast path), the device app that relays a
browser's pushes, and the client engine all use these, so the three cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from pulse_core.entry import MERGE_FIELDS, FieldValue
from pulse_core.errors import ValidationError
from pulse_core.rules import MANUAL, SOURCES
from pulse_core.values import fail, parse_date, parse_fields
from sync.errors import PushRefused
from sync.hlc import CLIENT_ID, MAX_COUNTER, Stamp, StampError

PROTOCOL = 1
MAX_BATCH = 500
MAX_SEQ = 2**63 - 1  # a seq is stored as a Postgres bigint
MAX_OFFSET_MIN = 14 * 60  # zones run from UTC-12:00 to UTC+14:00
API_CLIENT = "api"  # the server's own client id, for REST writes: a device using it would share its seqs
FIELD_NAMES = ("sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note")
_FIELD_SET = frozenset(FIELD_NAMES)
Status = Literal["applied", "conflict", "duplicate", "rejected", "clash", "held"]
STATUSES: tuple[Status, ...] = ("applied", "conflict", "duplicate", "rejected", "clash", "held")
# What a mutation's digest covers: everything that makes it this mutation (docs/sync.md, "Exactly once").
DIGESTED = ("seq", "date", "op", "fields", "base", "hlc", "source")


# -- the answer's types -------------------------------------------------------------------------------
class ResultError(TypedDict):
    code: str
    message: str
    field: NotRequired[str | None]
    value: NotRequired[Any]
    allowed: NotRequired[str | None]


class ConflictOut(TypedDict):
    field: str
    kept: Any
    lost: Any
    kept_hlc: str | None
    lost_hlc: str | None
    rule: str


class MutationResult(TypedDict):
    """One mutation's result; which keys it has depends on its status (docs/push-protocol.md)."""

    seq: Any  # the seq as sent (an integer once the request's form is checked)
    status: Status
    hlc: NotRequired[str]
    clamped_from: NotRequired[str]
    conflicts: NotRequired[list[ConflictOut]]
    error: NotRequired[ResultError]
    original_status: NotRequired[str | None]
    pruned: NotRequired[bool]


class PushResponse(TypedDict):
    server_time_ms: int
    txid: str | None
    lsn: str | None
    max_batch: int
    high_water: int | None
    results: list[MutationResult]


def push_response(
    server_time_ms: int, txid: str | None, lsn: str | None, max_batch: int, high_water: int | None,
    results: Sequence[MutationResult],
) -> PushResponse:
    """The answer to a push, with no null member in any result (as the OpenAPI schema declares them)."""
    return {"server_time_ms": server_time_ms, "txid": txid, "lsn": lsn, "max_batch": max_batch,
            "high_water": high_water, "results": [_without_nulls(r) for r in results]}


def _without_nulls(result: MutationResult) -> MutationResult:
    if "error" not in result and "conflicts" not in result and None not in result.values():
        return result  # an applied result, as most are: nothing to drop
    out: dict[str, Any] = {k: v for k, v in result.items() if v is not None}
    if isinstance(error := out.get("error"), dict):
        out["error"] = {k: v for k, v in error.items() if v is not None}
    if isinstance(conflicts := out.get("conflicts"), list):
        out["conflicts"] = [{k: v for k, v in c.items() if v is not None} for c in conflicts]
    return out  # type: ignore[return-value]  # the same keys, fewer of them


# -- the request ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushBody:
    protocol: int
    client_id: str
    mutations: list[dict[str, Any]]
    utc_offset_min: int | None = None


def _malformed(where: str, message: str, value: Any = None) -> PushRefused:
    shown = value if isinstance(value, (str, int, float, bool)) else None
    return PushRefused(400, "bad_request", f"{where}: {message}", field=where, value=shown)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_push_body(raw: bytes) -> PushBody:
    """The body's form, as the OpenAPI `PushRequest` documents it; PushRefused (400) naming the first
    thing wrong. What each mutation means is judged later, one result each (`parse_mutation`)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and the json module reads (an integer past 64 bits, NaN) is judged below
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise _malformed("body", "JSON decode error") from None
    if not isinstance(body, dict):
        raise _malformed("body", "Input should be a valid dictionary")
    for name in ("protocol", "client_id", "mutations"):
        if name not in body:
            raise _malformed(name, "Field required")
    protocol, client_id, mutations = body["protocol"], body["client_id"], body["mutations"]
    if not _integer(protocol):
        raise _malformed("protocol", "Input should be a valid integer", protocol)
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise _malformed("client_id", f"String should match pattern '^{CLIENT_ID.pattern}$'", client_id)
    if client_id == API_CLIENT:
        raise PushRefused(400, "bad_request", f"client_id: {client_id!r} is reserved for the server's own writes"
                          " (allowed any other id)", field="client_id", value=client_id, allowed="any id but 'api'")
    if not isinstance(mutations, list):
        raise _malformed("mutations", "Input should be a valid list")
    for i, item in enumerate(mutations):
        if not isinstance(item, dict):
            raise _malformed(f"mutations.{i}", "Input should be a valid dictionary")
        if "seq" not in item:
            raise _malformed(f"mutations.{i}.seq", "Field required")
        seq = item["seq"]
        if not _integer(seq) or not 0 <= seq <= MAX_SEQ:
            raise _malformed(f"mutations.{i}.seq", f"Input should be an integer from 0 to {MAX_SEQ}", seq)
    offset = body.get("utc_offset_min")
    if offset is not None and (not _integer(offset) or not -MAX_OFFSET_MIN <= offset <= MAX_OFFSET_MIN):
        raise _malformed("utc_offset_min", f"Input should be an integer from {-MAX_OFFSET_MIN} to {MAX_OFFSET_MIN}",
                         offset)
    return PushBody(protocol, client_id, mutations, offset)


def batch_refused(body: PushBody, max_batch: int) -> bool:
    """Whether `check_batch` refuses the batch (the server judges the caller's token first)."""
    return body.protocol != PROTOCOL or len(body.mutations) > max_batch


def check_batch(body: PushBody, max_batch: int) -> None:
    """A protocol this side does not speak (426), a batch over its limit (413)."""
    if body.protocol != PROTOCOL:
        raise PushRefused(426, "unsupported_protocol", f"protocol: {body.protocol} is not supported (allowed"
                          f" {PROTOCOL})", field="protocol", value=body.protocol, allowed=str(PROTOCOL))
    if len(body.mutations) > max_batch:
        raise PushRefused(413, "batch_too_large", f"mutations: {len(body.mutations)} in one batch (allowed at most"
                          f" {max_batch})", field="mutations", value=len(body.mutations),
                          allowed=f"at most {max_batch}")


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
    source = raw.get("source", MANUAL)
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
    if not _FIELD_SET.issuperset(raw):
        unknown = sorted(set(raw) - _FIELD_SET)
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


class Arrival:
    """The stamps of one push as its receiver takes them (docs/push-protocol.md, "Clock sanity").

    A stamp too far ahead is clamped (`clamp`), yet never to a stamp at or before one taken for a lower
    seq of the same push: then it goes just after the latest of those. A device whose clock runs ahead
    stamps two edits of a field at different times that clamp to one stamp when their counters match,
    and the later would be taken for the earlier again and lost; so clamped edits keep the order they
    were made in. A base naming a stamp clamped earlier in the push names what that stamp became, so
    an edit made on top of it is not taken for a concurrent one."""

    def __init__(self, server_ms: int, limit_ms: int) -> None:
        self.server_ms = server_ms
        self.limit_ms = limit_ms
        self._taken: dict[int, Stamp] = {}  # seq -> the stamp taken, in this push so far
        self._renamed: dict[str, str] = {}
        # While seqs come in increasing order (as devices send them), the latest stamp taken is the latest
        # of the lower seqs: brought up to date over what was taken since it was last asked (no scan)
        self._in_order = True
        self._top_seq = -1
        self._latest: Stamp | None = None
        self._unseen: list[Stamp] = []

    def take(self, seq: int, stamp: Stamp) -> tuple[Stamp, bool]:
        """The stamp a mutation is merged at, and whether it was clamped."""
        if seq > self._top_seq:
            self._top_seq = seq
        else:
            self._in_order = False
        taken, clamped = clamp(stamp, self.server_ms, self.limit_ms)
        if not clamped:  # most stamps: kept as sent
            self._taken[seq] = stamp
            self._unseen.append(stamp)
            return stamp, False
        before = self._latest_taken() if self._in_order else \
            max((s for q, s in self._taken.items() if q < seq), default=None)
        if before is not None and before >= taken:
            taken = Stamp(before.ms, before.counter + 1, stamp.node) if before.counter < MAX_COUNTER \
                else Stamp(before.ms + 1, 0, stamp.node)
        self._renamed[str(stamp)] = str(taken)
        self._taken[seq] = taken
        self._unseen.append(taken)
        return taken, True

    def _latest_taken(self) -> Stamp | None:
        if self._unseen:
            newest = max(self._unseen)
            if self._latest is None or newest > self._latest:
                self._latest = newest
            self._unseen.clear()
        return self._latest

    def forget(self, seq: int) -> None:
        """A mutation taken, then not written after all (its savepoint rolled back): as if never taken."""
        gone = self._taken.pop(seq, None)
        if gone is not None:
            self._renamed = {was: now for was, now in self._renamed.items() if now != str(gone)}
            self._latest, self._unseen = None, list(self._taken.values())
            self._top_seq = max(self._taken, default=-1)

    def base(self, base: Mapping[str, str | None]) -> Mapping[str, str | None]:
        """A mutation's base, with the stamps clamped earlier in this push as they were taken."""
        if not self._renamed:
            return base
        return {name: self._renamed.get(stamp, stamp) if stamp is not None else None
                for name, stamp in base.items()}


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
        canonical["source"] = MANUAL
    try:
        data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson cannot write (an integer past 64 bits, a lone surrogate)
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def duplicate(seq: Any, original: MutationResult | None) -> MutationResult:
    """A replay's answer: the original result, or (its result pruned after the retention window) just
    the status, never applied twice."""
    if original is None:
        return {"seq": seq, "status": "duplicate", "original_status": None, "pruned": True}
    answer = original.copy()
    answer["status"], answer["original_status"] = "duplicate", original["status"]
    return answer


def replay(
    seq: int, digest: str, client_id: str, recorded: tuple[MutationResult, str | None] | None,
    pruned_up_to: int | None, hlc: Any = None, pruned_before_ms: int | None = None,
) -> MutationResult | None:
    """The answer to a (client, seq) the receiver already holds: `recorded` is its result and digest (None:
    none kept); `pruned_up_to`, the highest seq whose result was pruned. A duplicate (the original result),
    a clash when the content differs (another store with the same client id), a duplicate whose result was
    pruned; None for a mutation not seen before. At or below the pruned mark, a mutation whose `hlc` (as
    sent) is later than every pruned result (`pruned_before_ms`: when the newest had been applied; None:
    not known) is none of them: another store used its seq (a copy of the home, pushing its own edits
    under seqs the original pushed long ago), a clash and not a duplicate to be taken for applied."""
    if recorded is not None:
        original, recorded_digest = recorded
        if recorded_digest is not None and recorded_digest != digest:
            return clash(seq, client_id)
        return duplicate(seq, original)
    if pruned_up_to is not None and seq <= pruned_up_to:
        return clash(seq, client_id) if _stamped_after(hlc, pruned_before_ms) else duplicate(seq, None)
    return None


# A device stamps by the server's time (its learned offset), give or take its clock's drift since, and a
# stamp may run up to the skew limit ahead: a mutation counts as made after a moment only this far past it.
RECENT_MARGIN_MS = 86_400_000


def _stamped_after(hlc: Any, moment_ms: int | None) -> bool:
    """Whether a stamp (as sent) is more than `RECENT_MARGIN_MS` after `moment_ms` (None: not known, never)."""
    if moment_ms is None or not isinstance(hlc, str):
        return False
    try:
        stamp = Stamp.parse(hlc)
    except StampError:
        return False
    return stamp.ms > moment_ms + RECENT_MARGIN_MS


def clash(seq: Any, client_id: str) -> MutationResult:
    """A (client, seq) already applied with other content: two stores share one client id. Nothing is
    applied; the client takes a new id and pushes its pending mutations again under it."""
    return {"seq": seq, "status": "clash", "error": {
        "code": "client_id_reused", "field": "client_id", "value": client_id,
        "allowed": "a client id used by one store only",
        "message": f"client_id: {client_id} seq {seq} was already used for another change (a restored or copied"
                   " store); take a new client id and push the pending changes again under it"}}


def rejection(seq: Any, exc: ValidationError) -> MutationResult:
    """The result of a mutation refused by the checks: one per mutation, never failing its batch."""
    return {"seq": seq, "status": "rejected", "error": {
        "code": exc.code, "message": storable(exc.message), "field": exc.field, "value": storable(exc.value),
        "allowed": exc.allowed}}


def refusal(seq: Any, exc: ValidationError) -> MutationResult:
    """A mutation the checks refuse: rejected for good, or held when its only fault is a date still
    ahead of the user's today (it becomes valid as days pass: the device keeps it and sends it again;
    nothing is recorded, so the same mutation is applied once its day comes)."""
    result = rejection(seq, exc)
    if exc.code == "future_date":
        result["status"] = "held"
    return result
