"""`pulse agent --serve` as real processes: the device app takes a browser's writes over HTTP, relays
them to the sync server under the browser's own client id (exactly once), serves the device's view as
an Electric shape that a CLI edit reaches live, and signs in offline with a password it has checked."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sync_support import (
    BROWSER,
    Device,
    ServedDevice,
    User,
    applied_mutations,
    day,
    free_port,
    wait_for,
    wait_replicated,
)

from sync import stamps_column

pytestmark = pytest.mark.e2e


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Device], ServedDevice]]:
    started: list[ServedDevice] = []

    def start(device: Device) -> ServedDevice:
        served = ServedDevice(device, tmp_path / f"serve-{device.name}-{len(started)}.log")
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def stamp(ms_ago: int = 0, client: str = BROWSER) -> str:
    return f"{int(time.time() * 1000) - ms_ago:016d}:00000:{client}"


def rows_by_date(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows of these messages by date, their `stamps` unfolded into the twelve columns."""
    return {m["value"]["date"]: stamps_column.expand(m["value"]) for m in messages if "key" in m}


def test_a_browsers_writes_reach_postgres_once_under_its_own_client_id(
    make_device: Callable[..., Device], make_user: Callable[..., User], serve: Callable[[Device], ServedDevice],
    pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    assert a.login(user).returncode == 0 and b.login(user).returncode == 0
    served = serve(a)
    assert served.sign_in(user.username, "wrong password").status_code == 401
    assert served.sign_in("someone-else", user.password).status_code == 401
    assert served.push("not-a-token", []).status_code == 401
    token = served.token(user)
    # The page takes the device's corrected clock as the server's, as the device itself stamps.
    me = httpx.get(f"{served.url}/v1/me", headers={"authorization": f"Bearer {token}"}, timeout=10).json()
    with sqlite3.connect(a.home / "pulse.db") as store:
        learned = store.execute("SELECT value FROM meta WHERE key = 'clock_offset_ms'").fetchone()
    assert learned is not None  # the login measured it
    assert abs(me["server_time_ms"] - (time.time() * 1000 + int(learned[0]))) < 5000, (me, learned)

    # What the CLI says about the same bad value, so the browser gets the same message.
    refused = a.run("log", "--date", day(-1), "--steps", "-5")
    assert refused.returncode == 2
    cli_message = refused.stderr.strip().removeprefix("error: ")

    batch = [
        {"seq": 1, "date": day(-1), "op": "set", "fields": {"steps": 7000, "sleep_hours": 7.5},
         "base": {"steps": None, "sleep_hours": None}, "hlc": stamp(2000)},
        {"seq": 2, "date": day(-2), "op": "set", "fields": {"weight_kg": 70.2}, "base": {"weight_kg": None},
         "hlc": stamp(1000)},
        {"seq": 3, "date": day(-3), "op": "set", "fields": {"steps": -5}, "base": {}, "hlc": stamp(500)},
    ]
    response = served.push(token, batch)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["applied", "applied", "rejected"]
    assert results[2]["error"]["field"] == "steps" and str(results[2]["error"]["value"]) == "-5"
    assert results[2]["error"]["message"] in cli_message, (results[2]["error"]["message"], cli_message)
    replay = served.push(token, batch[:1]).json()["results"][0]
    assert replay["status"] == "duplicate" and replay["original_status"] == "applied"
    # A body not declared JSON (a form a page elsewhere could post) is refused before it is read, as upstream.
    text = httpx.post(f"{served.url}/v1/sync/push", headers={"authorization": f"Bearer {token}",
                      "content-type": "text/plain"}, content=json.dumps(
                          {"protocol": 1, "client_id": BROWSER, "mutations": [dict(batch[1], seq=9)]}), timeout=10)
    assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_media_type"

    # The local view has them at once; the agent relays them upstream on its own.
    history = {e["date"]: e for e in a.history(day(-3), day(0))}
    assert history[day(-1)]["steps"] == 7000 and float(history[day(-2)]["weight_kg"]) == 70.2
    assert day(-3) not in history
    wait_for(lambda: [m for m in applied_mutations(pg, user.id) if m[0] == BROWSER] ==
             [(BROWSER, 1, "applied"), (BROWSER, 2, "applied")], 20, "the browser's mutations on the server")
    row = pg.execute("SELECT steps, sleep_hours::text, weight_kg::text FROM entries WHERE user_id = %s AND date = %s",
                     (user.id, day(-1))).fetchone()
    assert row == (7000, "7.50", None)
    wait_replicated(pg, user.id)
    b.synced()
    seen = {e["date"]: e for e in b.history(day(-3), day(0))}
    assert seen[day(-1)]["steps"] == 7000 and float(seen[day(-2)]["weight_kg"]) == 70.2
    assert applied_mutations(pg, user.id).count((BROWSER, 1, "applied")) == 1


def test_the_device_shape_holds_the_local_view_and_a_cli_edit_arrives_live(
    make_device: Callable[..., Device], make_user: Callable[..., User], serve: Callable[[Device], ServedDevice],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-1), sleep_hours="7.5", steps=8000)
    served = serve(a)
    token = served.token(user)
    assert served.shape("bad-token", offset="-1").status_code == 401

    snapshot = served.shape(token, offset="-1")
    assert snapshot.status_code == 200
    rows = rows_by_date(snapshot.json())
    assert rows[day(-1)]["sleep_hours"] == "7.50" and rows[day(-1)]["steps"] == "8000"
    assert rows[day(-1)]["deleted"] == "f" and rows[day(-1)]["steps_src"] == "manual"
    assert snapshot.json()[-1]["headers"]["control"] == "snapshot-end"
    handle, offset = snapshot.headers["electric-handle"], snapshot.headers["electric-offset"]
    assert "electric-schema" in snapshot.headers

    caught_up = served.shape(token, offset=offset, handle=handle)
    assert caught_up.json()[-1]["headers"]["control"] == "up-to-date"
    assert served.shape(token, offset=offset, handle="another").status_code == 409

    live: dict[str, Any] = {}

    def hold() -> None:
        started = time.monotonic()
        live["response"] = served.shape(token, offset=offset, handle=handle, live="true", cursor="0")
        live["after_s"] = time.monotonic() - started

    waiter = threading.Thread(target=hold)
    waiter.start()
    time.sleep(0.5)
    assert "response" not in live, "the live request is held until something changes"
    a.log(day(-1), steps=9100)  # another process writes the store: the CLI
    waiter.join(timeout=25)
    response = live["response"]
    assert response.status_code == 200 and "electric-cursor" in response.headers
    changed = rows_by_date(response.json())
    assert changed[day(-1)]["steps"] == "9100" and changed[day(-1)]["sleep_hours"] == "7.50"
    assert live["after_s"] < 5

    a.delete(day(-1))
    after = served.shape(token, offset=response.headers["electric-offset"], handle=handle)
    assert rows_by_date(after.json())[day(-1)]["deleted"] == "t"


