"""Two devices edit the same days offline, then sync in different orders: both end with the server's
entries, and the conflict audit explains every field that two edits fought over (the later stamp wins).

Everything is real: Postgres, one `pulse-server` with the shape API, and each device a PULSE_HOME driven
by the installed `pulse`. Before each sync the test waits for the replication reader to have turned
the last push into shape log rows: pulls are eventually consistent, and these tests are about what the
replicas converge to, not about how fast the log follows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sync_support import (
    Device,
    PulseServer,
    User,
    applied_mutations,
    audit,
    day,
    fitbit_export,
    server_conflicts,
    server_entries,
    server_stamps,
    wait_replicated,
)

pytestmark = pytest.mark.e2e

D1, D2, D3 = day(-12), day(-11), day(-10)
FIRST, LAST = day(-14), day(0)


def sync_in_order(order: str, devices: dict[str, Device], pg: psycopg.Connection[Any], user: User) -> None:
    for name in order:
        wait_replicated(pg, user.id)
        devices[name].synced()
    wait_replicated(pg, user.id)


def assert_converged(devices: list[Device], server: PulseServer, token: str, pg: psycopg.Connection[Any],
                     user: User) -> list[dict[str, Any]]:
    """Every device's history is the server's, field for field and stamp for stamp; returns the entries."""
    on_server = server_entries(server.url, token, FIRST, LAST)
    for device in devices:
        assert device.history(FIRST, LAST) == on_server, device
        assert device.stamps() == server_stamps(pg, user.id), device
    return on_server


def by_date(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["date"]: e for e in entries}


@pytest.mark.parametrize("order", ["ABA", "BAB", "ABBA", "BAAB"])
def test_offline_edits_to_the_same_days_converge_whatever_the_sync_order(
    order: str, make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    # The edits, in the order they are made (so in the order of their stamps); nothing is synced yet.
    a.log(D1, steps=1000, sleep_hours=7)
    b.log(D2, note="from B")
    b.log(D1, steps=2000, hrv_ms=55)  # steps: later than A's, wins; hrv: nobody else set it
    a.log(D2, note="from A", weight_kg=70.5)  # note: later than B's, wins
    a.log(D3, weight_kg=71)
    b.log(D3, sleep_hours=8)  # another field of the same day: no conflict
    a.log(D2, hrv_ms=60)
    b.log(D2, hrv_ms=40, hrv_method="sdnn")  # HRV and its method are one value: B's pair wins

    sync_in_order(order, {"A": a, "B": b}, pg, user)

    entries = by_date(assert_converged([a, b], server, token_for(user), pg, user))
    assert set(entries) == {D1, D2, D3}
    pick = ("steps", "sleep_hours", "hrv_ms", "hrv_method", "weight_kg", "note")
    assert {k: entries[D1][k] for k in pick} == {"steps": 2000, "sleep_hours": 7.0, "hrv_ms": 55.0,
                                                "hrv_method": "rmssd", "weight_kg": None, "note": None}
    assert {k: entries[D2][k] for k in pick} == {"steps": None, "sleep_hours": None, "hrv_ms": 40.0,
                                                "hrv_method": "sdnn", "weight_kg": 70.5, "note": "from A"}
    assert {k: entries[D3][k] for k in pick} == {"steps": None, "sleep_hours": 8.0, "hrv_ms": None,
                                                "hrv_method": None, "weight_kg": 71.0, "note": None}

    # Exactly once: one record per mutation either device made, whatever the number of syncs.
    outboxes = {d.client_id: d.outbox() for d in (a, b)}
    made = sorted((cid, row["seq"]) for cid, rows in outboxes.items() for row in rows)
    assert [(cid, seq) for cid, seq, _ in applied_mutations(pg, user.id)] == made
    assert all(row["status"] in ("applied", "conflict") for rows in outboxes.values() for row in rows)

    # The audit: three fields were fought over; each record says the later stamp won, once.
    stamps = server_stamps(pg, user.id)
    writes: dict[tuple[str, str], list[str]] = {}
    for rows in outboxes.values():
        for row in rows:
            for name in row["fields"]:
                if name != "hrv_method":
                    writes.setdefault((row["date"], name), []).append(row["hlc"])
    expected = {
        (D1, "steps"): (2000, 1000, b, a),
        (D2, "note"): ("from A", "from B", a, b),
        (D2, "hrv_ms"): ({"hrv_ms": 40.0, "hrv_method": "sdnn"}, {"hrv_ms": 60.0, "hrv_method": "rmssd"}, b, a),
    }
    records = audit(pg, user.id)
    assert sorted((r["date"], r["field"]) for r in records) == sorted(expected)
    second = b if order[0] == "A" else a  # the conflict is seen by the push that found the other value stored
    api_rows = server_conflicts(server.url, token_for(user))
    assert len(api_rows) == len(expected)
    for row in api_rows:
        kept, lost, winner, loser = expected[(row["date"], row["field"])]
        assert (row["kept"], row["lost"], row["rule"], row["clamped"]) == (kept, lost, "lww@2", False), row
        both = sorted(writes[(row["date"], row["field"])])
        assert [row["lost_hlc"], row["kept_hlc"]] == both, "the later stamp wins"
        assert row["kept_hlc"] == stamps[row["date"]][row["field"]]
        assert row["kept_hlc"].endswith(winner.client_id) and row["lost_hlc"].endswith(loser.client_id)
        assert row["client_id"] == second.client_id

    # Every device of the user shows every conflict on the user's entries (they travel from the server),
    # the one whose value lost included, each open while the kept value stands.
    for device in (a, b):
        device.synced()
        local = {(c["date"], c["field"]): c for c in device.conflicts()}
        assert set(local) == set(expected), device
        for key, (kept, lost, winner, loser) in expected.items():
            record = local[key]
            assert (record["kept"], record["lost"], record["rule"], record["state"]) == (kept, lost, "lww@2", "open")
            assert record["kept_hlc"].endswith(winner.client_id) and record["lost_hlc"].endswith(loser.client_id)
        assert device.status()["conflicts"] == len(expected)


def test_a_delete_beats_an_older_edit_and_a_later_edit_revives_the_day_with_only_its_fields(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    a.log(D1, sleep_hours=7.25, note="start")
    a.log(D2, steps=5000)
    a.synced()
    wait_replicated(pg, user.id)
    b.synced()  # B now shows D1 and D2

    # D1: A's edit reaches the server first, then B's later delete.
    a.log(D1, steps=12000)
    b.delete(D1)
    for device in (a, b, a):
        wait_replicated(pg, user.id)
        device.synced()
    # D2: B's delete reaches the server first, then A's older edit, which must not bring the day back.
    a.log(D2, weight_kg=80)
    b.delete(D2)
    for device in (b, a, b):
        wait_replicated(pg, user.id)
        device.synced()
    wait_replicated(pg, user.id)

    assert_converged([a, b], server, token_for(user), pg, user)
    assert [e["date"] for e in a.history(FIRST, LAST)] == []
    rows = {r[0]: r[1:] for r in pg.execute(
        "SELECT date::text, deleted, sleep_hours, steps, weight_kg, note FROM entries WHERE user_id = %s",
        (user.id,)).fetchall()}
    assert rows == {D1: (True, None, None, None, None), D2: (True, None, None, None, None)}, "tombstones stay"

    # An edit after the delete brings D1 back with only its own fields: the older ones stay deleted.
    b.log(D1, hrv_ms=48)
    a.log(D1, note="back")  # A, not having seen B's edit, brings the deleted day back too
    for device in (b, a, b):
        wait_replicated(pg, user.id)
        device.synced()
    wait_replicated(pg, user.id)
    entries = by_date(assert_converged([a, b], server, token_for(user), pg, user))
    assert list(entries) == [D1]
    revived = entries[D1]
    assert (revived["note"], revived["hrv_ms"], revived["steps"], revived["sleep_hours"], revived["deleted"]) == (
        "back", 48.0, None, None, False)
    assert len(applied_mutations(pg, user.id)) == len(a.outbox()) + len(b.outbox())


def test_an_import_on_one_device_never_overwrites_a_value_set_by_hand_on_another(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    for device in (a, b):
        assert device.login(user).returncode == 0
    corrected = day(-3)
    b.log(corrected, steps=12345)  # set by hand on B
    b.synced()
    # A has not pulled B's correction; it imports a tracker export covering that day afterwards.
    a.ok("import", "fitbit", str(fitbit_export(tmp_path / "fitbit", 5)), "--source-user", "1")
    for device in (a, b, a):
        wait_replicated(pg, user.id)
        device.synced()
    wait_replicated(pg, user.id)

    (entry,) = server_entries(server.url, token_for(user), corrected, corrected)
    assert (entry["steps"], entry["sources"]["steps"]) == (12345, "manual")
    assert_converged([a, b], server, token_for(user), pg, user)
