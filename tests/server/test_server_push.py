"""Push semantics over real HTTP: exactly once, one bad mutation alone, conflicts, tombstones, clocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from server_support import Api, User, delete_mutation, now_ms, set_mutation, stamp

DAY = "2026-11-25"
OTHER_DAY = "2026-11-24"


def _applied_count(pg: psycopg.Connection[Any], user: User) -> int:
    row = pg.execute("SELECT count(*) FROM applied_mutations WHERE user_id = %s", (user.id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_pushed_three_times_applies_once_and_replays_return_the_original_results(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    ms = now_ms()
    batch = [
        set_mutation(1, DAY, {"steps": 9000, "sleep_hours": 7.5}, stamp(ms, 0, "phone")),
        set_mutation(2, OTHER_DAY, {"hrv_ms": 55}, stamp(ms, 1, "phone")),
        delete_mutation(3, OTHER_DAY, stamp(ms, 2, "phone"), base={"hrv_ms": stamp(ms, 1, "phone")}),
    ]
    first = api.pushed("phone", batch)
    assert [r["status"] for r in first["results"]] == ["applied", "applied", "applied"]
    assert [r["seq"] for r in first["results"]] == [1, 2, 3]
    entries = api.entries()
    count = _applied_count(pg, user)
    assert count == 3
    for _ in range(2):
        replay = api.pushed("phone", batch)
        for original, again in zip(first["results"], replay["results"], strict=True):
            assert again["status"] == "duplicate"
            assert again["original_status"] == original["status"]
            assert {k: v for k, v in again.items() if k not in ("status", "original_status")} == {
                k: v for k, v in original.items() if k != "status"}
        assert api.entries() == entries
        assert _applied_count(pg, user) == count


def test_a_seq_repeated_within_one_batch_is_a_duplicate_of_its_first_occurrence_or_a_clash_if_it_differs(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    first = set_mutation(1, DAY, {"steps": 100}, stamp(ms, 0, "phone"))
    results = api.pushed("phone", [first, dict(first),
                                   set_mutation(1, DAY, {"steps": 999}, stamp(ms, 1, "phone"))])["results"]
    assert [(r["status"], r.get("original_status")) for r in results] == [
        ("applied", None), ("duplicate", "applied"), ("clash", None)]
    assert results[2]["error"]["code"] == "client_id_reused"
    entry = api.entry(DAY)
    assert entry is not None and entry["steps"] == 100


def test_the_same_batch_pushed_by_eight_threads_at_once_applies_exactly_once(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    ms = now_ms()
    batch = [set_mutation(seq, f"2026-11-{seq:02d}", {"steps": 1000 + seq}, stamp(ms, seq, "tablet"))
             for seq in range(1, 21)]
    apis = [client(user) for _ in range(8)]
    barrier = threading.Barrier(len(apis))
    answers: list[dict[str, Any]] = []
    statuses: list[int] = []

    def push(api: Api) -> None:
        barrier.wait()
        response = api.push("tablet", batch)
        statuses.append(response.status_code)
        answers.append(response.json())

    threads = [threading.Thread(target=push, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * 8
    kinds = sorted("+".join(sorted({r["status"] for r in answer["results"]})) for answer in answers)
    assert kinds == ["applied"] + ["duplicate"] * 7  # one whole batch applied, every other answer a replay
    assert _applied_count(pg, user) == 20
    assert [e["steps"] for e in apis[0].entries()] == [1000 + seq for seq in range(1, 21)]


def test_one_bad_mutation_is_rejected_alone_while_the_rest_of_its_batch_applies(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    batch = [
        set_mutation(1, DAY, {"steps": 4000}, stamp(ms, 0, "watch")),
        set_mutation(2, DAY, {"sleep_hours": 30}, stamp(ms, 1, "watch")),
        {"seq": 3, "date": DAY, "op": "upsert", "fields": {"note": "x"}, "hlc": stamp(ms, 2, "watch")},
        set_mutation(4, DAY, {"note": "ok"}, f"{ms}:3:watch"),  # not the fixed-width form
        set_mutation(5, "not-a-date", {"note": "ok"}, stamp(ms, 4, "watch")),
        set_mutation(6, OTHER_DAY, {"weight_kg": 70.5}, stamp(ms, 5, "watch")),
    ]
    results = api.pushed("watch", batch)["results"]
    assert [r["status"] for r in results] == ["applied", "rejected", "rejected", "rejected", "rejected", "applied"]
    errors = [r.get("error") for r in results]
    assert errors[1] == {"code": "out_of_range", "message": "sleep_hours: 30 is out of range (allowed 0 to 24 h)",
                         "field": "sleep_hours", "value": "30", "allowed": "0 to 24 h"}
    assert (errors[2]["code"], errors[2]["field"], errors[2]["value"]) == ("invalid_op", "op", "upsert")
    assert (errors[3]["code"], errors[3]["field"]) == ("invalid_hlc", "hlc")
    assert (errors[4]["code"], errors[4]["field"], errors[4]["value"]) == ("invalid_date", "date", "not-a-date")
    entries = {e["date"]: e for e in api.entries()}
    assert entries[DAY]["steps"] == 4000 and entries[DAY]["sleep_hours"] is None and entries[DAY]["note"] is None
    assert entries[OTHER_DAY]["weight_kg"] == 70.5


def test_a_replayed_rejected_mutation_stays_rejected_and_one_changed_under_its_seq_is_a_clash(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    hlc = stamp(now_ms(), 0, "laptop")
    rejected = api.pushed("laptop", [set_mutation(7, DAY, {"steps": -5}, hlc)])["results"][0]
    assert rejected["status"] == "rejected" and rejected["error"]["code"] == "out_of_range"
    again = api.pushed("laptop", [set_mutation(7, DAY, {"steps": -5}, hlc)])["results"][0]
    assert again["status"] == "duplicate" and again["original_status"] == "rejected"
    assert again["error"] == rejected["error"]
    # A fix is a new edit: the same seq with other content is another store's change, never applied.
    fixed = api.pushed("laptop", [set_mutation(7, DAY, {"steps": 5}, hlc)])["results"][0]
    assert fixed["status"] == "clash" and fixed["error"]["code"] == "client_id_reused"
    assert api.entries() == []


def test_concurrent_writes_to_one_field_keep_the_later_stamp_and_audit_the_conflict(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    phone, laptop = stamp(ms, 0, "phone"), stamp(ms + 5, 0, "laptop")
    # Both devices edit offline from the same (empty) state; the laptop's edit is the later one.
    assert api.pushed("phone", [set_mutation(1, DAY, {"steps": 1000}, phone)])["results"][0]["status"] == "applied"
    result = api.pushed("laptop", [set_mutation(1, DAY, {"steps": 2000}, laptop)])["results"][0]
    assert result["status"] == "conflict"
    assert result["conflicts"] == [{"field": "steps", "kept": 2000, "lost": 1000, "kept_hlc": laptop,
                                    "lost_hlc": phone, "rule": "lww@2"}]
    # An older concurrent write arriving last loses, and is audited too.
    older = stamp(ms - 5, 0, "watch")
    late = api.pushed("watch", [set_mutation(1, DAY, {"steps": 500}, older)])["results"][0]
    assert late["status"] == "conflict"
    assert late["conflicts"] == [{"field": "steps", "kept": 2000, "lost": 500, "kept_hlc": laptop,
                                  "lost_hlc": older, "rule": "lww@2"}]
    entry = api.entry(DAY)
    assert entry is not None and entry["steps"] == 2000
    audit = api.get("/v1/conflicts").json()["conflicts"]
    assert [(c["client_id"], c["field"], c["kept"], c["lost"], c["kept_hlc"], c["lost_hlc"], c["rule"])
            for c in audit] == [("watch", "steps", 2000, 500, laptop, older, "lww@2"),
                                ("laptop", "steps", 2000, 1000, laptop, phone, "lww@2")]
    assert all(c["date"] == DAY and c["clamped"] is False for c in audit)


def test_an_edit_based_on_the_stored_stamp_is_a_plain_overwrite_not_a_conflict(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    first = stamp(ms, 0, "phone")
    api.pushed("phone", [set_mutation(1, DAY, {"steps": 1000}, first)])
    result = api.pushed("laptop", [set_mutation(1, DAY, {"steps": 1500}, stamp(ms + 1, 0, "laptop"),
                                                base={"steps": first})])["results"][0]
    assert result["status"] == "applied" and "conflicts" not in result
    assert api.get("/v1/conflicts").json()["conflicts"] == []


def test_a_delete_tombstone_keeps_an_older_set_from_resurrecting_the_entry(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    api.pushed("phone", [set_mutation(1, DAY, {"steps": 1000, "note": "walk"}, stamp(ms, 0, "phone"))])
    api.pushed("phone", [delete_mutation(2, DAY, stamp(ms + 10, 0, "phone"))])
    assert api.entries() == []
    # A device that was offline pushes an edit made before the delete.
    stale = api.pushed("laptop", [set_mutation(1, DAY, {"sleep_hours": 8}, stamp(ms + 5, 0, "laptop"))])
    assert stale["results"][0]["status"] == "conflict"
    assert api.entries() == []


def test_a_set_after_a_delete_revives_the_entry_with_only_its_own_fields(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    api.pushed("phone", [set_mutation(1, DAY, {"steps": 1000, "note": "walk", "hrv_ms": 40}, stamp(ms, 0, "phone")),
                         delete_mutation(2, DAY, stamp(ms + 10, 0, "phone")),
                         set_mutation(3, DAY, {"sleep_hours": 6.5}, stamp(ms + 20, 0, "phone"))])
    entry = api.entry(DAY)
    assert entry is not None and entry["deleted"] is False
    assert (entry["sleep_hours"], entry["steps"], entry["note"], entry["hrv_ms"], entry["hrv_method"]) == (
        6.5, None, None, None, None)
    assert entry["score"] is None  # no steps any more: the deleted values do not come back into the score


def test_a_stamp_more_than_a_minute_ahead_is_clamped_to_server_time(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    before = now_ms()
    ahead = stamp(before + 86_400_000, 3, "fast")
    response = api.pushed("fast", [set_mutation(1, DAY, {"steps": 111}, ahead)])
    result = response["results"][0]
    assert result["status"] == "applied" and result["clamped_from"] == ahead and result["hlc"] != ahead
    ms, counter, node = result["hlc"].split(":")
    assert before - 1000 <= int(ms) <= response["server_time_ms"] and (counter, node) == ("00003", "fast")
    stored_stamp = pg.execute("SELECT steps_hlc FROM entries WHERE user_id = %s AND date = %s", (user.id, DAY))
    assert stored_stamp.fetchone() == (result["hlc"],)  # stored at the clamped stamp
    # Within the minute of skew allowed, a stamp is kept as sent.
    near = stamp(now_ms() + 30_000, 0, "fast")
    kept = api.pushed("fast", [set_mutation(2, OTHER_DAY, {"steps": 222}, near)])["results"][0]
    assert kept["hlc"] == near and "clamped_from" not in kept


def test_edits_queued_by_a_device_whose_clock_runs_ahead_keep_their_order_once_clamped(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    # Offline, a device five minutes fast logs 1000 steps and corrects them to 10000; on another day it
    # writes a note, deletes the day and logs it afresh. Each stamp clamps to server time with counter 0:
    # unless the push keeps their order, the correction takes the typo's stamp and is dropped as a replay.
    api = client(make_user())
    before = now_ms()
    ahead = before + 300_000
    typo, fixed = stamp(ahead, 0, "fast"), stamp(ahead + 11, 0, "fast")
    note, gone = stamp(ahead + 20, 0, "fast"), stamp(ahead + 30, 0, "fast")
    response = api.pushed("fast", [
        set_mutation(1, DAY, {"steps": 1000}, typo),
        set_mutation(2, DAY, {"steps": 10000}, fixed, base={"steps": typo}),
        set_mutation(3, OTHER_DAY, {"note": "old"}, note),
        delete_mutation(4, OTHER_DAY, gone, base={"note": note}),
        set_mutation(5, OTHER_DAY, {"steps": 4242}, stamp(ahead + 40, 0, "fast"), base={"steps": gone}),
    ])
    results = response["results"]
    assert [r["status"] for r in results] == ["applied"] * 5  # each made on top of the one before: no conflict
    taken = [r["hlc"] for r in results]
    assert taken == sorted(taken) and len(set(taken)) == 5
    assert all(before <= int(t.split(":")[0]) <= response["server_time_ms"] for t in taken)
    entry, other = api.entry(DAY), api.entry(OTHER_DAY)
    assert entry is not None and entry["steps"] == 10000
    assert other is not None and (other["deleted"], other["steps"], other["note"]) == (False, 4242, None)


def test_a_device_a_day_ahead_loses_to_a_later_edit_from_a_device_with_the_right_time(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    fast = api.pushed("fast", [set_mutation(1, DAY, {"weight_kg": 80}, stamp(now_ms() + 86_400_000, 0, "fast"))])
    time.sleep(0.01)
    later = stamp(max(now_ms(), fast["server_time_ms"] + 1), 0, "right")
    result = api.pushed("right", [set_mutation(1, DAY, {"weight_kg": 79.5}, later)])["results"][0]
    assert result["hlc"] == later
    entry = api.entry(DAY)
    assert entry is not None and entry["weight_kg"] == 79.5


def test_txid_and_lsn_are_decimal_strings_and_the_lsn_grows_between_pushes(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    first = api.pushed("phone", [set_mutation(1, DAY, {"steps": 1}, stamp(ms, 0, "phone"))])
    second = api.pushed("phone", [set_mutation(2, DAY, {"steps": 2}, stamp(ms, 1, "phone"))])
    for body in (first, second):
        assert isinstance(body["txid"], str) and body["txid"].isdigit()
        assert isinstance(body["lsn"], str) and body["lsn"].isdigit()
        assert abs(body["server_time_ms"] - now_ms()) < 60_000 and body["max_batch"] == 500
    assert int(second["lsn"]) > int(first["lsn"])
    assert int(second["txid"]) > int(first["txid"])


def test_put_and_delete_over_rest_go_through_the_same_exactly_once_path(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    assert api.put(f"/v1/entries/{DAY}", json={"steps": 10}).status_code == 200
    assert api.delete(f"/v1/entries/{DAY}").status_code == 204
    rows = pg.execute("SELECT client_id, result->>'status' FROM applied_mutations WHERE user_id = %s ORDER BY seq",
                      (user.id,)).fetchall()
    assert rows == [("api", "applied"), ("api", "applied")]
    # A device edit made before the REST delete cannot bring the entry back.
    old = stamp(now_ms() - 60_000, 0, "phone")
    assert api.pushed("phone", [set_mutation(1, DAY, {"sleep_hours": 7}, old)])["results"][0]["status"] == "conflict"
    assert api.entries() == []


def test_devices_writing_different_fields_of_a_new_day_at_the_same_moment_lose_none_of_them(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    user = make_user()
    values: dict[str, Any] = {"sleep_hours": 7.5, "hrv_ms": 61.0, "steps": 12000, "weight_kg": 70.2, "note": "race"}
    days = [f"2026-10-{d:02d}" for d in range(1, 21)]
    ms = now_ms()
    apis = {name: client(user) for name in values}
    barrier = threading.Barrier(len(apis))
    failures: list[str] = []

    def push(device: str) -> None:
        batch = [set_mutation(i + 1, day, {device: values[device]}, stamp(ms, i, device.replace("_", "-")))
                 for i, day in enumerate(days)]
        barrier.wait()
        response = apis[device].push(device.replace("_", "-"), batch)
        if response.status_code != 200 or {r["status"] for r in response.json()["results"]} != {"applied"}:
            failures.append(response.text)

    threads = [threading.Thread(target=push, args=(device,)) for device in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    entries = apis["note"].entries()
    assert [e["date"] for e in entries] == days
    for entry in entries:
        assert {name: entry[name] for name in values} == values, entry["date"]


def test_values_postgres_or_json_cannot_hold_are_rejected_alone_and_never_fail_the_batch(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    hostile = [  # raw JSON, since a lone surrogate or 1e400 cannot be written with json.dumps
        '{"seq": 1, "date": "%s", "op": "set", "fields": {"note": "nul\\u0000byte"}, "hlc": "%s"}',
        '{"seq": 2, "date": "%s", "op": "set", "fields": {"note": "lone \\ud800"}, "hlc": "%s"}',
        '{"seq": 3, "date": "%s", "op": "set", "fields": {"steps": 1e400}, "hlc": "%s"}',
        '{"seq": 4, "date": "%s", "op": "x\\u0000\\ud800", "hlc": "%s"}',
        '{"seq": 5, "date": "%s", "op": "set", "fields": {"hrv_ms": 50, "hrv_method": "\\u0000"}, "hlc": "%s"}',
        '{"seq": 6, "date": "%s", "op": "set", "fields": {"steps": 6000}, "hlc": "%s"}',
    ]
    mutations = ", ".join(m % (DAY, stamp(ms, i, "phone")) for i, m in enumerate(hostile))
    body = '{"protocol": 1, "client_id": "phone", "mutations": [' + mutations + "]}"
    response = api.post("/v1/sync/push", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * 5 + ["applied"]
    assert [r["error"]["code"] for r in results[:5]] == [
        "invalid_value", "invalid_value", "not_a_number", "invalid_op", "invalid_choice"]
    entry = api.entry(DAY)
    assert entry is not None and (entry["steps"], entry["note"], entry["hrv_ms"]) == (6000, None, None)
    replay = api.post("/v1/sync/push", content=body.encode(), headers={"content-type": "application/json"})
    assert [r["status"] for r in replay.json()["results"]] == ["duplicate"] * 6


def test_a_put_of_a_value_postgres_or_json_cannot_hold_is_an_error_not_a_500(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    for raw, status in [(b'{"note": "nul\\u0000byte"}', 422), (b'{"note": "lone \\ud800"}', 400),
                        (b'{"steps": 1e400}', 422), (b'{"sleep_hours": NaN}', 422), (b'{"steps": true}', 400)]:
        response = api.put(f"/v1/entries/{DAY}", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == status, (raw, response.text)
        assert response.json()["error"]["code"] in ("bad_request", "invalid_value", "not_a_number")
    assert api.entries() == []


def test_a_push_answers_the_same_through_the_fast_path_and_through_the_cors_stack(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    """A plain push is answered in front of the middleware stack (PushFastPath); one with an Origin goes
    through it (CORS). Same bodies, statuses, request ids and metrics either way."""
    api = client(make_user())
    ms = now_ms()
    bodies = {}
    counted = _push_counts(api)
    for name, headers in (("fast", {}), ("cors", {"origin": "https://pwa.example"})):
        mutation = set_mutation(1, DAY, {"steps": 4000}, stamp(ms, 0, name))
        sent = {"protocol": 1, "client_id": name, "mutations": [mutation]}
        reply = api.http.post("/v1/sync/push", json=sent, headers={**headers, "x-request-id": f"rid-{name}"})
        assert reply.status_code == 200 and reply.headers["x-request-id"] == f"rid-{name}"
        assert reply.headers["content-type"] == "application/json"
        assert ("access-control-allow-origin" in reply.headers) == (name == "cors")
        body = reply.json()
        assert set(body) == {"server_time_ms", "txid", "lsn", "max_batch", "high_water", "results"}
        bodies[name] = body["results"]
        unauthorized = api.http.post("/v1/sync/push", json=sent, headers={**headers, "authorization": "Bearer nope"})
        assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
        bodies[name + " 401"] = unauthorized.json()
        malformed = api.http.post("/v1/sync/push", content=b"{",
                                  headers={**headers, "content-type": "application/json"})
        assert malformed.status_code == 400 and len(malformed.headers["x-request-id"]) == 32
        bodies[name + " 400"] = malformed.json()
    assert [r["status"] for r in bodies["fast"]] == [r["status"] for r in bodies["cors"]] == ["applied"]
    assert bodies["fast 401"] == bodies["cors 401"] and bodies["fast 400"] == bodies["cors 400"]
    now = _push_counts(api)
    grew = {status: now[status] - counted.get(status, 0) for status in now if now[status] != counted.get(status, 0)}
    assert grew == {"200": 2, "400": 2, "401": 2}


def _push_counts(api: Api) -> dict[str, float]:
    """Requests to the push route in the latency histogram, by status."""
    prefix = 'pulse_http_request_duration_seconds_count{method="POST",route="/v1/sync/push",status="'
    return {line[len(prefix):].split('"')[0]: float(line.split()[-1])
            for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)}
