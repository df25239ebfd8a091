"""The shape client on its own: parsing, state, errors and retries, against httpx.MockTransport."""

from __future__ import annotations

import datetime as dt
import email.utils
import gc
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sync.shape_client import (
    GC_PAUSE_BYTES,
    ChangeMessage,
    RetryPolicy,
    ShapeAuthError,
    ShapeBatch,
    ShapeCursor,
    ShapeProtocolError,
    ShapeRequestError,
    ShapeStream,
    ShapeUnavailable,
    apply_batch,
    decode_json,
    iter_messages,
    parse_value,
    retry_after_seconds,
)

SCHEMA: dict[str, dict[str, Any]] = {
    "user_id": {"type": "int8", "pk_index": 0, "not_null": True},
    "date": {"type": "date", "pk_index": 1, "not_null": True},
    "steps": {"type": "int4"},
    "score": {"type": "int2"},
    "sleep_hours": {"type": "numeric", "precision": 4, "scale": 2},
    "deleted": {"type": "bool", "not_null": True},
    "note": {"type": "text"},
}
KEY = '"public"."entries"/"7"/"2026-11-20"'
ROW = {"user_id": "7", "date": "2026-11-20", "steps": "8000", "score": "71", "sleep_hours": "7.50",
       "deleted": "f", "note": None}
Handler = Callable[[httpx.Request], httpx.Response]


