"""The Electric wire format: request parameters, messages, headers (docs/shape-protocol.md)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pulse_server.shapes.errors import ShapeRequestError
from pulse_server.shapes.subset import Subset, parse_subset
from pulse_server.shapes.where import Predicate, WhereError, parse_where
from sync import stamps_column

TABLE = "entries"
TABLE_NAMES = {"entries", "public.entries", '"public"."entries"', '"entries"', "public.\"entries\""}
RELATION = ["public", TABLE]
# Column -> Electric schema entry. Types are Postgres type names; values travel in text format.
SCHEMA: dict[str, dict[str, Any]] = {
    "user_id": {"type": "int8", "pk_index": 0, "not_null": True},
    "date": {"type": "date", "pk_index": 1, "not_null": True},
    "username": {"type": "text"},
    "sleep_hours": {"type": "numeric", "precision": 4, "scale": 2},
    "hrv_ms": {"type": "numeric", "precision": 5, "scale": 2},
    "hrv_method": {"type": "text"},
    "steps": {"type": "int4"},
    "weight_kg": {"type": "numeric", "precision": 5, "scale": 2},
    "note": {"type": "text"},
    "score": {"type": "int2"},
    "score_version": {"type": "int2"},
    "deleted": {"type": "bool", "not_null": True},
    # The stamp and source of each stamped field: available by name, sent by default folded into `stamps`.
    **{c: {"type": "text"} for c in stamps_column.COLUMNS},
    "stamps": {"type": "text"},
}
ALL_COLUMNS = tuple(SCHEMA)  # what `columns=` may name
# What a shape carries when `columns` is not given: every column, the twelve stamp and source columns
# as `stamps` (a third of the bytes of the snapshot they were, docs/shapes.md "Stamps").
DEFAULT_COLUMNS = tuple(c for c in ALL_COLUMNS if c not in stamps_column.COLUMNS)
PK = ("user_id", "date")
LOG_MODES = ("full", "changes_only")
EXPOSE_HEADERS = (
    "electric-handle, electric-offset, electric-schema, electric-cursor, electric-up-to-date, "
    "electric-chunk-last-offset, electric-snapshot, etag, retry-after, x-txid"
)
LIVE_HOLD_S = 20.0
# An SSE stream is held this long, then ended (the client reconnects from its last up-to-date), with
# a comment line after each quiet interval so proxies and load balancers keep the connection open.
SSE_HOLD_S = 60.0
SSE_KEEPALIVE_S = 15.0
SSE_KEEPALIVE = b": keep-alive\n\n"
_OFFSET = re.compile(r"^(\d+)_(\d+)$")


@dataclass(frozen=True)
class ShapeRequest:
    offset: str  # "-1", "now" or "<lsn>_<op>"
    handle: str | None
    live: bool
    where_text: str | None
    params: dict[str, str]
    columns: tuple[str, ...]
    replica: str
    predicate: Predicate | None = field(default=None, compare=False)
    sse: bool = False  # live changes as server-sent events (live_sse=true) rather than long polls
    log: str = "full"  # "changes_only": no snapshot, the log from the position the client starts at
    subset: Subset | None = field(default=None, compare=False)  # a subset snapshot (subset__* or a POST body)

    @property
    def changes_only(self) -> bool:
        return self.log == "changes_only"

    @property
    def needs_previous(self) -> bool:
        """Whether serving a change needs the row as it was before it: to tell a move into or out of the
        filter from a change inside it, or to send `old_value`."""
        return self.predicate is not None or self.replica == "full"

    @property
    def position(self) -> tuple[int, int]:
        match = _OFFSET.match(self.offset)
        assert match is not None
        return int(match[1]), int(match[2])

    def definition(self) -> dict[str, Any]:
        """What the handle names. The log mode only when it is changes_only, so the handles of full
        shapes are the ones clients already hold."""
        shape = {"table": TABLE, "where": self.where_text, "params": self.params, "columns": list(self.columns),
                 "replica": self.replica}
        return {**shape, "log": self.log} if self.changes_only else shape


def parse_request(
    query: Mapping[str, str], params: Mapping[str, str], subset: Mapping[str, Any] | None = None
) -> ShapeRequest:
    """Check the query string (and a subset's parameters: `subset__*` or a POST body); raises
    ShapeRequestError with Electric's per-parameter reasons."""
    errors: dict[str, list[str]] = {}
    table = query.get("table")
    if table is None:
        errors["table"] = ["table is required"]
    elif table not in TABLE_NAMES:
        errors["table"] = [f"table {table!r} is not a synced table (allowed: entries)"]
    offset = query.get("offset")
    if offset is None:
        errors["offset"] = ["offset is required"]
    elif offset not in ("-1", "now") and not _OFFSET.match(offset):
        errors["offset"] = ["has invalid format: use -1, now, or <lsn>_<op>"]
    handle = query.get("handle") or query.get("shape_handle")
    if offset not in (None, "-1", "now") and not handle:
        errors["handle"] = ["handle is required unless offset is -1 or now"]
    live = query.get("live") == "true"
    sse = query.get("live_sse") == "true" or query.get("experimental_live_sse") == "true"
    if sse and not live:
        errors["live_sse"] = ["can only be true when live is true"]
    if live and offset in ("-1", "now"):
        errors["live"] = ["can't be true with offset -1 or now"]
    replica = query.get("replica", "default")
    if replica not in ("default", "full"):
        errors["replica"] = ["must be default or full"]
    log = query.get("log", "full")
    if log not in LOG_MODES:
        errors["log"] = [f"{log!r} is not a log mode (allowed: {', '.join(LOG_MODES)})"]
    columns = DEFAULT_COLUMNS
    if query.get("columns"):
        asked = tuple(c.strip().strip('"') for c in query["columns"].split(","))
        unknown = [c for c in asked if c not in SCHEMA]
        repeated = sorted({c for c in asked if asked.count(c) > 1})
        if unknown:
            errors["columns"] = [f"unknown columns: {', '.join(unknown)}"]
        elif repeated:
            errors["columns"] = [f"each column at most once (repeated: {', '.join(repeated)})"]
        elif not set(PK) <= set(asked):
            errors["columns"] = ["must include the primary key columns user_id and date"]
        else:
            columns = asked
    predicate = None
    where_text = query.get("where")
    if where_text:
        try:
            predicate = parse_where(where_text, params)
        except WhereError as exc:
            errors["where"] = [str(exc)]
    parsed_subset = None
    if subset is not None:
        if live:
            errors["live"] = ["a subset snapshot is a stable view of the data: it cannot be live"]
        try:
            parsed_subset = parse_subset(subset)
        except ShapeRequestError as exc:
            errors.update(exc.errors)
    if errors:
        raise ShapeRequestError(errors)
    assert offset is not None
    return ShapeRequest(offset, handle, live, where_text, dict(params), columns, replica, predicate, sse=sse,
                        log=log, subset=parsed_subset)


def key(user_id: int | str, date: str) -> str:
    return f'"public"."{TABLE}"/"{user_id}"/"{date}"'


def shape_value(row: Mapping[str, Any], username: str | None, columns: tuple[str, ...]) -> dict[str, str | None]:
    """The asked columns of a row (a log value: text values of ROW_COLUMNS; an update's may lack some)."""
    full = {**row, "username": username}
    if "stamps" in columns and any(c in row for c in stamps_column.COLUMNS):
        full["stamps"] = stamps_column.encode(row)
    return {c: full.get(c) for c in columns if c in full}


def change_message(
    operation: str, value: dict[str, str | None], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "key": key(value["user_id"] or "", value["date"] or ""),
        "value": value,
        "headers": {"operation": operation, "relation": RELATION, **(headers or {})},
    }


# The columns of `entries` a shape carries (a log value's).
ROW_COLUMNS = tuple(c for c in ALL_COLUMNS if c not in ("username", "stamps"))
_INSERT_HEADERS = json.dumps({"operation": "insert", "relation": RELATION}, separators=(",", ":"))


def row_value(row: Mapping[str, Any]) -> dict[str, Any]:
    """The shape's columns of a table row: the log's value for a change."""
    return {c: row[c] for c in ROW_COLUMNS if c in row}


def row_json(row: Mapping[str, Any]) -> str:
    """The shape's columns of a table row as JSON."""
    return encode(row_value(row))


def stored_message(row: Mapping[str, Any], user_id: int, date: str, username: str | None) -> str:
    """A row's snapshot message with the default columns (the reader stores it with the row, so a
    snapshot of the default columns is a concatenation of stored text, each row encoded once)."""
    value = shape_value(row, username, DEFAULT_COLUMNS)
    return f'{{"key":{encode(key(user_id, date))},"value":{encode(value)},"headers":{_INSERT_HEADERS}}}'


def encode(message: Any) -> str:
    return encode_bytes(message).decode()


def encode_bytes(message: Any) -> bytes:
    """A message as compact JSON, by orjson: a fraction of the json module's time, on the reader's path
    (every change is encoded twice) and every response's. It writes non-ASCII text as UTF-8 where the
    json module wrote \\u escapes: the same JSON to every parser. What orjson refuses (an integer past
    64 bits) goes through the json module."""
    try:
        return orjson.dumps(message)
    except TypeError:
        return json.dumps(message, separators=(",", ":")).encode()


def up_to_date(lsn: int) -> dict[str, Any]:
    return {"headers": {"control": "up-to-date", "global_last_seen_lsn": str(lsn)}}


def sse_event(message: dict[str, Any]) -> bytes:
    """One message as one server-sent event (JSON holds no raw newline, so one `data:` line)."""
    return b"data: " + encode_bytes(message) + b"\n\n"


def sse_up_to_date(position: tuple[int, int]) -> dict[str, Any]:
    """The up-to-date that ends a batch on an SSE stream. There the client takes its next offset from
    this message alone, as `<global_last_seen_lsn>_0`, and offsets are exclusive; so a position inside
    a transaction (op > 0) is sent as the next LSN: after every change of that transaction, and before
    any later one (a later commit's LSN is past this commit record)."""
    lsn, op = position
    return up_to_date(lsn + 1 if op > 0 else lsn)


def snapshot_end(xmin: str, xmax: str, xip: list[str]) -> dict[str, Any]:
    return {"headers": {"control": "snapshot-end", "xmin": xmin, "xmax": xmax, "xip_list": xip}}


def offset_text(position: tuple[int, int]) -> str:
    return f"{position[0]}_{position[1]}"


def live_cursor() -> str:
    """Changes every 20 s, so identical live requests are not collapsed across intervals by caches."""
    return str(int(time.time() // LIVE_HOLD_S))


def schema_header(columns: tuple[str, ...] = DEFAULT_COLUMNS) -> str:
    """The `electric-schema` header: the types of the shape's columns."""
    return json.dumps({c: SCHEMA[c] for c in columns}, separators=(",", ":"))