def test_sign_in_works_offline_only_with_a_password_the_server_confirmed(
    make_device: Callable[..., Device], make_user: Callable[..., User], serve: Callable[[Device], ServedDevice],
    tmp_path: Path,
) -> None:
    user = make_user()
    a, fresh = make_device("A"), make_device("F")
    assert a.login(user).returncode == 0 and fresh.login(user).returncode == 0
    served = serve(a)
    served.token(user)  # checked with the server, remembered as a salted hash
    served.close()
    for device in (a, fresh):  # the server is gone: credentials now point at a closed port
        path = device.home / "credentials.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "server": f"http://127.0.0.1:{free_port()}"}))
    offline = serve(a)
    assert offline.sign_in(user.username, user.password).status_code == 200
    assert offline.sign_in(user.username, "wrong password").status_code == 401
    never_checked = serve(fresh).sign_in(user.username, user.password)
    assert never_checked.status_code == 503 and never_checked.json()["error"]["code"] == "unavailable"
    with a.store() as conn:
        stored = conn.execute("SELECT value FROM meta WHERE key = 'web_password'").fetchone()[0]
        tokens = [r[0] for r in conn.execute("SELECT token_hash FROM web_tokens")]
    assert user.password not in stored and all(len(t) == 64 for t in tokens)


def test_the_device_app_sends_a_browser_at_its_root_to_the_app(
    make_device: Callable[..., Device], make_user: Callable[..., User], serve: Callable[[Device], ServedDevice],
) -> None:
    import httpx

    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    served = serve(a)
    root = httpx.get(f"{served.url}/", timeout=10)
    assert (root.status_code, root.headers["location"]) == (307, "/app/")
    log = served.log_path.read_text()
    assert f"the app is at {served.url}/app/ (sign in as {user.username})" in log