def insert(value: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    return {"key": key, "value": value, "headers": {"operation": "insert", "relation": ["public", "entries"]}}


def control(name: str) -> dict[str, Any]:
    return {"headers": {"control": name}}


def shape_response(messages: list[dict[str, Any]], offset: str = "100_0", handle: str = "h-1",
                   live: bool = False, up_to_date: bool = False) -> httpx.Response:
    headers = {"electric-handle": handle, "electric-offset": offset}
    if live:
        headers["electric-cursor"] = "c-1"
    else:
        headers["electric-schema"] = json.dumps(SCHEMA)
    if up_to_date:
        headers["electric-up-to-date"] = ""
    return httpx.Response(200, json=messages, headers=headers)


class Recorder:
    """A scripted server: answers in turn (the last one repeats), remembering each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def params(self, index: int) -> dict[str, str]:
        return dict(self.requests[index].url.params)


def stream_with(server: Handler, sleeps: list[float] | None = None, **options: Any) -> ShapeStream:
    record = sleeps if sleeps is not None else []
    return ShapeStream("http://pulse.test", "tok", transport=httpx.MockTransport(server), sleep=record.append,
                       **options)


# -- values and state ------------------------------------------------------------------------------------


def test_values_are_typed_by_the_electric_schema() -> None:
    stream = stream_with(Recorder(shape_response([insert(ROW), control("snapshot-end")])))
    batch = stream.poll()
    assert batch.changes == [ChangeMessage(KEY, "insert", {
        "user_id": 7, "date": dt.date(2026, 11, 20), "steps": 8000, "score": 71, "sleep_hours": Decimal("7.50"),
        "deleted": False, "note": None}, {"operation": "insert", "relation": ["public", "entries"]})]
    assert batch.snapshot_end and not batch.up_to_date and not batch.must_refetch


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("t", "bool", True), ("true", "bool", True), ("f", "bool", False), ("false", "bool", False),
    ("-3", "int4", -3), ("9007199254740993", "int8", 9007199254740993), ("0.10", "numeric", Decimal("0.10")),
    ("1.5", "float8", 1.5), ('{"a": 1}', "jsonb", {"a": 1}), ("2026-02-28", "date", dt.date(2026, 2, 28)),
    ("x", "text", "x"), ("x", "uuid", "x"), (None, "int4", None),
])
def test_each_postgres_text_value_reads_as_its_python_type(text: str | None, kind: str, value: Any) -> None:
    assert parse_value(text, {"type": kind}) == value
    assert type(parse_value(text, {"type": kind})) is type(value)


def test_a_value_that_does_not_read_as_its_type_is_a_protocol_error_naming_the_column() -> None:
    stream = stream_with(Recorder(shape_response([insert({**ROW, "steps": "many"})])))
    with pytest.raises(ShapeProtocolError, match="steps"):
        stream.poll()


def test_a_cursor_survives_a_json_round_trip_and_rejects_what_is_not_a_cursor() -> None:
    cursor = ShapeCursor("h-1", "123_4", "c-9", SCHEMA)
    assert ShapeCursor.from_dict(json.loads(json.dumps(cursor.to_dict()))) == cursor
    assert ShapeCursor.from_dict({}) == ShapeCursor()
    for bad in ({"offset": "0/16B3748", "handle": "h"}, {"offset": "5_0"}, {"handle": 3}, {"schema": [1]}):
        with pytest.raises(ValueError):
            ShapeCursor.from_dict(bad)


def test_apply_batch_inserts_merges_updates_deletes_and_clears_on_must_refetch() -> None:
    rows: dict[str, dict[str, Any]] = {}
    cursor = ShapeCursor()

    def change(op: str, key: str, **value: Any) -> ChangeMessage:
        return ChangeMessage(key, op, value, {"operation": op})

    apply_batch(rows, ShapeBatch([change("insert", "a", x=1, y=2), change("insert", "b", x=3)], cursor))
    apply_batch(rows, ShapeBatch([change("update", "a", y=5), change("delete", "b"), change("delete", "zz")], cursor))
    assert rows == {"a": {"x": 1, "y": 5}}
    apply_batch(rows, ShapeBatch([], cursor, must_refetch=True))
    assert rows == {}


# -- the request sequence -----------------------------------------------------------------------------------


def test_the_stream_walks_snapshot_catch_up_then_live_with_the_servers_handle_offset_and_cursor() -> None:
    server = Recorder(
        shape_response([insert(ROW), control("snapshot-end")], offset="100_0"),
        shape_response([control("up-to-date")], offset="120_1", up_to_date=True),
        shape_response([control("up-to-date")], offset="130_0", live=True, up_to_date=True),
        shape_response([control("up-to-date")], offset="130_0", live=True, up_to_date=True),
    )
    stream = stream_with(server, where="steps > $1", params=["5000"], columns=["user_id", "date", "steps"])
    assert stream.poll(live=True).snapshot_end  # not caught up yet: asked without live
    batches = list(stream.follow())
    assert len(batches) == 1 and batches[0].up_to_date
    stream.poll(live=True)
    stream.poll(live=True)
    assert [server.params(i) for i in range(4)] == [
        {"table": "entries", "where": "steps > $1", "params[1]": "5000", "columns": "user_id,date,steps",
         "offset": "-1"},
        {"table": "entries", "where": "steps > $1", "params[1]": "5000", "columns": "user_id,date,steps",
         "offset": "100_0", "handle": "h-1"},
        {"table": "entries", "where": "steps > $1", "params[1]": "5000", "columns": "user_id,date,steps",
         "offset": "120_1", "handle": "h-1", "live": "true"},
        {"table": "entries", "where": "steps > $1", "params[1]": "5000", "columns": "user_id,date,steps",
         "offset": "130_0", "handle": "h-1", "live": "true", "cursor": "c-1"},
    ]
    assert server.requests[0].headers["authorization"] == "Bearer tok"
    assert stream.cursor == ShapeCursor("h-1", "130_0", "c-1", SCHEMA)  # the schema outlives live responses


def test_a_409_resets_to_a_snapshot_with_the_new_handle_and_reports_must_refetch() -> None:
    server = Recorder(
        httpx.Response(409, json=[control("must-refetch")], headers={"electric-handle": "h-2"}),
        shape_response([insert(ROW), control("snapshot-end")], handle="h-2", offset="200_0"),
        shape_response([control("up-to-date")], handle="h-2", offset="200_0", up_to_date=True),
    )
    stream = stream_with(server, cursor=ShapeCursor("h-1", "150_3", "c-1", SCHEMA))
    batches = list(stream.follow())
    assert batches[0].must_refetch and batches[0].cursor == ShapeCursor("h-2", "-1")
    assert server.params(1) == {"table": "entries", "offset": "-1", "handle": "h-2"}
    rows = {"stale": {"x": 1}}
    for batch in batches:
        apply_batch(rows, batch)
    assert list(rows) == [KEY]


def test_a_must_refetch_inside_a_200_body_resets_like_a_409() -> None:
    stream = stream_with(Recorder(shape_response([insert(ROW), control("must-refetch")], handle="h-3")),
                         cursor=ShapeCursor("h-1", "1_0"))
    batch = stream.poll()
    assert batch.must_refetch and batch.changes == [] and stream.cursor == ShapeCursor("h-3", "-1")


def test_a_server_that_keeps_asking_to_refetch_is_an_error_not_an_endless_loop() -> None:
    stream = stream_with(Recorder(httpx.Response(409, json=[control("must-refetch")],
                                                 headers={"electric-handle": "h-2"})))
    with pytest.raises(ShapeProtocolError, match="refetch"):
        list(stream.follow())


@pytest.mark.parametrize(("live", "missing"), [
    (False, "electric-handle"), (False, "electric-offset"), (False, "electric-schema"), (True, "electric-cursor"),
])
def test_a_200_without_a_required_electric_header_is_a_protocol_error_and_not_retried(
    live: bool, missing: str
) -> None:
    good = shape_response([control("up-to-date")], live=live, up_to_date=True)
    server = Recorder(shape_response([control("up-to-date")], up_to_date=True),
                      httpx.Response(200, json=[], headers={k: v for k, v in good.headers.items() if k != missing}))
    stream = stream_with(server, cursor=ShapeCursor("h-1", "1_0"))
    stream.poll()
    with pytest.raises(ShapeProtocolError, match=missing):
        stream.poll(live=live)
    assert len(server.requests) == 2


# -- errors and retries ---------------------------------------------------------------------------------------


def test_401_is_an_auth_error_after_one_request() -> None:
    server = Recorder(httpx.Response(401, json={"message": "the token is invalid, expired or revoked"}))
    with pytest.raises(ShapeAuthError, match="revoked"):
        stream_with(server).poll()
    assert len(server.requests) == 1


def test_400_is_a_request_error_carrying_the_servers_errors() -> None:
    errors = {"where": ["column 'password' cannot be filtered"]}
    server = Recorder(httpx.Response(400, json={"message": "Invalid request", "errors": errors}))
    with pytest.raises(ShapeRequestError) as caught:
        stream_with(server, where="password = 'x'").poll()
    assert caught.value.errors == errors and "password" in str(caught.value)
    assert len(server.requests) == 1


def test_503_is_retried_waiting_at_least_retry_after_then_succeeds() -> None:
    server = Recorder(
        httpx.Response(503, headers={"retry-after": "3"}),
        httpx.Response(429, headers={"retry-after": "2"}),
        shape_response([control("snapshot-end")]),
    )
    sleeps: list[float] = []
    batch = stream_with(server, sleeps, retry=RetryPolicy(initial_s=0.1, jitter_s=0.1)).poll()
    assert batch.snapshot_end and len(server.requests) == 3
    assert len(sleeps) == 2 and 3 <= sleeps[0] <= 3.2 and 2 <= sleeps[1] <= 2.3


def test_backoff_doubles_with_jitter_up_to_its_cap_and_gives_up_with_shape_unavailable() -> None:
    server = Recorder(httpx.Response(503))
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=7, initial_s=0.5, max_s=4.0, jitter_s=0.25)
    with pytest.raises(ShapeUnavailable) as caught:
        stream_with(server, sleeps, retry=policy).poll()
    assert caught.value.attempts == 7 and "503" in str(caught.value)
    assert len(server.requests) == 7 and len(sleeps) == 6
    for sleep, base in zip(sleeps, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert base <= sleep <= base + 0.25


def test_a_retry_after_beyond_the_cap_is_capped_and_an_http_date_is_understood() -> None:
    policy = RetryPolicy(initial_s=0.1, jitter_s=0, retry_after_max_s=30)
    assert policy.delay(1, 3600) == 30
    assert policy.delay(1, None) == 0.1
    later = email.utils.formatdate(1_000_060, usegmt=True)
    assert retry_after_seconds(later, now=lambda: 1_000_000) == 60
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_network_errors_are_retried_and_named_when_they_outlast_the_attempts() -> None:
    flaky = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), shape_response([]))
    assert stream_with(flaky).poll().changes == []
    assert len(flaky.requests) == 3
    down = Recorder(httpx.ConnectError("connection refused"))
    with pytest.raises(ShapeUnavailable, match="ConnectError: connection refused") as caught:
        stream_with(down, retry=RetryPolicy(attempts=3)).poll()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# -- bodies read as they arrive ------------------------------------------------------------------------


def test_a_body_split_anywhere_gives_the_same_messages_one_by_one() -> None:
    messages = [insert({**ROW, "note": f"é ✓ \"{i}\" ]["}, key=f'"public"."entries"/"7"/"{i}"') for i in range(300)]
    messages.append(control("up-to-date"))
    data = json.dumps(messages, ensure_ascii=False).encode()
    for size in (1, 7, 64, 4096, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert list(iter_messages(chunks)) == messages, size


@pytest.mark.parametrize("body", [b'{"headers": {}}', b'[{"headers": {}}', b'[{"headers": {}}] x', b'[{"a": ]'])
def test_a_body_that_is_not_a_whole_json_array_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ShapeProtocolError):
        list(iter_messages([body]))


def test_poll_parts_yields_bounded_parts_and_moves_the_cursor_only_with_the_last() -> None:
    rows = [insert({**ROW, "date": f"2026-11-{d:02d}"}, key=f'"public"."entries"/"7"/"{d}"') for d in range(1, 26)]
    server = Recorder(shape_response([*rows, control("snapshot-end")], offset="50_0"))
    stream = stream_with(server)
    seen = []
    for part in stream.poll_parts(part_size=10):
        seen.append((len(part.changes), part.complete, part.fresh))
        if not part.complete:
            assert stream.cursor.offset == "-1", "the cursor waits for the whole response"
    assert seen == [(10, False, True), (10, False, False), (5, True, False)]
    assert stream.cursor.offset == "50_0" and stream.cursor.handle == "h-1"


def test_poll_parts_answers_a_409_as_one_must_refetch_part() -> None:
    stream = stream_with(Recorder(httpx.Response(409, json=[control("must-refetch")],
                                                 headers={"electric-handle": "h-2"})),
                         cursor=ShapeCursor("h-1", "10_0"))
    (part,) = list(stream.poll_parts())
    assert part.must_refetch and part.complete and stream.cursor == ShapeCursor("h-2", "-1")


class _BrokenBody(httpx.SyncByteStream):
    """A body that breaks off after its first bytes, as a dropped connection does."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Any:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset")


