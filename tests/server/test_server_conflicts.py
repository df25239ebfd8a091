"""The conflict audit as every device reads it: each conflict with its state now, fetched by version,
dismissed from any device."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from server_support import Api, User, now_ms, set_mutation, stamp

DAY = "2026-11-18"


def _only(api: Api, **params: int) -> dict[str, object]:
    body = api.get("/v1/conflicts", params=params).json()
    (conflict,) = body["conflicts"]
    return dict(conflict)


def test_a_conflicts_state_follows_the_entry_open_reasserted_superseded_then_dismissed(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    phone, laptop = stamp(ms, 0, "phone"), stamp(ms + 1, 0, "laptop")
    api.pushed("phone", [set_mutation(1, DAY, {"steps": 1000}, phone)])
    api.pushed("laptop", [set_mutation(1, DAY, {"steps": 2000}, laptop)])  # never saw the phone's value
    conflict = _only(api)
    assert (conflict["field"], conflict["kept"], conflict["lost"], conflict["state"]) == ("steps", 2000, 1000, "open")
    assert conflict["dismissed"] is False
    first_version = conflict["version"]
    assert isinstance(first_version, int)

    # The phone's user makes their value win again, as `pulse conflicts --reassert` does.
    api.pushed("phone", [set_mutation(2, DAY, {"steps": 1000}, stamp(ms + 2, 0, "phone"), base={"steps": laptop})])
    assert _only(api)["state"] == "reasserted"
    api.pushed("phone", [set_mutation(3, DAY, {"steps": 4321}, stamp(ms + 3, 0, "phone"),
                                      base={"steps": stamp(ms + 2, 0, "phone")})])
    assert _only(api)["state"] == "superseded"
    # Nothing was recorded or dismissed since: nothing to fetch after its version.
    assert api.get("/v1/conflicts", params={"after_version": first_version}).json() == {
        "conflicts": [], "version": first_version}

    assert api.post("/v1/conflicts/dismiss", json={"ids": [conflict["id"]]}).status_code == 204
    changed = api.get("/v1/conflicts", params={"after_version": first_version}).json()
    (dismissed,) = changed["conflicts"]
    assert dismissed["state"] == "dismissed" and dismissed["dismissed"] is True
    assert changed["version"] == dismissed["version"] > first_version


def test_nobody_dismisses_another_users_conflict_and_bad_bodies_are_400(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    owner, other = client(make_user()), client(make_user())
    ms = now_ms()
    owner.pushed("a", [set_mutation(1, DAY, {"note": "a"}, stamp(ms, 0, "a"))])
    owner.pushed("b", [set_mutation(1, DAY, {"note": "b"}, stamp(ms + 1, 0, "b"))])
    conflict = _only(owner)
    assert other.post("/v1/conflicts/dismiss", json={"ids": [conflict["id"]]}).status_code == 204
    assert _only(owner)["state"] == "open"
    for body in ({"ids": []}, {"ids": ["x"]}, {"ids": [1], "extra": True}, {}):
        response = owner.post("/v1/conflicts/dismiss", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "bad_request"


def test_a_conflict_still_being_committed_is_not_passed_by_a_device_reading_after_its_version(
    make_user: Callable[..., User], client: Callable[..., Api], database_url: str
) -> None:
    # Versions come from a sequence: a push that took one and commits after another push that took the
    # next must not be left behind a device that read up to the later one meanwhile.
    user = make_user()
    api = client(user)
    with psycopg.connect(database_url, application_name="pulse-tests-slow-push") as slow:
        held = slow.execute(
            "INSERT INTO conflicts (user_id, date, client_id, seq, field, kept, lost, kept_hlc, lost_hlc, rule,"
            " clamped, created_at) VALUES (%s, %s, 'slow', 1, 'note', '\"kept\"', '\"lost\"', %s, %s, 'lww@2',"
            " false, now()) RETURNING id", (user.id, DAY, stamp(now_ms(), 0, "x"), stamp(now_ms(), 0, "slow")),
        ).fetchone()
        assert held is not None  # its version is taken; its transaction is still open
        ms = now_ms()
        api.pushed("a", [set_mutation(1, DAY, {"steps": 1}, stamp(ms, 0, "a"))])
        api.pushed("b", [set_mutation(1, DAY, {"steps": 2}, stamp(ms + 1, 0, "b"))])  # a later version, committed

        answers: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: answers.append(api.get("/v1/conflicts",
                                                                        params={"after_version": 0}).json()))
        reader.start()
        with psycopg.connect(database_url, autocommit=True) as look:
            deadline = time.monotonic() + 10
            while reader.is_alive() and time.monotonic() < deadline and not look.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone():
                time.sleep(0.02)
        slow.commit()
        reader.join(timeout=10)
        (first,) = answers
        later = api.get("/v1/conflicts", params={"after_version": first["version"]}).json()
    seen = {c["id"] for c in first["conflicts"]} | {c["id"] for c in later["conflicts"]}
    assert held[0] in seen  # on a sequence alone, the device's next read starts past it
    assert len(seen) == 2
