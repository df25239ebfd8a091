"""Erasure on the server (docs/erasure.md): `DELETE /v1/me/entries`, `GET /v1/erasures`, `pulse-server erase`,
what is left in Postgres, who may erase what, and the pushes an erasure refuses."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psycopg
from erasure_search import postgres_holding
from server_support import PULSE_SERVER, Api, User, clean_env, error_body, now_ms, set_mutation, stamp

D0, D1, D2, D3 = "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _count(pg: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = pg.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _logged(pg: psycopg.Connection[Any], user: User, needle: str) -> bool:
    return _count(pg, "SELECT count(*) FROM shape_log WHERE user_id = %s AND value::text LIKE %s",
                  user.id, f"%{needle}%") > 0


def _distinct_values() -> tuple[str, float]:
    """A note no other test writes, and a weight with odd hundredths."""
    return f"erase-me-{secrets.token_hex(6)}", round(150 + secrets.randbelow(4000) / 100 + 0.07, 2)


def _seed(api: Api, note: str, weight: float, ms: int) -> None:
    """D0..D3 with values, the erased days' note and weight, a conflict on D2 and a refused value on D2."""
    api.pushed("phone", [
        set_mutation(1, D0, {"steps": 5000}, stamp(ms, 0, "phone")),
        set_mutation(2, D1, {"note": note, "weight_kg": weight}, stamp(ms, 1, "phone")),
        set_mutation(3, D2, {"note": note, "steps": 7777}, stamp(ms, 2, "phone")),
        set_mutation(4, D3, {"steps": 6000}, stamp(ms, 3, "phone")),
        set_mutation(5, D2, {"weight_kg": 9999}, stamp(ms, 4, "phone")),  # refused: out of range, recorded
    ])
    # Written on another device without having seen phone's note: the conflict audit holds both values.
    results = api.pushed("tablet", [set_mutation(1, D2, {"note": f"{note}-tablet"}, stamp(ms, 5, "tablet"))])
    assert results["results"][0]["status"] == "conflict"


