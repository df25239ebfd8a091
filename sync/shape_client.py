"""A client for the Electric HTTP Shape protocol (`GET /v1/shape`), as the device's sync agent follows it.

Written from the protocol (docs/shape-protocol.md; Electric's HTTP API), not from our server's code.
One `ShapeStream` follows one shape; its state is a `ShapeCursor` (handle, offset, live cursor, schema)
that the caller persists after applying each batch and passes back to resume, with no re-snapshot.

    stream = ShapeStream(url, token, cursor=saved)
    for batch in stream.follow():           # catch up (snapshot first on a fresh cursor)
        apply_batch(rows, batch)            # a must-refetch batch clears `rows` first
        save(batch.cursor)
    batch = stream.poll(live=True)          # held by the server until something changes

A 409 resets the stream to `offset=-1` with the server's new handle and comes back as a batch with
`must_refetch`: the caller drops its copy of the shape's rows (never its outbox of unsent writes).

Errors are the package's one hierarchy (`sync.errors`; httpx errors are wrapped, with `raise ... from`):
`ShapeAuthError` (an `AuthExpired`), `ShapeRequestError` (a `ServerRefused`), `ShapeUnavailable` (an
`Offline`) and `ShapeProtocolError`, all `ShapeError`s. Retries follow the one policy of `sync.retry`.
"""

from __future__ import annotations

import collections
import datetime as dt
import gc
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx
import orjson

from sync.errors import ShapeAuthError, ShapeProtocolError, ShapeRequestError, ShapeUnavailable
from sync.retry import Retryable, RetryPolicy, retry_after_seconds, retrying

OFFSET_BEFORE_SNAPSHOT = "-1"
_OFFSET = re.compile(r"^(-1|now|\d+_\d+)$")
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# What a request is asked again for: those statuses, and the network failing under it.
_RETRIED = (Retryable, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
Schema = dict[str, dict[str, Any]]
Row = dict[str, Any]
_Rows = TypeVar("_Rows", bound=MutableMapping[str, Row])


@dataclass(frozen=True)
class ShapeCursor:
    """Where a stream stands: what the caller persists and gives back to resume."""

    handle: str | None = None
    offset: str = OFFSET_BEFORE_SNAPSHOT
    cursor: str | None = None  # the server's live cursor (`electric-cursor`), sent back on live requests
    schema: Schema | None = None  # `electric-schema`: live responses do not carry it, so it is kept here

    def __post_init__(self) -> None:
        if not _OFFSET.match(self.offset):
            raise ValueError(f"offset {self.offset!r} is not -1, now or <lsn>_<op>")
        if self.offset not in ("-1", "now") and not self.handle:
            raise ValueError(f"offset {self.offset} needs the handle it belongs to")

    def to_dict(self) -> dict[str, Any]:
        return {"handle": self.handle, "offset": self.offset, "cursor": self.cursor, "schema": self.schema}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeCursor:
        handle, cursor, schema = data.get("handle"), data.get("cursor"), data.get("schema")
        offset = data.get("offset", OFFSET_BEFORE_SNAPSHOT)
        if not all(v is None or isinstance(v, str) for v in (handle, cursor)) or not isinstance(offset, str):
            raise ValueError(f"not a shape cursor: {dict(data)!r}")
        if schema is not None and not _is_schema(schema):
            raise ValueError(f"not a shape schema: {schema!r}")
        return cls(handle, offset, cursor, schema)


@dataclass(frozen=True)
class ChangeMessage:
    key: str
    operation: str  # insert | update | delete
    value: Row  # typed by the schema; an update holds the key and the changed columns, a delete the key
    headers: dict[str, Any]
    old_value: Row | None = None  # with replica=full


@dataclass(frozen=True)
class ShapeBatch:
    """What one request gave: its changes in order, the control flags, and the cursor to save after them."""

    changes: list[ChangeMessage]
    cursor: ShapeCursor
    up_to_date: bool = False
    must_refetch: bool = False
    snapshot_end: bool = False
    controls: list[dict[str, Any]] = field(default_factory=list)  # control messages' headers, as sent
    # With `poll_parts`: False for a part of a response still being read (save no cursor after it), and
    # `fresh` on the first part of a response from offset -1 (a snapshot: the copy starts again).
    complete: bool = True
    fresh: bool = False


# -- values ------------------------------------------------------------------------------------------


def _bool(text: str) -> bool:
    return text in ("t", "true")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int2": int, "int4": int, "int8": int, "oid": int,
    "float4": float, "float8": float,
    "numeric": Decimal,
    "bool": _bool,
    "date": dt.date.fromisoformat,
    "json": json.loads, "jsonb": json.loads,
}


