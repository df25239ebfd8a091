"""A mutation the server refuses: listed apart with the server's reason, out of the local view, never
failing the rest of its batch, and gone once discarded (docs/push-protocol.md, invariant 4).

The CLI itself never writes a value the rules refuse, so the refused mutation (a step count past the
limit, as an older release with looser rules could have queued) is put in the outbox and the local view
directly in the store, in the same form `pulse log` writes. (A date merely ahead is not refused for
good: the server holds it, see test_sync_clocks.py.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sync_support import Device, PulseServer, User, applied_mutations, day, server_entries

pytestmark = pytest.mark.e2e

REFUSED = day(-3)
TOO_MANY = 250_000  # steps: the limit is 100,000


def write_refused_edit(device: Device) -> int:
    """An edit past the rules' limits, with a proper next stamp; returns its seq."""
    last = device.meta("hlc_last")
    assert last
    ms, counter, node = last.split(":")
    stamp = f"{ms}:{int(counter) + 1:05d}:{node}"
    with device.store() as conn:
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            "INSERT INTO outbox (user_id, date, op, fields, base, hlc, source, created_at)"
            " VALUES ('', ?, 'set', ?, ?, ?, 'manual', datetime('now'))",
            (REFUSED, json.dumps({"steps": TOO_MANY}), json.dumps({"steps": None}), stamp))
        conn.execute("INSERT INTO entries (user_id, date, steps, steps_hlc, steps_src)"
                     " VALUES ('', ?, ?, ?, 'manual')", (REFUSED, TOO_MANY, stamp))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'hlc_last'", (stamp,))
        conn.execute("COMMIT")
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def local_days(device: Device) -> list[str]:
    with device.store() as conn:
        return [r[0] for r in conn.execute("SELECT date FROM entries WHERE user_id = '' ORDER BY date")]


def test_a_rejected_mutation_is_listed_kept_out_of_the_view_and_can_be_discarded(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-2), steps=2000)
    refused = write_refused_edit(a)
    a.log(day(-1), note="after the refused one")
    assert local_days(a) == [REFUSED, day(-2), day(-1)]

    done = a.synced()  # one batch: applied, rejected, applied

    assert "1 rejected change: see pulse rejected" in done.stdout
    assert a.outbox_counts() == {"applied": 2, "rejected": 1}
    assert [seq for _, seq, _ in applied_mutations(pg, user.id)] == [1, refused, 3]
    notes = [(e["date"], e["steps"], e["note"]) for e in server_entries(server.url, token_for(user), day(-3), day(1))]
    assert notes == [(day(-2), 2000, None), (day(-1), None, "after the refused one")]
    assert local_days(a) == [day(-2), day(-1)], "a rejected change is not part of the local view"

    listed = a.json("rejected")["rejected"]
    assert len(listed) == 1
    (row,) = listed
    assert (row["seq"], row["date"], row["op"], row["fields"]) == (refused, REFUSED, "set", {"steps": TOO_MANY})
    assert row["error"]["code"] == "out_of_range"
    assert row["error"]["field"] == "steps"
    assert str(TOO_MANY) in row["error"]["message"]
    plain = a.ok("rejected").stdout
    assert f"[{refused}] {REFUSED} set" in plain
    assert a.status()["rejected"] == 1

    a.synced()  # a rejected change is not pushed again, and stays listed
    assert len(applied_mutations(pg, user.id)) == 3
    assert len(a.json("rejected")["rejected"]) == 1

    done = a.run("rejected", "--discard", str(refused))
    assert done.returncode == 0, done.stderr
    assert f"discarded {refused}" in done.stdout
    assert a.json("rejected")["rejected"] == []
    assert a.outbox_counts() == {"applied": 2, "discarded": 1}
    assert a.status()["rejected"] == 0
    again = a.run("rejected", "--discard", str(refused))
    assert again.returncode == 1
    assert f"no rejected change {refused}" in again.stderr
