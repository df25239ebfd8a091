"""The push endpoint under load: at most a few pushes at work at once, a bounded queue, 503 beyond it;
and the push body's form checked by hand exactly as its documented schema says."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from own_thread import run_in_own_thread
from server_support import Api, ServerProcess, User, error_body, now_ms, set_mutation, stamp

from pulse_server.errors import ApiError
from pulse_server.ratelimit import ConcurrencyGate

DAY = "2026-11-20"


def test_the_gate_answers_503_with_retry_after_when_its_workers_and_queue_are_full() -> None:
    gate = ConcurrencyGate(limit=1, queue=1, retry_after_s=2)
    release = threading.Event()
    outcomes: dict[str, Any] = {}

    def slow() -> str:
        release.wait(5)
        return "slow done"

    async def call(name: str, work: Callable[[], str]) -> None:
        try:
            outcomes[name] = await gate.run(work)
        except ApiError as exc:
            outcomes[name] = exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "running", slow)
            await anyio.sleep(0.05)
            tg.start_soon(call, "queued", lambda: "queued done")
            await anyio.sleep(0.05)
            await call("shed", lambda: "never")
            release.set()
        await call("after", lambda: "after done")

    run_in_own_thread(main)
    assert outcomes["running"] == "slow done" and outcomes["queued"] == "queued done"
    assert outcomes["after"] == "after done"
    shed = outcomes["shed"]
    assert isinstance(shed, ApiError) and shed.status == 503 and shed.code == "unavailable"
    assert shed.headers == {"Retry-After": "2"} and gate.shed == 1


def _wait_for_advisory_waiter(pg: psycopg.Connection[Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()
        if row and row[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the push never waited for the lock")


def test_a_push_beyond_the_busy_workers_and_full_queue_is_shed_with_503_and_the_one_in_progress_applies(
    start_server: Callable[..., ServerProcess], make_user: Callable[..., User], database_url: str,
    pg: psycopg.Connection[Any],
) -> None:
    busy = start_server(push_concurrency="1", push_queue_limit="0")
    user = make_user()
    ms = now_ms()
    first = [set_mutation(1, DAY, {"steps": 1111}, stamp(ms, 0, "held"))]
    answers: dict[str, httpx.Response] = {}
    with psycopg.connect(database_url, autocommit=True) as holder:
        # Hold the lock the push of client "held" takes first, so that push keeps the only worker busy.
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, %s))", ("held", user.id))
        held_api = Api(busy.url, user.token)
        pusher = threading.Thread(target=lambda: answers.setdefault("held", held_api.push("held", first)))
        pusher.start()
        try:
            _wait_for_advisory_waiter(pg)
            with Api(busy.url, user.token) as api:
                shed = api.push("other", [set_mutation(1, DAY, {"sleep_hours": 7}, stamp(ms, 0, "other"))])
        finally:
            holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, %s))", ("held", user.id))
            pusher.join(30)
            held_api.close()
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert error_body(shed)["code"] == "unavailable"
    held = answers["held"]
    assert held.status_code == 200 and held.json()["results"][0]["status"] == "applied"
    with Api(busy.url, user.token) as api:
        assert api.entry(DAY) is not None and api.entry(DAY)["steps"] == 1111  # type: ignore[index]
        again = api.push("other", [set_mutation(1, DAY, {"sleep_hours": 7}, stamp(ms, 0, "other"))])
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "applied"  # shed: nothing recorded


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b"[]", "body"),
    (b'{"client_id": "c", "mutations": []}', "protocol"),
    (b'{"protocol": "1", "client_id": "c", "mutations": []}', "protocol"),
    (b'{"protocol": true, "client_id": "c", "mutations": []}', "protocol"),
    (b'{"protocol": 1, "client_id": "bad id", "mutations": []}', "client_id"),
    (b'{"protocol": 1, "client_id": "c\\n", "mutations": []}', "client_id"),
    (b'{"protocol": 1, "client_id": "c", "mutations": {}}', "mutations"),
    (b'{"protocol": 1, "client_id": "c", "mutations": [7]}', "mutations.0"),
    (b'{"protocol": 1, "client_id": "c", "mutations": [{"seq": 1}, {"op": "set"}]}', "mutations.1.seq"),
    (b'{"protocol": 1, "client_id": "c", "mutations": [{"seq": -1}]}', "mutations.0.seq"),
    (b'{"protocol": 1, "client_id": "c", "mutations": [{"seq": 9223372036854775808}]}', "mutations.0.seq"),
    (b'{"protocol": 1, "client_id": "c", "mutations": [{"seq": 1.5}]}', "mutations.0.seq"),
    (b'{"protocol": 1, "client_id": "c", "mutations": [{"seq": false}]}', "mutations.0.seq"),
])
def test_a_push_body_of_the_wrong_form_is_400_naming_the_first_thing_wrong(
    make_user: Callable[..., User], client: Callable[..., Api], body: bytes, field: str
) -> None:
    api = client(make_user())
    response = api.http.post("/v1/sync/push", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert error_body(response)["code"] == "bad_request" and error_body(response)["field"] == field


def test_the_openapi_schema_still_documents_the_push_body_and_its_results(server: ServerProcess) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    push = schema["paths"]["/v1/sync/push"]["post"]
    body = push["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["protocol", "client_id", "mutations"]
    assert body["properties"]["mutations"]["items"]["required"] == ["seq"]
    assert "PushResponse" in str(push["responses"]["200"])


def test_results_leave_out_nulls_exactly_as_the_documented_response_model_would() -> None:
    from pulse_server.api.schemas import MutationResult
    from sync.wire import push_response

    results = [
        {"seq": 1, "status": "applied", "hlc": "0001764230400123:00000:dev"},
        {"seq": 2, "status": "rejected", "error": {"code": "invalid_op", "message": "op: None", "field": "op",
                                                   "value": None, "allowed": None}},
        {"seq": 3, "status": "conflict", "hlc": "h", "clamped_from": None,
         "conflicts": [{"field": "note", "kept": None, "lost": "x", "kept_hlc": "a", "lost_hlc": None,
                        "rule": "lww@2"}]},
        {"seq": 4, "status": "duplicate", "original_status": "applied", "hlc": "h"},
    ]
    for result in results:
        expected = MutationResult.model_validate(result).model_dump(mode="json", exclude_none=True)
        assert push_response(0, None, None, 500, None, [result])["results"] == [expected]