def parse_value(text: str | None, column: Mapping[str, Any] | None) -> Any:
    """A Postgres text-format value as Python, by its schema entry (text, and unknown types, stay str)."""
    if text is None:
        return None
    if column is None or column.get("dims"):  # arrays stay in their text form
        return text
    parse = _PARSERS.get(str(column.get("type")), str)
    return parse(text)


def parse_row(value: Mapping[str, Any], schema: Schema | None) -> Row:
    schema = schema or {}
    row: Row = {}
    for name, text in value.items():
        if text is not None and not isinstance(text, str):
            raise ShapeProtocolError(f"column {name}: {text!r} is not a text-format value")
        try:
            row[name] = parse_value(text, schema.get(name))
        except (ValueError, InvalidOperation) as exc:
            kind = schema.get(name, {}).get("type")
            raise ShapeProtocolError(f"column {name}: {text!r} is not a valid {kind}") from exc
    return row


def _is_schema(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items())


# -- the stream ----------------------------------------------------------------------------------------


class _BodyBroken(Exception):
    """A response whose body broke off after its first parts were given out."""


class ShapeStream:
    """Follows one shape of one table for one bearer token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        table: str = "entries",
        where: str | None = None,
        params: Sequence[str] = (),
        columns: Sequence[str] | None = None,
        replica: str = "default",
        cursor: ShapeCursor | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 30.0,
        live_timeout_s: float = 45.0,  # the server holds a live request about 20 s
    ) -> None:
        self.http = httpx.Client(base_url=base_url, transport=transport, headers={"Authorization": f"Bearer {token}"})
        self.shape: dict[str, str] = {"table": table}
        if where:
            self.shape["where"] = where
            self.shape.update({f"params[{n}]": value for n, value in enumerate(params, start=1)})
        if columns:
            self.shape["columns"] = ",".join(columns)
        if replica != "default":
            self.shape["replica"] = replica
        self.cursor = cursor or ShapeCursor()
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.timeout_s = timeout_s
        self.live_timeout_s = live_timeout_s
        # Electric's client goes live only once it has caught up; a restored cursor catches up first too.
        self.caught_up = False

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ShapeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, live: bool = False) -> ShapeBatch:
        """One request (retried on 5xx/429/network errors): the batch it gave; the stream moves past it.

        `live=True` is held by the server until a change arrives (or about 20 s); as in Electric's client it
        is honoured only once the stream has caught up, so a fresh or restored stream asks non-live first."""
        live = live and self.caught_up and self.cursor.offset not in ("-1", "now")
        response = self._get(self._query(live), live)
        batch = self._batch(response, live)
        self.cursor = batch.cursor
        self.caught_up = batch.up_to_date or (self.caught_up and not batch.must_refetch)
        return batch

    def poll_parts(self, live: bool = False, part_size: int = 2_000) -> Iterator[ShapeBatch]:
        """`poll`, with the body read and parsed as it arrives: parts of at most `part_size` changes, so a
        snapshot of any size passes through in bounded memory. Only the last part is `complete` (it has
        the control flags); the stream moves past the response once that part is taken."""
        live = live and self.caught_up and self.cursor.offset not in ("-1", "now")
        fresh = self.cursor.offset == OFFSET_BEFORE_SNAPSHOT
        for attempt in range(1, self.retry.attempts + 1):
            response = self._get(self._query(live), live, stream=True)
            try:
                if response.status_code != 200:
                    response.read()
                    parts: Iterator[ShapeBatch] = iter([self._batch(response, live)])
                else:
                    parts = self._parts(response, live, part_size, fresh)
                for part in parts:
                    if part.complete:
                        self.cursor = part.cursor
                        self.caught_up = part.up_to_date or (self.caught_up and not part.must_refetch)
                    yield part
                return
            except _BodyBroken as exc:  # the same request again: a snapshot from its start (fresh again)
                if attempt == self.retry.attempts:
                    raise ShapeUnavailable(attempt, _describe(exc.__cause__)) from exc.__cause__
                self.sleep(self.retry.delay(attempt))
            finally:
                response.close()

    def _parts(self, response: httpx.Response, live: bool, part_size: int, fresh: bool) -> Iterator[ShapeBatch]:
        cursor = self._next_cursor(response, live)
        changes: list[ChangeMessage] = []
        controls: list[dict[str, Any]] = []
        try:
            for message in iter_messages(response.iter_bytes()):
                headers = message.get("headers") if isinstance(message, dict) else None
                if not isinstance(headers, dict):
                    raise ShapeProtocolError(f"a message without headers: {message!r}")
                if "control" in headers:
                    controls.append(headers)
                    if headers["control"] == "must-refetch":
                        yield self._refetch(cursor.handle)
                        return
                elif "key" in message:
                    changes.append(_change(message, headers, cursor.schema))
                    if len(changes) >= part_size:
                        yield ShapeBatch(changes, cursor, complete=False, fresh=fresh)
                        changes, fresh = [], False
        except httpx.HTTPError as exc:  # the body broke off: what was applied stays, the cursor does not move
            raise _BodyBroken() from exc
        kinds = {c["control"] for c in controls}
        yield ShapeBatch(
            changes, cursor, up_to_date="up-to-date" in kinds or "electric-up-to-date" in response.headers,
            snapshot_end="snapshot-end" in kinds, controls=controls, fresh=fresh,
        )

    def follow_parts(self, max_refetches: int = 3, part_size: int = 2_000) -> Iterator[ShapeBatch]:
        """`follow`, in parts (see `poll_parts`)."""
        refetches = 0
        while True:
            last = None
            for part in self.poll_parts(live=False, part_size=part_size):
                yield part
                last = part
            assert last is not None and last.complete
            if last.up_to_date:
                return
            if last.must_refetch:
                refetches += 1
                if refetches > max_refetches:
                    raise ShapeProtocolError(f"the server asked to refetch {refetches} times in a row")
            else:
                refetches = 0

    def follow(self, max_refetches: int = 3) -> Iterator[ShapeBatch]:
        """Non-live batches until the shape is up to date (a must-refetch batch is yielded, then refetched)."""
        refetches = 0
        while True:
            batch = self.poll(live=False)
            yield batch
            if batch.up_to_date:
                return
            if batch.must_refetch:
                refetches += 1
                if refetches > max_refetches:
                    raise ShapeProtocolError(f"the server asked to refetch {refetches} times in a row")
            else:
                refetches = 0

    # -- one request ---------------------------------------------------------------------------------
    def _query(self, live: bool) -> dict[str, str]:
        query = {**self.shape, "offset": self.cursor.offset}
        if self.cursor.handle:
            query["handle"] = self.cursor.handle
        if live:
            query["live"] = "true"
            if self.cursor.cursor:
                query["cursor"] = self.cursor.cursor
        return query

    def _get(self, query: dict[str, str], live: bool, stream: bool = False) -> httpx.Response:
        timeout = self.live_timeout_s if live else self.timeout_s
        try:
            response: httpx.Response = retrying(self.retry, self.sleep, _RETRIED)(self._attempt, query, timeout,
                                                                                 stream)
        except _RETRIED as exc:  # the attempts are spent
            raise ShapeUnavailable(self.retry.attempts, _describe(exc)) from exc
        return response

    def _attempt(self, query: dict[str, str], timeout: float, stream: bool = False) -> httpx.Response:
        request = self.http.build_request("GET", "/v1/shape", params=query, timeout=timeout)
        response = self.http.send(request, stream=stream)
        if response.status_code in _RETRIED_STATUSES:
            response.close()
            raise Retryable(f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("retry-after")))
        return response

    def _batch(self, response: httpx.Response, live: bool) -> ShapeBatch:
        status = response.status_code
        if status == 409:
            return self._refetch(response.headers.get("electric-handle"))
        if status in (401, 403):
            raise ShapeAuthError(status, _message(response))
        if 400 <= status < 500:
            errors = _json_or_none(response)
            found = errors.get("errors") if isinstance(errors, dict) else None
            raise ShapeRequestError(status, _message(response), found if isinstance(found, dict) else {})
        if status == 204:  # older servers: nothing new, up to date
            return ShapeBatch([], self.cursor, up_to_date=True)
        if status != 200:
            raise ShapeProtocolError(f"unexpected HTTP {status} from the shape endpoint")
        cursor = self._next_cursor(response, live)
        body = _json_or_none(response)
        if not isinstance(body, list) or not all(isinstance(m, dict) for m in body):
            raise ShapeProtocolError("the shape response body is not a JSON array of messages")
        changes: list[ChangeMessage] = []
        controls: list[dict[str, Any]] = []
        for message in body:
            headers = message.get("headers")
            if not isinstance(headers, dict):
                raise ShapeProtocolError(f"a message without headers: {message!r}")
            if "control" in headers:
                controls.append(headers)
                if headers["control"] == "must-refetch":
                    return self._refetch(cursor.handle)
            elif "key" in message:
                changes.append(_change(message, headers, cursor.schema))
        kinds = {c["control"] for c in controls}
        return ShapeBatch(
            changes, cursor, up_to_date="up-to-date" in kinds or "electric-up-to-date" in response.headers,
            snapshot_end="snapshot-end" in kinds, controls=controls,
        )

    def _refetch(self, handle: str | None) -> ShapeBatch:
        reset = ShapeCursor(handle=handle)
        return ShapeBatch([], reset, must_refetch=True, controls=[{"control": "must-refetch"}])

    def _next_cursor(self, response: httpx.Response, live: bool) -> ShapeCursor:
        headers = response.headers
        required = ["electric-handle", "electric-offset", "electric-cursor" if live else "electric-schema"]
        missing = [name for name in required if name not in headers]
        if missing:
            raise ShapeProtocolError(f"the shape response lacks {', '.join(missing)}")
        schema = self.cursor.schema
        if "electric-schema" in headers:
            try:
                schema = json.loads(headers["electric-schema"])
            except json.JSONDecodeError as exc:
                raise ShapeProtocolError("electric-schema is not JSON") from exc
            if not _is_schema(schema):
                raise ShapeProtocolError(f"electric-schema is not a schema: {schema!r}")
        try:
            return replace(self.cursor, handle=headers["electric-handle"], offset=headers["electric-offset"],
                           cursor=headers.get("electric-cursor", self.cursor.cursor), schema=schema)
        except ValueError as exc:
            raise ShapeProtocolError(str(exc)) from exc


def _change(message: Mapping[str, Any], headers: dict[str, Any], schema: Schema | None) -> ChangeMessage:
    operation, value, old = headers.get("operation"), message.get("value", {}), message.get("old_value")
    if operation not in ("insert", "update", "delete") or not isinstance(value, dict):
        raise ShapeProtocolError(f"not a change message: {dict(message)!r}")
    return ChangeMessage(
        key=str(message["key"]), operation=operation, value=parse_row(value, schema), headers=headers,
        old_value=parse_row(old, schema) if isinstance(old, dict) else None,
    )


# Where one message of the array ends and the next change begins. In Electric's wire format this is
# only ever between two messages of the array: every value is a string, and inside a JSON string a
# quote is escaped, so `{"key":` cannot occur in one; no nested object is an array element.
_NEXT_CHANGE = re.compile(rb',\s*(?=\{\s*"key"\s*:)')
_OVERLAP = 16  # bytes searched again, for a boundary split between two reads


def iter_messages(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The values of a JSON array read as its bytes arrive: the messages received so far are parsed
    (orjson) at each read, up to the last boundary between two of them, while the rest of the body is
    still on its way; so a body of any size is never held at once (Electric sends one array per
    response), and parsing overlaps the transfer."""
    buffer = bytearray()
    started = False
    searched = 0  # how much of `buffer` was searched for a boundary
    for chunk in chunks:
        buffer += chunk
        if not started:
            head = buffer.lstrip()
            if not head:
                continue
            if head[:1] != b"[":
                raise ShapeProtocolError("the shape response body is not a JSON array of messages")
            buffer, started, searched = bytearray(head[1:]), True, 0
        found = collections.deque(_NEXT_CHANGE.finditer(buffer, max(0, searched - _OVERLAP)), maxlen=1)
        if found:
            segment = bytes(buffer[:found[0].start()])
            del buffer[:found[0].end()]
            yield from _parse_segment(segment)
        searched = len(buffer)
    rest = bytes(buffer).rstrip()
    if not started or not rest.endswith(b"]"):
        raise ShapeProtocolError("the shape response body is not a JSON array of messages")
    yield from _parse_segment(rest[:-1])


