"""A push body must be declared JSON: 415 otherwise, on the fast path (no Origin) and through the stack
(a browser's push, with Origin) alike, and nothing is applied."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from server_support import Api, User, error_body, now_ms, set_mutation, stamp

DAY = "2026-01-10"


def _body(client_id: str) -> bytes:
    mutation = set_mutation(1, DAY, {"steps": 4321}, stamp(now_ms(), 0, client_id))
    return json.dumps({"protocol": 1, "client_id": client_id, "mutations": [mutation]}).encode()


PATHS = {"fast": {}, "stack": {"origin": "http://elsewhere.example"}}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/jsonp", "json"])
def test_a_push_not_declared_json_is_415_and_applies_nothing(
    make_user: Callable[..., User], client: Callable[..., Api], path: str, content_type: str | None
) -> None:
    api = client(make_user())
    headers = dict(PATHS[path])
    if content_type is not None:
        headers["content-type"] = content_type
    response = api.http.post("/v1/sync/push", content=_body("c415"), headers=headers)
    assert response.status_code == 415, response.text
    error = error_body(response)
    assert (error["code"], error["field"], error["value"], error["allowed"]) == (
        "unsupported_media_type", "content-type", content_type, "application/json")
    assert error["message"].startswith("content-type: ")
    assert api.entries() == []


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.pulse+json"])
def test_a_push_declared_json_is_applied(
    make_user: Callable[..., User], client: Callable[..., Api], path: str, content_type: str
) -> None:
    api = client(make_user())
    response = api.http.post("/v1/sync/push", content=_body("cjson"), headers={**PATHS[path],
                                                                              "content-type": content_type})
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["applied"]
    assert [e["steps"] for e in api.entries()] == [4321]


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_bad_token_is_401_before_the_content_type_is_judged(client: Callable[..., Api], path: str) -> None:
    response = client().http.post("/v1/sync/push", content=_body("c401"),
                                  headers={**PATHS[path], "content-type": "text/plain", "authorization": "Bearer x"})
    assert response.status_code == 401
    assert error_body(response)["code"] == "unauthorized"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_put_or_a_dismissal_not_declared_json_is_415_and_changes_nothing(
    make_user: Callable[..., User], client: Callable[..., Api], content_type: str | None
) -> None:
    api = client(make_user())
    headers = {} if content_type is None else {"content-type": content_type}
    put = api.http.put(f"/v1/entries/{DAY}", content=json.dumps({"steps": 1234}).encode(), headers=headers)
    dismissal = api.http.post("/v1/conflicts/dismiss", content=json.dumps({"ids": [1]}).encode(), headers=headers)
    for response in (put, dismissal):
        assert response.status_code == 415, response.text
        assert (error_body(response)["code"], error_body(response)["value"]) == ("unsupported_media_type", content_type)
    assert api.entries() == []


def test_a_put_with_a_bad_token_is_401_before_its_content_type_is_judged(client: Callable[..., Api]) -> None:
    response = client().http.put(f"/v1/entries/{DAY}", content=b"{}",
                                 headers={"content-type": "text/plain", "authorization": "Bearer x"})
    assert response.status_code == 401
    assert error_body(response)["code"] == "unauthorized"
