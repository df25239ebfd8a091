"""No endpoint lets one user read or change another's data; tokens are checked and stored hashed."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from server_support import PULSE_SERVER, Api, ServerProcess, User, clean_env, error_body, now_ms, set_mutation, stamp

from pulse_server.accounts import find_user, issue_token
from pulse_server.db.database import Database

DAY = "2026-11-22"


@pytest.fixture
def athlete_with_data(make_user: Callable[..., User], client: Callable[..., Api]) -> User:
    athlete = make_user()
    api = client(athlete)
    assert api.put(f"/v1/entries/{DAY}", json={"steps": 7000, "note": "private"}).status_code == 200
    ms = now_ms()
    api.pushed("phone", [set_mutation(1, DAY, {"sleep_hours": 6}, stamp(ms, 0, "phone"))])
    api.pushed("laptop", [set_mutation(1, DAY, {"sleep_hours": 7}, stamp(ms + 1, 0, "laptop"))])
    assert len(api.get("/v1/conflicts").json()["conflicts"]) == 1
    return athlete


def test_an_athlete_cannot_read_another_athletes_entries_and_gets_the_same_404_as_for_nobody(
    athlete_with_data: User, make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    intruder = client(make_user())
    theirs = intruder.get("/v1/entries", params={"user": athlete_with_data.username})
    nobody = intruder.get("/v1/entries", params={"user": "no-such-user"})
    assert theirs.status_code == nobody.status_code == 404
    assert error_body(theirs)["code"] == error_body(nobody)["code"] == "not_found"
    assert error_body(theirs)["message"].replace(athlete_with_data.username, "X") == \
        error_body(nobody)["message"].replace("no-such-user", "X")
    assert intruder.entries() == []
    assert intruder.get("/v1/conflicts").json()["conflicts"] == []


def test_an_athlete_cannot_change_another_athletes_entries(
    athlete_with_data: User, make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    intruder = client(make_user())
    # Writes always go to the caller's own entries, whatever the body says.
    assert intruder.put(f"/v1/entries/{DAY}", json={"steps": 1}).status_code == 200
    assert intruder.delete(f"/v1/entries/{DAY}").status_code == 204
    assert intruder.put(f"/v1/entries/{DAY}?user={athlete_with_data.username}", json={"steps": 2}).status_code == 200
    odd = intruder.push("phone", [{**set_mutation(2, DAY, {"steps": 3}, stamp(now_ms(), 0, "phone")),
                                   "user": athlete_with_data.username}])
    assert odd.status_code == 200
    entry = client(athlete_with_data).entry(DAY)
    assert entry is not None and (entry["steps"], entry["note"], entry["sleep_hours"]) == (7000, "private", 7.0)


def test_a_coach_reads_an_athlete_only_while_granted(
    athlete_with_data: User, make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    coach = client(make_user(coach=True))
    athlete = client(athlete_with_data)
    params = {"user": athlete_with_data.username}
    assert coach.get("/v1/entries", params=params).status_code == 404
    coach_name = coach.get("/v1/me").json()["username"]
    assert athlete.post("/v1/grants", json={"coach": coach_name}).status_code == 201
    granted = coach.get("/v1/entries", params=params)
    assert granted.status_code == 200
    assert granted.json()["user"] == athlete_with_data.username
    assert [e["steps"] for e in granted.json()["entries"]] == [7000]
    assert coach.get("/v1/grants").json()["grants"][0]["athlete"] == athlete_with_data.username
    # The grant is to read entries: the athlete's conflicts stay theirs.
    assert coach.get("/v1/conflicts").json()["conflicts"] == []
    assert athlete.delete(f"/v1/grants/{coach_name}").status_code == 204
    assert coach.get("/v1/entries", params=params).status_code == 404


def test_a_grant_to_an_athlete_is_refused_and_reads_nothing(
    athlete_with_data: User, make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    other = make_user()
    refused = client(athlete_with_data).post("/v1/grants", json={"coach": other.username})
    assert refused.status_code == 404
    assert client(other).get("/v1/entries", params={"user": athlete_with_data.username}).status_code == 404


@pytest.fixture(scope="module")
def any_coach(make_user: Callable[..., User]) -> User:
    return make_user(coach=True)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", f"/v1/entries/{DAY}", {"steps": 1}),
        ("DELETE", f"/v1/entries/{DAY}", None),
        ("POST", "/v1/sync/push", {"protocol": 1, "client_id": "c", "mutations": []}),
        ("POST", "/v1/grants", {"coach": "anyone"}),
    ],
)
def test_a_coach_gets_403_on_every_write(
    any_coach: User, client: Callable[..., Api], method: str, path: str, body: Any
) -> None:
    coach = client(any_coach)
    response = coach.http.request(method, path, json=body)
    assert response.status_code == 403
    assert error_body(response)["code"] == "forbidden"


PROTECTED = [("GET", "/v1/me"), ("GET", "/v1/entries"), ("PUT", f"/v1/entries/{DAY}"),
             ("DELETE", f"/v1/entries/{DAY}"), ("POST", "/v1/sync/push"), ("GET", "/v1/conflicts"),
             ("GET", "/v1/grants")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer not-a-real-token", "Basic dXNlcjpwYXNz",
                                           "Bearer ' OR '1'='1"])
def test_a_missing_or_garbage_token_is_401(
    server: ServerProcess, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with Api(server.url) as api:
        response = api.http.request(method, path, headers=headers, json={"steps": 1})
    assert response.status_code == 401
    assert error_body(response)["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_tokens_revoked_with_the_command_stop_working_and_a_new_sign_in_works(
    make_user: Callable[..., User], client: Callable[..., Api], database_url: str
) -> None:
    user = make_user()
    api = client(user)
    assert api.get("/v1/me").status_code == 200
    done = subprocess.run([str(PULSE_SERVER), "token", "revoke", user.username], capture_output=True, text=True,
                          env=clean_env(PULSE_DATABASE_URL=database_url), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"revoked 1 token of {user.username}"
    revoked = api.get("/v1/me")
    assert revoked.status_code == 401 and error_body(revoked)["code"] == "unauthorized"
    fresh = client().post("/v1/auth/token", json={"username": user.username, "password": user.password})
    assert fresh.status_code == 200
    assert client(User(user.id, user.username, user.password, fresh.json()["access_token"])).get(
        "/v1/me").status_code == 200


def test_an_expired_token_is_401(make_user: Callable[..., User], client: Callable[..., Api], db: Database) -> None:
    user = make_user()
    with db.session() as session:
        row = find_user(session, user.username)
        assert row is not None
        expired, _ = issue_token(session, row, ttl_days=-1)
    response = client(User(user.id, user.username, user.password, expired)).get("/v1/me")
    assert response.status_code == 401 and error_body(response)["code"] == "unauthorized"


def test_tokens_are_stored_only_as_their_sha256(
    make_user: Callable[..., User], pg: psycopg.Connection[Any]
) -> None:
    user = make_user()
    stored = [h for (h,) in pg.execute("SELECT token_hash FROM tokens WHERE user_id = %s", (user.id,))]
    assert stored == [hashlib.sha256(user.token.encode()).hexdigest()]
    leaked = pg.execute("SELECT count(*) FROM tokens WHERE token_hash = %s", (user.token,)).fetchone()
    assert leaked == (0,)
    hashes = pg.execute("SELECT password_hash FROM users WHERE id = %s", (user.id,)).fetchone()
    assert hashes is not None and hashes[0].startswith("$argon2") and user.password not in hashes[0]


INJECTIONS = ["x'; DROP TABLE entries; --", "' OR '1'='1", "a\" OR 1=1 --", "1; SELECT pg_sleep(5)",
              "%' UNION SELECT token_hash FROM tokens --"]


@pytest.fixture(scope="module")
def victim_and_prober(make_user: Callable[..., User], server: ServerProcess) -> tuple[User, User]:
    victim = make_user()
    with Api(server.url, victim.token) as api:
        assert api.put(f"/v1/entries/{DAY}", json={"steps": 7000, "note": "private"}).status_code == 200
    return victim, make_user()


@pytest.mark.parametrize("payload", INJECTIONS)
def test_sql_looking_input_is_treated_as_data(
    victim_and_prober: tuple[User, User], client: Callable[..., Api], pg: psycopg.Connection[Any], payload: str
) -> None:
    victim, prober = victim_and_prober
    api = client(prober)
    login = client().post("/v1/auth/token", json={"username": payload, "password": payload + "pw"})
    assert login.status_code == 401
    other = api.get("/v1/entries", params={"user": payload})
    assert other.status_code == 404
    assert api.get("/v1/entries", params={"user": f"{victim.username}' OR '1'='1"}).status_code == 404
    dated = api.put(f"/v1/entries/{payload}", json={"steps": 1})
    assert dated.status_code in (404, 422)
    ranged = api.get("/v1/entries", params={"from": payload})
    assert ranged.status_code == 422 and error_body(ranged)["field"] == "from"
    grant = api.post("/v1/grants", json={"coach": payload})
    assert grant.status_code == 404
    seq = INJECTIONS.index(payload) + 1
    pushed = api.push("phone", [set_mutation(seq, payload, {"note": payload}, stamp(now_ms(), seq, "phone"))])
    assert pushed.status_code == 200 and pushed.json()["results"][0]["status"] == "rejected"
    noted = api.put(f"/v1/entries/{DAY}", json={"note": payload})
    assert noted.status_code == 200 and noted.json()["entry"]["note"] == payload
    tables = {t for (t,) in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "tokens", "grants", "entries", "applied_mutations", "conflicts"} <= tables
    entry = client(victim).entry(DAY)
    assert entry is not None and (entry["steps"], entry["note"]) == (7000, "private")


@pytest.mark.parametrize("name", ["nul\x00byte", "ana\n", "A", "x" * 500, "é"])
def test_a_name_no_user_can_have_finds_no_one_rather_than_failing(
    victim_and_prober: tuple[User, User], client: Callable[..., Api], name: str
) -> None:
    _, prober = victim_and_prober
    api = client(prober)
    assert client().post("/v1/auth/token", json={"username": name[:64], "password": "whatever1"}).status_code == 401
    assert api.get("/v1/entries", params={"user": name}).status_code == 404
    assert api.post("/v1/grants", json={"coach": name[:64]}).status_code == 404
    assert api.delete(f"/v1/grants/{quote(name)}").status_code == 404


def _command(database_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PULSE_SERVER), *args], input=stdin, capture_output=True, text=True,
                          env=clean_env(PULSE_DATABASE_URL=database_url), timeout=60)


def test_a_coach_added_and_granted_with_the_commands_reads_until_revoked_with_the_command(
    athlete_with_data: User, client: Callable[..., Api], database_url: str
) -> None:
    coach_name = f"coach-cli-{athlete_with_data.id}"
    added = _command(database_url, "user", "add", coach_name, "--coach", "--password-stdin", stdin="cli password 1\n")
    assert added.returncode == 0 and added.stdout.strip() == f"added coach {coach_name}", added.stderr
    again = _command(database_url, "user", "add", coach_name, "--password-stdin", stdin="cli password 1\n")
    assert again.returncode == 2 and again.stderr.strip() == f"error: username: {coach_name} already exists"
    token = client().post("/v1/auth/token", json={"username": coach_name, "password": "cli password 1"})
    assert token.status_code == 200
    coach = client(User(0, coach_name, "", token.json()["access_token"]))
    params = {"user": athlete_with_data.username}
    assert coach.get("/v1/entries", params=params).status_code == 404
    assert _command(database_url, "grant", coach_name, athlete_with_data.username).returncode == 0
    assert [e["note"] for e in coach.get("/v1/entries", params=params).json()["entries"]] == ["private"]
    assert _command(database_url, "revoke", coach_name, athlete_with_data.username).returncode == 0
    assert coach.get("/v1/entries", params=params).status_code == 404


def test_the_servers_own_client_id_is_refused_on_push_so_rest_writes_never_share_its_seqs(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    response = api.push("api", [set_mutation(10**9, DAY, {"steps": 1}, stamp(ms, 0, "api"))])
    assert response.status_code == 400
    body = error_body(response)
    assert (body["code"], body["field"], body["value"]) == ("bad_request", "client_id", "api")
    # REST writes go on under that id, and a delete deletes what it says it does.
    assert api.put(f"/v1/entries/{DAY}", json={"steps": 5}).status_code == 200
    assert api.delete(f"/v1/entries/{DAY}").status_code == 204
    assert api.entries() == []
    assert api.delete(f"/v1/entries/{DAY}").status_code == 404


def test_no_day_before_1900_is_written_and_a_read_range_may_end_anywhere(
    make_user: Callable[..., User], client: Callable[..., Api]
) -> None:
    api = client(make_user())
    ms = now_ms()
    (result,) = api.pushed("phone", [set_mutation(1, "1899-12-31", {"steps": 1}, stamp(ms, 0, "phone"))])["results"]
    assert result["status"] == "rejected"
    assert (result["error"]["code"], result["error"]["field"]) == ("out_of_range", "date")
    old = api.put("/v1/entries/0001-01-01", json={"steps": 1})
    assert old.status_code == 422 and error_body(old)["code"] == "out_of_range"
    assert api.put(f"/v1/entries/{DAY}", json={"steps": 1}).status_code == 200
    far = api.get("/v1/entries", params={"from": "2026-01-01", "to": "2100-01-01"})
    assert far.status_code == 200 and [e["date"] for e in far.json()["entries"]] == [DAY]
    early = api.get("/v1/entries", params={"from": "1899-01-01"})
    assert early.status_code == 422 and (error_body(early)["code"], error_body(early)["field"]) == (
        "out_of_range", "from")