def test_a_body_that_breaks_off_is_asked_again_and_a_snapshot_starts_again_fresh() -> None:
    rows = [insert({**ROW, "date": f"2026-11-{d:02d}"}, key=f'"public"."entries"/"7"/"{d}"') for d in range(1, 21)]
    whole = shape_response([*rows, control("snapshot-end")], offset="50_0")
    data = json.dumps([*rows, control("snapshot-end")]).encode()
    broken = httpx.Response(200, headers=dict(whole.headers), stream=_BrokenBody(data, len(data) // 2))
    server = Recorder(broken, whole)
    sleeps: list[float] = []
    stream = stream_with(server, sleeps, retry=RetryPolicy(attempts=3, initial_s=0.01, jitter_s=0))
    parts = list(stream.poll_parts(part_size=5))
    assert len(server.requests) == 2 and server.params(1)["offset"] == "-1" and len(sleeps) == 1
    fresh = [i for i, p in enumerate(parts) if p.fresh]
    assert len(fresh) == 2, "each attempt's first part restarts the snapshot"
    assert [c.value["date"].day for p in parts[fresh[1]:] for c in p.changes] == list(range(1, 21))
    assert parts[-1].complete and stream.cursor.offset == "50_0"


def test_a_body_that_keeps_breaking_off_is_unavailable_after_the_attempts() -> None:
    data = json.dumps([insert(ROW)] * 10).encode()
    headers = dict(shape_response([]).headers)
    server = Recorder(*[httpx.Response(200, headers=headers, stream=_BrokenBody(data, 30)) for _ in range(2)])
    stream = stream_with(server, retry=RetryPolicy(attempts=2, initial_s=0.01, jitter_s=0))
    with pytest.raises(ShapeUnavailable):
        list(stream.poll_parts(part_size=1))
    assert stream.cursor.offset == "-1"


@pytest.mark.parametrize("collector_on", [True, False])
def test_a_large_body_parses_the_same_and_leaves_the_collector_as_it_was(collector_on: bool) -> None:
    messages = [{"key": f'"public"."entries"/"7"/"{n}"', "value": {"steps": str(n), "note": None},
                 "headers": {"operation": "insert", "relation": ["public", "entries"]}} for n in range(20_000)]
    body = json.dumps(messages).encode()
    assert len(body) > GC_PAUSE_BYTES  # the path that holds the collector off
    was = gc.isenabled()
    try:
        if not collector_on:
            gc.disable()
        assert decode_json(body) == messages
        assert gc.isenabled() is collector_on
    finally:
        gc.enable() if was else gc.disable()


def test_messages_come_out_while_the_rest_of_the_body_is_still_to_come() -> None:
    messages = [insert({**ROW, "note": f'{{"key": {i}}}, ,{{"key":'}, key=f'"public"."entries"/"7"/"{i}"')
                for i in range(100)]
    data = json.dumps(messages, separators=(",", ":")).encode()
    received: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            received.append(i)
            yield data[i:i + 1000]

    seen_at: list[int] = []
    out = []
    for message in iter_messages(chunks()):
        out.append(message)
        seen_at.append(len(received))
    assert out == messages  # notes that look like a boundary do not split a message
    assert seen_at[len(messages) // 2] < len(received)  # half of them before the last read
