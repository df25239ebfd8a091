"""The HTTP API end to end, over real sockets against a real `pulse-server` process and Postgres."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from server_support import Api, User, error_body, now_ms, set_mutation, stamp

from pulse_core.rules import rules_document

DAY = "2026-11-20"


@pytest.fixture(scope="module")
def bystander(make_user: Callable[..., User]) -> User:
    """One athlete for the many requests that must fail without writing anything."""
    return make_user()


def test_signing_in_with_the_right_password_gives_a_bearer_token_that_works(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    user = make_user()
    response = client().post("/v1/auth/token", json={"username": user.username, "password": user.password})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_at"]
    assert body["access_token"] != user.token  # a new token per sign-in
    me = client(User(user.id, user.username, user.password, body["access_token"])).get("/v1/me").json()
    assert (me["username"], me["role"]) == (user.username, "athlete")


def test_a_wrong_password_is_401_with_the_documented_error_body(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    user = make_user()
    response = client().post("/v1/auth/token", json={"username": user.username, "password": "not the password"})
    assert response.status_code == 401
    assert error_body(response)["code"] == "unauthorized"
    unknown = client().post("/v1/auth/token", json={"username": "nobody-here", "password": "whatever1"})
    assert unknown.status_code == 401 and error_body(unknown) == error_body(response)


def test_me_names_the_user_and_role_the_token_belongs_to(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    athlete, coach = make_user(), make_user(coach=True)
    before = now_ms()
    me = client(athlete).get("/v1/me").json()
    assert {k: me[k] for k in ("username", "role")} == {"username": athlete.username, "role": "athlete"}
    assert before - 5_000 <= me["server_time_ms"] <= now_ms() + 5_000, "the server's clock, for devices' offsets"
    coach_me = client(coach).get("/v1/me").json()
    assert {k: coach_me[k] for k in ("username", "role")} == {"username": coach.username, "role": "coach"}


def test_put_then_get_returns_every_field_by_name_with_nulls_for_unset_ones_and_the_score(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    response = api.put(f"/v1/entries/{DAY}", json={"sleep_hours": 7.25, "steps": 8000})
    assert response.status_code == 200, response.text
    written = response.json()
    assert written["status"] == "applied" and written["warnings"] == []
    # (7.25*4 + 10 (no HRV) + 8000/333) / 80 * 100 = (29 + 10 + 24.02...) / 0.8 = 78.78... -> 79
    expected = {
        "date": DAY, "sleep_hours": 7.25, "hrv_ms": None, "hrv_method": None, "steps": 8000, "weight_kg": None,
        "note": None, "score": 79, "score_version": 1, "deleted": False,
        "sources": {"sleep_hours": "manual", "hrv_ms": None, "steps": "manual", "weight_kg": None, "note": None},
    }
    assert written["entry"] == expected
    assert api.entries() == [expected]
    assert api.get("/v1/entries").json()["user"] == api.get("/v1/me").json()["username"]


def test_a_second_put_sets_only_its_fields_and_an_explicit_null_clears_one(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    assert api.put(f"/v1/entries/{DAY}", json={"hrv_ms": 48.5, "hrv_method": "sdnn", "note": "easy"}).status_code == 200
    assert api.put(f"/v1/entries/{DAY}", json={"weight_kg": 71.4, "note": None}).status_code == 200
    entry = api.entry(DAY)
    assert entry is not None
    assert (entry["hrv_ms"], entry["hrv_method"], entry["weight_kg"], entry["note"]) == (48.5, "sdnn", 71.4, None)
    assert entry["score"] is None  # no score without sleep and steps


def test_a_put_weight_warns_only_against_a_weight_from_the_7_days_before(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())

    def warnings(day: str, kg: float) -> list[str]:
        response = api.put(f"/v1/entries/{day}", json={"weight_kg": kg})
        assert response.status_code == 200, response.text
        return [w["message"] for w in response.json()["warnings"]]

    assert warnings("2026-11-01", 52.6) == []
    assert warnings("2026-11-09", 64.4) == []  # 22.4% more, but 8 days after 52.6
    assert warnings("2026-11-16", 60) == [  # 7 days after 64.4
        "weight_kg: 60 kg is 6.8% from the previous entry of 64.4 kg on 2026-11-09 (warning above 3%)"]


def test_get_entries_keeps_to_the_from_and_to_range_oldest_first(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    for day in ("2026-11-03", "2026-11-01", "2026-11-02", "2026-11-04"):
        assert api.put(f"/v1/entries/{day}", json={"steps": 100}).status_code == 200
    assert [e["date"] for e in api.entries(**{"from": "2026-11-02", "to": "2026-11-03"})] == [
        "2026-11-02", "2026-11-03"]
    assert [e["date"] for e in api.entries()] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


def test_a_deleted_entry_is_gone_and_deleting_it_again_is_404(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    assert api.put(f"/v1/entries/{DAY}", json={"steps": 5000}).status_code == 200
    first = api.delete(f"/v1/entries/{DAY}")
    assert first.status_code == 204 and first.content == b""
    assert api.entries() == []
    again = api.delete(f"/v1/entries/{DAY}")
    assert again.status_code == 404 and error_body(again)["code"] == "not_found"
    never = api.delete("/v1/entries/2026-11-01")
    assert never.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "code", "field", "value", "allowed"),
    [
        (f"/v1/entries/{DAY}", {"sleep_hours": 25}, "out_of_range", "sleep_hours", "25", "0 to 24 h"),
        (f"/v1/entries/{DAY}", {"steps": "lots"}, "not_a_number", "steps", "lots", "0 to 100000 steps"),
        (f"/v1/entries/{DAY}", {"steps": 1.5}, "not_an_integer", "steps", 1.5, "0 to 100000 steps"),
        (f"/v1/entries/{DAY}", {"hrv_ms": 0.5}, "out_of_range", "hrv_ms", "0.5", "1 to 300 ms"),
        (f"/v1/entries/{DAY}", {"weight_kg": "NaN"}, "not_a_number", "weight_kg", "NaN", "20 to 500 kg"),
        (f"/v1/entries/{DAY}", {"hrv_method": "sdnn"}, "nothing_to_set", "hrv_method", "sdnn",
         "only together with hrv_ms"),
        ("/v1/entries/2026-13-01", {"steps": 1}, "invalid_date", "date", "2026-13-01",
         "YYYY-MM-DD, today or yesterday"),
        ("/v1/entries/2099-01-01", {"steps": 1}, "future_date", "date", "2099-01-01", None),
    ],
)
def test_an_invalid_value_is_422_naming_the_code_field_value_and_what_is_allowed(
    bystander: User, client: Callable[..., Api],
    path: str, body: dict[str, Any], code: str, field: str, value: Any, allowed: str | None,
) -> None:
    api = client(bystander)
    response = api.put(path, json=body)
    assert response.status_code == 422, response.text
    error = error_body(response)
    assert (error["code"], error["field"], error["value"]) == (code, field, value)
    assert error["allowed"] == allowed if allowed else error["allowed"].startswith("up to ")
    assert error["message"].startswith(f"{field}: ")
    assert api.entries() == []


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("PUT", f"/v1/entries/{DAY}", b'{"steps": 1000'),
        ("PUT", f"/v1/entries/{DAY}", b'{"steps": 1000, "mood": "great"}'),
        ("PUT", f"/v1/entries/{DAY}", b'{"note": 12}'),
        ("PUT", f"/v1/entries/{DAY}", b'[1, 2]'),
        ("PUT", f"/v1/entries/{DAY}", b"steps=1000"),
        ("POST", "/v1/sync/push", b'{"protocol": 1, "client_id": "c1", "mutations": {"seq": 1}}'),
        ("POST", "/v1/sync/push", b'{"protocol": "one", "client_id": "c1", "mutations": []}'),
        ("POST", "/v1/sync/push", b'{"protocol": 1, "client_id": "no spaces allowed", "mutations": []}'),
        ("POST", "/v1/sync/push", b'{"protocol": 1, "client_id": "c1", "mutations": [{"seq": -1}]}'),
        ("POST", "/v1/sync/push", b'{"protocol": 1, "client_id": "c1", "mutations": [{"seq": 9223372036854775808}]}'),
        ("POST", "/v1/auth/token", b'{"username": "ana"}'),
        ("GET", "/v1/conflicts?limit=lots", b""),
    ],
)
def test_malformed_json_or_wrong_types_are_400_bad_request_not_fastapis_422(
    bystander: User, client: Callable[..., Api], method: str, path: str, content: bytes
) -> None:
    api = client(bystander)
    response = api.http.request(method, path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = error_body(response)
    assert error["code"] == "bad_request"
    assert "detail" not in response.json()
    assert api.entries() == []


def test_put_with_no_fields_is_400(bystander: User, client: Callable[..., Api]) -> None:
    response = client(bystander).put(f"/v1/entries/{DAY}", json={})
    assert response.status_code == 400 and error_body(response)["code"] == "bad_request"


def test_the_rules_document_is_the_one_pulse_core_generates(client: Callable[..., Api]) -> None:
    response = client().get("/v1/rules")
    assert response.status_code == 200
    assert response.json() == rules_document()


def test_health_and_readiness_answer_without_a_token(client: Callable[..., Api]) -> None:
    api = client()
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.groups()[-1])
    return 0.0


def test_metrics_count_requests_by_route_and_mutations_by_outcome(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    before = api.get("/metrics").text
    assert "pulse_http_request_duration_seconds" in before and "pulse_mutations_total" in before
    applied_before = _metric(before, "pulse_mutations_total", status="applied")
    rejected_before = _metric(before, "pulse_mutations_total", status="rejected")
    hlc = stamp(now_ms(), 0, "metrics-client")
    api.pushed("metrics-client", [set_mutation(1, DAY, {"steps": 10}, hlc),
                                  set_mutation(2, DAY, {"steps": -1}, stamp(now_ms(), 1, "metrics-client"))])
    after = api.get("/metrics").text
    assert _metric(after, "pulse_mutations_total", status="applied") == applied_before + 1
    assert _metric(after, "pulse_mutations_total", status="rejected") == rejected_before + 1
    assert re.search(r'pulse_http_request_duration_seconds_count\{method="POST",route="/v1/sync/push",status="200"\}',
                     after)
    assert _metric(after, "pulse_db_breaker_state") == 0
    assert "pulse_db_pool_size" in after


def test_a_body_over_the_size_limit_is_413_whether_declared_or_streamed(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    big = b'{"protocol": 1, "client_id": "c1", "mutations": [], "pad": "' + b"x" * 1_100_000 + b'"}'
    declared = api.post("/v1/sync/push", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and error_body(declared)["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: chunked transfer encoding
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    streamed = api.post("/v1/sync/push", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert error_body(streamed)["code"] == "payload_too_large"


def test_a_batch_over_max_batch_is_413_batch_too_large_and_nothing_is_applied(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    batch = [set_mutation(seq, DAY, {"steps": seq}, stamp(ms, seq, "big")) for seq in range(501)]
    response = api.push("big", batch)
    assert response.status_code == 413
    error = error_body(response)
    assert (error["code"], error["field"], error["value"], error["allowed"]) == (
        "batch_too_large", "mutations", 501, "at most 500")
    assert api.entries() == []
    assert api.pushed("big", batch[:500])["max_batch"] == 500


def test_an_unknown_protocol_is_426(make_user: Callable[..., User], client: Callable[..., Api]) -> None:
    api = client(make_user())
    response = api.push("c1", [set_mutation(1, DAY, {"steps": 1}, stamp(now_ms(), 0, "c1"))], protocol=2)
    assert response.status_code == 426
    error = error_body(response)
    assert (error["code"], error["field"], error["value"], error["allowed"]) == ("unsupported_protocol", "protocol",
                                                                                 2, "1")
    assert api.entries() == []


def test_an_unknown_route_is_404_and_a_wrong_method_405_with_the_error_body(client: Callable[..., Api]) -> None:
    missing = client().get("/v1/nothing-here")
    assert missing.status_code == 404 and error_body(missing)["code"] == "not_found"
    wrong = client().http.patch("/v1/rules")
    assert wrong.status_code == 405 and error_body(wrong)["code"] == "bad_request"
    assert wrong.headers["allow"] == "GET"  # RFC 9110: a 405 says what is allowed


def test_every_response_carries_a_request_id(client: Callable[..., Api]) -> None:
    chosen = client().get("/healthz", headers={"x-request-id": "abc123"})
    assert chosen.headers["x-request-id"] == "abc123"
    assert re.fullmatch(r"[0-9a-f]{32}", client().get("/healthz").headers["x-request-id"])