def test_an_athlete_erases_a_range_of_their_days_and_no_table_holds_a_value_of_them(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    note, weight = _distinct_values()
    _seed(api, note, weight, now_ms() - 5_000)
    _wait(lambda: _logged(pg, user, note), "the shape log to hold the note")
    before = postgres_holding(pg, user.id, [note, str(weight)])
    assert {"entries", "shape_log", "shape_rows", "applied_mutations", "conflicts"} <= set(before), before
    marks = api.get("/v1/sync/high-water", params=[("client_id", "phone"), ("client_id", "tablet")]).json()

    response = api.delete("/v1/me/entries", params={"from": D1, "to": D2})
    assert response.status_code == 200, response.text
    body = response.json()
    erasure = body["erasure"]
    assert (erasure["user"], erasure["from"], erasure["to"], erasure["whole_account"]) == (
        user.username, D1, D2, False)
    assert abs(erasure["erased_at_ms"] - now_ms()) < 5_000
    # D1 and D2 rows; the conflict (one per field); phone's seqs 2, 3, 5 and tablet's 1.
    assert body["removed"] == {"entries": 2, "conflicts": 1, "results": 4, "tokens": 0, "grants": 0}

    _wait(lambda: not postgres_holding(pg, user.id, [note, str(weight)]), "every table to let go of the values")
    assert [e["date"] for e in api.entries()] == [D0, D3]
    row = pg.execute("SELECT user_id, date_from::text, date_to::text, whole_account FROM erasures WHERE id = %s",
                     (erasure["id"],)).fetchone()
    assert row == (user.id, D1, D2, False)
    # The seqs stay known: the high-water marks did not move, and a replay of an erased one is a duplicate.
    after = api.get("/v1/sync/high-water", params=[("client_id", "phone"), ("client_id", "tablet")]).json()
    assert after == marks == {"high_water": {"phone": 5, "tablet": 1}}
    replay = api.pushed("phone", [set_mutation(3, D2, {"note": note, "steps": 7777}, stamp(0, 0, "phone"))])
    assert replay["results"][0]["status"] == "duplicate"
    assert not postgres_holding(pg, user.id, [note])


def test_a_write_to_an_erased_day_made_before_the_erasure_is_refused_and_one_made_after_is_kept(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    made_offline = now_ms() - 60_000  # on a device that was offline during the erasure
    erasure = api.delete("/v1/me/entries", params={"from": D1, "to": D2}).json()["erasure"]
    late = erasure["erased_at_ms"]
    results = api.pushed("offline", [
        set_mutation(1, D1, {"steps": 4321}, stamp(made_offline, 0, "offline")),
        set_mutation(2, D3, {"steps": 4322}, stamp(made_offline, 1, "offline")),  # outside the range
        set_mutation(3, D2, {"steps": 4323}, stamp(late - 1, 0, "offline")),  # a millisecond before it
        set_mutation(4, D2, {"steps": 4324}, stamp(late, 1, "offline")),  # after it: a device that heard of it
    ])["results"]
    assert [r["status"] for r in results] == ["rejected", "applied", "rejected", "applied"]
    for refused in (results[0], results[2]):
        assert refused["error"]["code"] == "erased"
        assert refused["error"]["field"] == "date"
        assert "4321" not in str(refused) and "4323" not in str(refused)
    assert {e["date"]: e["steps"] for e in api.entries()} == {D2: 4324, D3: 4322}
    # Refusals are not recorded (the erasure answers a replay alike): only seqs 2 and 4 are.
    seqs = [r[0] for r in pg.execute("SELECT seq FROM applied_mutations WHERE user_id = %s AND client_id = 'offline'"
                                     " ORDER BY seq", (user.id,)).fetchall()]
    assert seqs == [2, 4]
    again = api.pushed("offline", [set_mutation(1, D1, {"steps": 4321}, stamp(made_offline, 0, "offline"))])
    assert again["results"][0]["error"]["code"] == "erased"
    # A REST write is made now, after the erasure.
    assert api.put(f"/v1/entries/{D1}", json={"steps": 1234}).status_code == 200


def test_only_an_athlete_erases_and_only_their_own_entries(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    ana, bob = make_user(), make_user()
    coach = make_user(coach=True)
    assert client(ana).post("/v1/grants", json={"coach": coach.username}).status_code in (200, 201, 204)
    ms = now_ms()
    client(ana).pushed("phone", [set_mutation(1, D1, {"steps": 1111}, stamp(ms, 0, "phone"))])
    client(bob).pushed("phone", [set_mutation(1, D1, {"steps": 2222}, stamp(ms, 0, "phone"))])

    refused = client(coach).delete("/v1/me/entries", params={"from": D1, "to": D1, "user": ana.username})
    assert refused.status_code == 403
    assert error_body(refused)["code"] == "forbidden"
    assert client().delete("/v1/me/entries").status_code == 401
    assert client(bob).delete("/v1/me/entries", params={"from": D1, "to": D1, "user": ana.username}).status_code == 200
    assert [e["steps"] for e in client(ana).entries()] == [1111]  # `user=` means nothing here: bob's own went
    assert client(bob).entries() == []
    listed = client(coach).get("/v1/erasures").json()["erasures"]
    assert bob.username not in {e["user"] for e in listed}  # bob grants nothing to this coach


def test_bad_ranges_are_refused_with_stable_codes_and_erase_nothing(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    api.pushed("phone", [set_mutation(1, D1, {"steps": 1111}, stamp(now_ms(), 0, "phone"))])
    cases = [
        ({"from": "2026-02-30"}, 422, "invalid_date", "from"),
        ({"to": "03/02/2026"}, 422, "invalid_date", "to"),
        ({"from": "1899-12-31", "to": D1}, 422, "out_of_range", "from"),
        ({"from": D2, "to": D1}, 422, "invalid_range", "from"),
    ]
    for params, status, code, field in cases:
        response = api.delete("/v1/me/entries", params=params)
        assert response.status_code == status, (params, response.text)
        error = error_body(response)
        assert (error["code"], error["field"]) == (code, field), error
        assert str(params[field]) in error["message"]
    assert _count(pg, "SELECT count(*) FROM erasures WHERE user_id = %s", user.id) == 0
    assert [e["steps"] for e in api.entries()] == [1111]


def test_erasures_are_listed_to_their_user_and_the_coaches_they_grant_in_id_order(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    ana, other = make_user(), make_user()
    coach = make_user(coach=True)
    client(ana).post("/v1/grants", json={"coach": coach.username})
    first = client(ana).delete("/v1/me/entries", params={"from": D1, "to": D1}).json()["erasure"]
    client(other).delete("/v1/me/entries", params={"to": D0})
    second = client(ana).delete("/v1/me/entries", params={"from": D3}).json()["erasure"]
    assert (second["from"], second["to"]) == (D3, None)
    for who in (ana, coach):
        body = client(who).get("/v1/erasures", params={"after": 0}).json()
        assert [e["id"] for e in body["erasures"]] == [first["id"], second["id"]]
        assert body["last"] == second["id"]
        later = client(who).get("/v1/erasures", params={"after": first["id"]}).json()
        assert [e["id"] for e in later["erasures"]] == [second["id"]]
        assert client(who).get("/v1/erasures", params={"after": second["id"]}).json() == {
            "erasures": [], "last": second["id"]}


# -- pulse-server erase -----------------------------------------------------------------------------------
def _erase(database_url: str, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PULSE_SERVER), "erase", *args], input=answer, capture_output=True, text=True,
                          env=clean_env(PULSE_DATABASE_URL=database_url), timeout=60)


def test_pulse_server_erase_asks_first_and_erases_a_range(
    make_user: Callable[..., User], client: Callable[..., Api], database_url: str, pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    api = client(user)
    ms = now_ms()
    api.pushed("phone", [set_mutation(i + 1, d, {"steps": 3000 + i}, stamp(ms, i, "phone"))
                         for i, d in enumerate((D0, D1, D2, D3))])
    declined = _erase(database_url, "--user", user.username, "--from", D1, "--to", D2, answer="n\n")
    assert declined.returncode == 1
    assert f"Erase the entries of {user.username} of {D1} to {D2}" in declined.stdout
    assert len(api.entries()) == 4
    done = _erase(database_url, "--user", user.username, "--from", D1, "--to", D2, answer="y\n")
    assert done.returncode == 0, done.stderr
    assert f"erased {user.username}'s entries of {D1} to {D2}: 2 entries" in done.stdout
    assert "revoked" not in done.stdout
    assert [e["date"] for e in api.entries()] == [D0, D3]  # and the token still works
    listed = api.get("/v1/erasures").json()["erasures"]
    assert [(e["from"], e["to"], e["whole_account"]) for e in listed] == [(D1, D2, False)]


def test_pulse_server_erase_of_a_whole_account_revokes_its_tokens_and_grants_and_says_so(
    make_user: Callable[..., User], client: Callable[..., Api], database_url: str, server: Any
) -> None:
    user = make_user()
    coach = make_user(coach=True)
    api = client(user)
    api.post("/v1/grants", json={"coach": coach.username})
    api.pushed("phone", [set_mutation(1, D1, {"steps": 3001}, stamp(now_ms(), 0, "phone"))])
    done = _erase(database_url, "--user", user.username, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["erasure"]["whole_account"] is True
    assert (report["erasure"]["from"], report["erasure"]["to"]) == (None, None)
    assert report["removed"]["entries"] == 1
    assert report["removed"]["tokens"] >= 1 and report["removed"]["grants"] == 1

    refused = api.get("/v1/erasures")
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["code"] == "account_erased"
    assert error["erasure"] == report["erasure"]
    pushed = api.push("phone", [set_mutation(2, D2, {"steps": 1}, stamp(now_ms(), 0, "phone"))])
    assert pushed.status_code == 401 and pushed.json()["error"]["code"] == "account_erased"
    assert client(coach).get("/v1/grants").json()["grants"] == []
    # The account itself stays: signing in again starts afresh, and that token is not an erased one.
    with Api(server.url) as anonymous:
        token = anonymous.post("/v1/auth/token", json={"username": user.username, "password": user.password})
    assert token.status_code == 200
    with Api(server.url, token.json()["access_token"]) as again:
        assert again.entries() == []


def test_the_plain_text_answer_of_a_whole_account_erasure_names_what_was_revoked(
    make_user: Callable[..., User], database_url: str
) -> None:
    user = make_user()
    done = _erase(database_url, "--user", user.username, answer="y\n")
    assert done.returncode == 0, done.stderr
    assert f"Erase the whole account {user.username}" in done.stdout
    assert f"revoked 1 token and removed 0 grants of {user.username}" in done.stdout


def test_pulse_server_erase_refuses_a_bad_range_or_an_unknown_user_in_one_line(
    make_user: Callable[..., User], database_url: str
) -> None:
    user = make_user()
    backwards = _erase(database_url, "--user", user.username, "--from", D2, "--to", D1, "--yes")
    assert backwards.returncode == 2
    assert backwards.stderr.strip().splitlines() == [
        f"error: from: {D2} is after to {D1} (allowed a day up to {D1})"]
    unknown = _erase(database_url, "--user", "nobody-here", "--yes")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: user: no user named nobody-here"


def test_a_push_write_that_read_the_erasures_before_one_was_made_is_refused_and_writes_nothing(
    make_user: Callable[..., User], client: Callable[..., Api], pg: psycopg.Connection[Any]
) -> None:
    """The push's write (`pulse_push_write`) is given the highest erasure id its read saw: one made since
    means its mutations were judged without it, so it raises PU001 (the push is then done under locks)."""
    from psycopg.types.json import Jsonb

    user = make_user()
    erasure = client(user).delete("/v1/me/entries", params={"from": D1, "to": D1}).json()["erasure"]
    write = "SELECT txid FROM pulse_push_write(%s, 'race', %s, %s, '[]'::jsonb, %s)"
    entry = Jsonb([{"date": D1, "steps": 5, "deleted": False}])
    result = Jsonb([{"seq": 1, "status": "applied", "digest": "00", "date": D1}])
    try:
        pg.execute(write, (user.id, entry, result, 0))
    except psycopg.Error as exc:
        assert exc.sqlstate == "PU001", exc
    else:
        raise AssertionError("a write judged without the erasure went through")
    assert _count(pg, "SELECT count(*) FROM entries WHERE user_id = %s", user.id) == 0
    assert _count(pg, "SELECT count(*) FROM applied_mutations WHERE user_id = %s", user.id) == 0
    pg.execute(write, (user.id, entry, result, erasure["id"]))  # judged with it: written, with its day
    row = pg.execute("SELECT date::text, result FROM applied_mutations WHERE user_id = %s", (user.id,)).fetchone()
    assert row == (D1, {"seq": 1, "status": "applied"})