def _parse_segment(segment: bytes) -> list[Any]:
    """Messages of the array, written one after another with commas: as a list."""
    if not segment.strip():
        return []
    try:
        parsed: list[Any] = orjson.loads(b"[" + segment + b"]")
    except orjson.JSONDecodeError:
        raise ShapeProtocolError("the shape response body is not valid JSON") from None
    return parsed


GC_PAUSE_BYTES = 1 << 20


def decode_json(data: bytes) -> Any:
    """A response body's JSON: orjson, several times faster than the json module on a large snapshot.
    The cyclic collector is held off while a large body is parsed: the containers it builds set off
    passes over every one built so far (a third of the parse of a coach's year, bench/shape_catchup.py),
    and JSON makes no cycles."""
    if len(data) < GC_PAUSE_BYTES or not gc.isenabled():
        return orjson.loads(data)
    gc.disable()
    try:
        parsed = orjson.loads(data)
        # The new containers go straight to the oldest generation (freeze, then unfreeze): otherwise the
        # first collections after this would walk every one of them again, twice, on their way there.
        gc.freeze()
        gc.unfreeze()
        return parsed
    finally:
        gc.enable()


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return decode_json(response.content)
    except ValueError:  # orjson.JSONDecodeError is one
        return None


def _message(response: httpx.Response) -> str:
    body = _json_or_none(response)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200] or response.reason_phrase


def _describe(error: BaseException | None) -> str:
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__}: {error}"
    return str(error)


# -- applying batches ----------------------------------------------------------------------------------


def apply_batch(rows: _Rows, batch: ShapeBatch) -> _Rows:
    """Apply one batch to a copy of the shape keyed by message key: insert, merge an update, delete.

    A must-refetch batch clears the copy first (the refetch brings the rows back)."""
    if batch.must_refetch:
        rows.clear()
    for change in batch.changes:
        if change.operation == "delete":
            rows.pop(change.key, None)
        elif change.operation == "update":
            rows[change.key] = {**rows.get(change.key, {}), **change.value}
        else:
            rows[change.key] = dict(change.value)
    return rows
