"""One client id, one store: a replay with other content is a clash, never a silent duplicate; the
server tells each client its high-water seq; a replay whose result was pruned is still a duplicate.

Over real HTTP, and through each of the reconciler's three write paths on real Postgres."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from server_support import Api, User, now_ms, set_mutation, stamp

from pulse_server.accounts import Principal
from pulse_server.push import Reconciler

DAY = "2026-11-20"
LATER = "2026-11-21"


def _recorded(pg: psycopg.Connection[Any], user: User, client_id: str) -> list[int]:
    rows = pg.execute("SELECT seq FROM applied_mutations WHERE user_id = %s AND client_id = %s ORDER BY seq",
                      (user.id, client_id)).fetchall()
    return [int(r[0]) for r in rows]


def test_a_restored_store_reusing_a_seq_with_new_content_gets_a_clash_and_nothing_is_applied(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    ms = now_ms()
    api.pushed("laptop", [set_mutation(1, DAY, {"steps": 1000}, stamp(ms, 0, "laptop")),
                          set_mutation(2, LATER, {"steps": 2000}, stamp(ms, 1, "laptop"))])
    # The restored copy only knew seq 1: its next edit reuses seq 2 for another day.
    restored = set_mutation(2, "2026-11-22", {"note": "after the restore"}, stamp(ms + 50, 0, "laptop"))
    answer = api.pushed("laptop", [restored])
    (result,) = answer["results"]
    assert result["status"] == "clash"
    assert result["error"]["code"] == "client_id_reused" and result["error"]["field"] == "client_id"
    assert answer["txid"] is None and answer["lsn"] is None  # nothing written: no change will carry a txid
    assert answer["high_water"] == 2  # what the server held before this batch
    assert api.entry("2026-11-22") is None
    assert _recorded(pg, user, "laptop") == [1, 2]
    # Under a new id, with the same stamp (the recovery), it is applied once.
    moved = api.pushed("laptop-2", [{**restored, "seq": 1}])
    assert [r["status"] for r in moved["results"]] == ["applied"]
    assert moved["results"][0]["hlc"] == restored["hlc"]
    entry = api.entry("2026-11-22")
    assert entry is not None and entry["note"] == "after the restore"


def test_the_same_content_replayed_is_a_duplicate_whatever_the_key_order(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    mutation = set_mutation(1, DAY, {"steps": 1000, "sleep_hours": 7.5}, stamp(now_ms(), 0, "phone"))
    api.pushed("phone", [mutation])
    reordered = {key: mutation[key] for key in reversed(list(mutation))}
    reordered["fields"] = {"sleep_hours": 7.5, "steps": 1000}
    again = api.pushed("phone", [reordered])
    assert [(r["status"], r["original_status"]) for r in again["results"]] == [("duplicate", "applied")]


def test_every_push_answer_and_the_high_water_endpoint_give_the_clients_highest_recorded_seq_before(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    ana, bob = make_user(), make_user()
    api = client(ana)
    ms = now_ms()
    first = api.pushed("tab", [set_mutation(7, DAY, {"steps": 1}, stamp(ms, 0, "tab"))])
    assert first["high_water"] is None  # nothing recorded before
    # A rejected mutation is recorded too (a replay gets the same rejection): it counts.
    second = api.pushed("tab", [set_mutation(9, DAY, {"steps": -5}, stamp(ms, 1, "tab"))])
    assert second["results"][0]["status"] == "rejected"
    assert second["high_water"] == 7 and second["txid"] is None
    found = api.get("/v1/sync/high-water", params=[("client_id", "tab"), ("client_id", "never-pushed")])
    assert found.status_code == 200
    assert found.json() == {"high_water": {"tab": 9, "never-pushed": None}}
    # Scoped to the caller: another user's store with the same id has pushed nothing.
    assert client(bob).get("/v1/sync/high-water", params={"client_id": "tab"}).json() == {
        "high_water": {"tab": None}}
    bad = api.get("/v1/sync/high-water", params={"client_id": "no spaces"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "client_id"


def test_the_sync_server_never_refuses_later_what_its_push_answer_took(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    """`GET /v1/sync/refused`, which the app asks at each exchange (behind `pulse agent --serve` it lists the
    browser's changes the device took and the sync server refused): here none, even for a client with a
    refusal on record, because the push answer said it. Signed-in callers only; the id is checked."""
    user = make_user()
    api = client(user)
    pushed = api.pushed("tab", [set_mutation(1, DAY, {"steps": -5}, stamp(now_ms(), 0, "tab"))])
    assert pushed["results"][0]["status"] == "rejected"
    assert api.get("/v1/sync/refused", params={"client_id": "tab"}).json() == {"refused": []}
    bad = api.get("/v1/sync/refused", params={"client_id": "no spaces"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "client_id"
    with Api(str(api.http.base_url)) as anonymous:
        assert anonymous.get("/v1/sync/refused", params={"client_id": "tab"}).status_code == 401
        assert anonymous.post("/v1/sync/refused/taken", json={"client_id": "tab", "seqs": [1]}).status_code == 401
    assert api.post("/v1/sync/refused/taken", json={"client_id": "tab", "seqs": [1]}).status_code == 204
    refused_empty = api.post("/v1/sync/refused/taken", json={"client_id": "tab", "seqs": []})
    assert refused_empty.status_code == 400 and refused_empty.json()["error"]["field"] == "seqs"


def test_a_replay_whose_result_was_pruned_is_a_duplicate_and_changes_nothing(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    ms = now_ms()
    old = set_mutation(3, DAY, {"steps": 3000}, stamp(ms - 10, 0, "watch"))
    api.pushed("watch", [old, set_mutation(4, DAY, {"steps": 4000}, stamp(ms, 0, "watch"))])
    # Past the retention window: the results are gone, the high-water mark stays.
    with pg.transaction():
        pg.execute("INSERT INTO client_high_water (user_id, client_id, seq) VALUES (%s, 'watch', 4)", (user.id,))
        pg.execute("DELETE FROM applied_mutations WHERE user_id = %s AND client_id = 'watch'", (user.id,))
    replay = api.pushed("watch", [old])
    assert replay["results"] == [{"seq": 3, "status": "duplicate", "pruned": True}]
    assert replay["high_water"] == 4
    entry = api.entry(DAY)
    assert entry is not None and entry["steps"] == 4000  # the old value did not come back
    assert _recorded(pg, user, "watch") == []
    fresh = api.pushed("watch", [set_mutation(5, DAY, {"steps": 5000}, stamp(ms + 1, 0, "watch"),
                                                base={"steps": stamp(ms, 0, "watch")})])
    assert fresh["results"][0]["status"] == "applied" and fresh["high_water"] == 4


def _unlocked(conn: psycopg.Connection[Any], user: User, client_id: str, raw: list[dict[str, Any]]) -> Any:
    reconciler = Reconciler(now_ms, 60_000)
    _, outcome = reconciler.apply_batch_unlocked(conn, user.token or "", client_id, raw,
                                                 lambda p: p or Principal(user.id, user.username, False))
    return outcome.results, outcome.high_water


def _locked(conn: psycopg.Connection[Any], user: User, client_id: str, raw: list[dict[str, Any]]) -> Any:
    with conn.transaction():
        outcome = Reconciler(now_ms, 60_000).apply_batch(conn, user.id, client_id, raw)
    return outcome.results, outcome.high_water


def _savepoints(conn: psycopg.Connection[Any], user: User, client_id: str, raw: list[dict[str, Any]]) -> Any:
    with conn.transaction():
        outcome = Reconciler(now_ms, 60_000).apply_batch_savepoints(conn, user.id, client_id, raw)
    return outcome.results, outcome.high_water


@pytest.mark.parametrize("path", [_unlocked, _locked, _savepoints], ids=["unlocked", "locked", "savepoints"])
def test_each_write_path_answers_replays_clashes_and_pruned_replays_alike(
    path: Callable[..., Any], make_user: Callable[..., User], database_url: str, pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    ms = now_ms()
    one = set_mutation(1, DAY, {"steps": 100}, stamp(ms, 0, "pad"))
    two = set_mutation(2, DAY, {"steps": 200}, stamp(ms, 1, "pad"), base={"steps": stamp(ms, 0, "pad")})
    with psycopg.connect(database_url, autocommit=True) as conn:
        results, high = path(conn, user, "pad", [one, two])
        assert [r["status"] for r in results] == ["applied", "applied"] and high is None
        other_two = set_mutation(2, LATER, {"steps": 999}, stamp(ms, 2, "pad"))
        three = set_mutation(3, LATER, {"steps": 3}, stamp(ms, 3, "pad"))
        results, high = path(conn, user, "pad", [one, other_two, three])
        assert [r["status"] for r in results] == ["duplicate", "clash", "applied"]
        assert high == 2
        pg.execute("INSERT INTO client_high_water (user_id, client_id, seq) VALUES (%s, 'pad', 3)", (user.id,))
        pg.execute("DELETE FROM applied_mutations WHERE user_id = %s AND client_id = 'pad' AND seq = 1", (user.id,))
        results, high = path(conn, user, "pad", [one])
        assert results == [{"seq": 1, "status": "duplicate", "original_status": None, "pruned": True}]
        assert high == 3
    rows = pg.execute("SELECT date::text, steps FROM entries WHERE user_id = %s ORDER BY date", (user.id,)).fetchall()
    assert rows == [(DAY, 200), (LATER, 3)]
