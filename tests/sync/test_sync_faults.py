"""Faults on the way between a device and the server, and a server killed mid-sync.

The device talks to the server through an HTTP-aware proxy (fault_proxy.py) that drops a request half
sent, holds a response, or cuts the connection after the server has answered, that is after it has
committed. Whatever happens, the device retries (inside one `pulse sync` or with the next one) and in
the end every mutation is on the server exactly once: one `applied_mutations` record per outbox row,
one conflict record per lost value, nothing pending, and the device's view equal to the server's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fault_proxy import ANSWER, CUT_AFTER_RESPONSE, CUT_MID_RESPONSE, DELAY, DROP_REQUEST, Fault, HttpFaultProxy
from sync_support import (
    Device,
    PulseServer,
    User,
    applied_mutations,
    audit,
    day,
    fitbit_export,
    server_entries,
    server_stamps,
    wait_replicated,
)

pytestmark = pytest.mark.e2e

PUSH = ("POST", "/v1/sync/push")
SHAPE = ("GET", "/v1/shape")
IMPORTED_DAYS = 250  # with the manual edit below: two push batches (200 + 51)
CONTESTED = day(-3)  # imported, then edited by hand on both devices
FIRST, LAST = day(-IMPORTED_DAYS - 2), day(0)


@pytest.fixture
def proxy(server: PulseServer) -> Iterator[HttpFaultProxy]:
    proxy = HttpFaultProxy(("127.0.0.1", server.port))
    yield proxy
    proxy.close()


def assert_exactly_once(devices: list[Device], pg: psycopg.Connection[Any], user: User) -> None:
    """One server record per mutation made, nothing pending, one audit row per lost value."""
    made = sorted((d.client_id, row["seq"]) for d in devices for row in d.outbox())
    assert [(cid, seq) for cid, seq, _ in applied_mutations(pg, user.id)] == made
    for device in devices:
        assert set(device.outbox_counts()) <= {"applied", "conflict"}, device.outbox_counts()
    records = audit(pg, user.id)
    keys = [(r["client_id"], r["seq"], r["field"]) for r in records]
    assert len(keys) == len(set(keys)), f"a conflict was recorded twice: {records}"
    for device in devices:  # each device holds the whole audit of the user's entries, from the server
        device.synced()
        local = [(c["client_id"], c["seq"], c["field"]) for c in device.json("conflicts", "--all")["conflicts"]]
        assert sorted(local) == sorted(keys), f"{device.name}: the device's audit matches the server's"


def assert_converged(devices: list[Device], server: PulseServer, token: str, pg: psycopg.Connection[Any],
                     user: User) -> list[dict[str, Any]]:
    on_server = server_entries(server.url, token, FIRST, LAST)
    for device in devices:
        assert device.history(FIRST, LAST) == on_server, device
        assert device.stamps() == server_stamps(pg, user.id), device
    return on_server


def prepare(make_device: Callable[..., Device], make_user: Callable[..., User], proxy: HttpFaultProxy,
            tmp_path: Path, pg: psycopg.Connection[Any]) -> tuple[User, Device, Device]:
    """A, behind the proxy, with 251 pending mutations (an import and one hand edit that wins a conflict
    against B's earlier one); B talks to the server directly and has synced."""
    user = make_user()
    a, b = make_device("A", proxy.url), make_device("B")
    assert a.login(user).returncode == 0
    assert b.login(user).returncode == 0
    b.log(CONTESTED, note="B's note")
    b.synced()
    a.ok("import", "fitbit", str(fitbit_export(tmp_path / "fitbit", IMPORTED_DAYS)), "--source-user", "1")
    a.log(CONTESTED, note="A's note")  # later than B's, and A has not seen B's: a conflict A wins
    assert a.outbox_counts() == {"pending": IMPORTED_DAYS + 1}
    return user, a, b


FAULTS: dict[str, list[tuple[tuple[str, str], list[Fault | None]]]] = {
    "a connection dropped mid-request, twice": [(PUSH, [None, Fault(DROP_REQUEST), Fault(DROP_REQUEST)])],
    "the response cut after the server committed, twice": [
        (PUSH, [None, Fault(CUT_AFTER_RESPONSE), Fault(CUT_AFTER_RESPONSE)])],
    "the response cut half-way": [(PUSH, [Fault(CUT_MID_RESPONSE)])],
    "the shape responses cut and dropped": [
        (SHAPE, [Fault(CUT_AFTER_RESPONSE), Fault(DROP_REQUEST), Fault(CUT_MID_RESPONSE)])],
    "every response delayed": [(PUSH, [Fault(DELAY, 0.7)] * 2), (SHAPE, [Fault(DELAY, 0.7)] * 2)],
}


@pytest.mark.parametrize("faults", list(FAULTS), ids=list(FAULTS))
def test_faults_between_device_and_server_lose_and_duplicate_nothing(
    faults: str, make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    proxy: HttpFaultProxy, server: PulseServer, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user, a, b = prepare(make_device, make_user, proxy, tmp_path, pg)
    injected = 0
    for (method, path), plan in FAULTS[faults]:
        proxy.inject(method, path, *plan)
        injected += sum(1 for f in plan if f is not None)

    a.synced()  # the client's own retries get it through

    assert sum(proxy.applied.values()) == injected, "every fault was injected"
    assert_exactly_once([a, b], pg, user)
    for device in (b, a):
        wait_replicated(pg, user.id)
        device.synced()
    entries = {e["date"]: e for e in assert_converged([a, b], server, token_for(user), pg, user)}
    assert len(entries) == IMPORTED_DAYS
    assert entries[CONTESTED]["note"] == "A's note"
    assert [(r["field"], r["kept"], r["lost"]) for r in audit(pg, user.id)] == [("note", "A's note", "B's note")]


def test_a_response_held_past_the_client_timeout_is_retried_as_a_duplicate(
    make_device: Callable[..., Device], make_user: Callable[..., User], proxy: HttpFaultProxy,
    pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user, a, b = prepare(make_device, make_user, proxy, tmp_path, pg)
    proxy.inject(*PUSH, None, Fault(DELAY, 11.0))  # the client gives up on a response after 10 s

    a.synced()

    assert proxy.seen["POST /v1/sync/push"] == 3, "the second batch was sent twice"
    assert_exactly_once([a, b], pg, user)
    replayed = [row["result"] for row in a.outbox()[200:]]
    assert {r["status"] for r in replayed} == {"duplicate"}, "the server answered the replay from its records"
    assert {r["original_status"] for r in replayed} == {"applied", "conflict"}


def test_faults_that_outlast_the_retries_leave_the_changes_queued_until_the_next_sync(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    proxy: HttpFaultProxy, server: PulseServer, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user, a, b = prepare(make_device, make_user, proxy, tmp_path, pg)
    # The second batch is committed on the first try, but no answer ever gets back.
    proxy.inject(*PUSH, None, *[Fault(CUT_AFTER_RESPONSE)] * 4)

    done = a.sync()

    assert done.returncode == 3, done.stderr
    assert "offline: 51 changes queued" in done.stderr
    assert a.outbox_counts() == {"applied": 200, "pending": 51}
    assert len(applied_mutations(pg, user.id)) == 1 + 251, "the server did commit the second batch"
    a.end_breaker_cooldown()

    a.synced()

    assert_exactly_once([a, b], pg, user)
    for device in (b, a):
        wait_replicated(pg, user.id)
        device.synced()
    assert len(assert_converged([a, b], server, token_for(user), pg, user)) == IMPORTED_DAYS


@pytest.mark.parametrize("status", [200, 307, 404, 405, 409])
def test_a_push_answered_by_a_proxy_not_the_server_rejects_nothing_and_is_sent_again(
    status: int, make_device: Callable[..., Device], make_user: Callable[..., User], proxy: HttpFaultProxy,
    pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    """A whole-batch 4xx that is not the sync server's (a proxy's page while a deploy moves the route, a wrong
    path) says nothing about the changes: before, the batch was halved down to single changes and every one
    rejected for good, to be typed again by hand (and a redirect, not followed, was taken for an empty answer
    to every batch). Now the sync fails, saying why, and the changes stay queued."""
    user, a, b = prepare(make_device, make_user, proxy, tmp_path, pg)
    proxy.always(*PUSH, Fault(ANSWER, status=status))

    done = a.sync()

    assert done.returncode != 0, done.stdout
    assert f"answered {status}, not as the sync server does" in done.stderr, done.stderr
    assert f"{IMPORTED_DAYS + 1} changes queued" in done.stderr and "Traceback" not in done.stderr
    assert a.outbox_counts() == {"pending": IMPORTED_DAYS + 1}
    assert proxy.seen["POST /v1/sync/push"] == 1, "not halved: the answer is not about the changes"
    assert len(applied_mutations(pg, user.id)) == 1  # B's own

    proxy.always(*PUSH, None)
    a.synced()

    assert_exactly_once([a, b], pg, user)


def test_a_server_killed_in_the_middle_of_a_big_sync_loses_and_duplicates_nothing(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    start_server: Callable[..., PulseServer], pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    own = start_server()
    user = make_user()
    a = make_device("A", own.url)
    assert a.login(user).returncode == 0
    a.ok("import", "fitbit", str(fitbit_export(tmp_path / "fitbit", 2000)), "--source-user", "1")
    assert a.outbox_counts() == {"pending": 2000}

    syncing = a.popen("sync")
    try:
        committed = wait_for_count(pg, user.id, at_least=1, timeout_s=60)
        own.kill()
        _, err = syncing.communicate(timeout=120)
    finally:
        if syncing.poll() is None:
            syncing.kill()
            syncing.wait()
    assert committed < 2000, "the sync finished before the server could be killed"
    assert syncing.returncode == 3, err
    counts = a.outbox_counts()
    assert f"offline: {counts['pending']} changes queued" in err
    assert sum(counts.values()) == 2000
    assert 2000 - counts["pending"] <= len(applied_mutations(pg, user.id)) < 2000

    own.restart()
    a.end_breaker_cooldown()
    a.synced()

    assert_exactly_once([a], pg, user)
    assert len(applied_mutations(pg, user.id)) == 2000
    b = make_device("B", own.url)
    assert b.login(user).returncode == 0
    wait_replicated(pg, user.id)
    b.synced()
    on_server_entries = server_entries(own.url, token_for(user), day(-2100), day(0))
    assert len(on_server_entries) == 2000
    for device in (a, b):
        assert device.history(day(-2100), day(0)) == on_server_entries
        assert device.stamps() == server_stamps(pg, user.id)


def wait_for_count(pg: psycopg.Connection[Any], user_id: int, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = pg.execute("SELECT count(*) FROM applied_mutations WHERE user_id = %s", (user_id,)).fetchone()
        count = int(row[0]) if row else 0
        if count >= at_least:
            return count
        time.sleep(0.01)
    raise AssertionError(f"no mutation of user {user_id} reached the server in {timeout_s} s")
