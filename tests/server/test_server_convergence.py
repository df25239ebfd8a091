"""Convergence (docs/push-protocol.md, invariant 2), as a property over the real push endpoint and Postgres.

Random mutations from a few devices, pushed in their original order to one user and shuffled and
duplicated to another, leave both users with exactly the same entries, stamps and sources; and
those are what the pure merge (sync.merge) computes. The app runs in-process with an injected clock.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import InProcessClient, delete_mutation, merged, set_mutation, stamp, stored

from pulse_server.accounts import add_user, issue_token
from pulse_server.api.app import create_app
from pulse_server.db.database import Database
from pulse_server.settings import Settings

FIXED_MS = 1_781_524_800_000  # 2026-06-15 12:00 UTC: the server's clock in this module
TODAY = dt.date(2026, 6, 15)
DAYS = ("2026-06-12", "2026-06-13", "2026-06-14")
DEVICES = ("alpha", "beta", "gamma")
# Stamps close together (so they interleave and tie on ms), and one a week ahead (clamped on arrival).
OFFSETS_MS = (-3000, -2000, -2000, -1000, 0, 7 * 86_400_000)


@dataclass
class Sandbox:
    client: InProcessClient
    conn: psycopg.Connection[Any]
    users: tuple[tuple[int, str], tuple[int, str]]  # (id, token) of the in-order and the shuffled user


@pytest.fixture(scope="module")
def sandbox(database_url: str) -> Iterator[Sandbox]:
    database = Database(Settings(database_url=database_url, pool_size=2))
    app = create_app(Settings(database_url=database_url), clock=lambda: FIXED_MS, database=database)
    users = []
    with database.session() as session:
        for _ in range(2):
            user = add_user(session, f"conv-{random.getrandbits(40):x}", "long enough password", False)
            assert user.id is not None
            users.append((user.id, issue_token(session, user, 1)[0]))
    client = InProcessClient(app)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            yield Sandbox(client, conn, (users[0], users[1]))
    finally:
        client.close()
        database.dispose()


def _money(low: int, high: int) -> st.SearchStrategy[float]:
    """A value kept to 0.01, as a JSON number."""
    return st.integers(low * 100, high * 100).map(lambda cents: cents / 100)


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "sleep_hours": _money(0, 24),
    "hrv_ms": _money(1, 300),
    "steps": st.integers(0, 100_000),
    "weight_kg": _money(20, 500),
    "note": st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
}


@st.composite
def edits(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sets(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3))
    fields = {name: draw(st.none() | VALUES[name]) for name in names}
    if fields.get("hrv_ms") is not None and draw(st.booleans()):
        fields["hrv_method"] = draw(st.sampled_from(["rmssd", "sdnn"]))
    return fields


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """(device, mutation) pairs in the order the devices made them; stamps unique per device."""
    devices = DEVICES[: draw(st.integers(2, 3))]
    count = draw(st.integers(1, 10))
    seqs = dict.fromkeys(devices, 0)
    made = []
    for index in range(count):
        device = draw(st.sampled_from(devices))
        seqs[device] += 1
        day = draw(st.sampled_from(DAYS))
        hlc = stamp(FIXED_MS + draw(st.sampled_from(OFFSETS_MS)), index, device)
        if draw(st.integers(0, 4)) == 0:
            mutation = delete_mutation(seqs[device], day, hlc)
        else:
            mutation = set_mutation(seqs[device], day, draw(edits()), hlc)
        made.append((device, mutation))
    return made


def _push_all(sandbox: Sandbox, token: str, sequence: list[tuple[str, dict[str, Any]]], cuts: random.Random) -> None:
    """Push in this order, in batches of runs of one device, cut at random points."""
    batch: list[dict[str, Any]] = []
    device = ""
    for index, (who, mutation) in enumerate([*sequence, ("", {})]):
        if batch and (who != device or cuts.random() < 0.3 or index == len(sequence)):
            response = sandbox.client.request(
                "POST", "/v1/sync/push", headers={"Authorization": f"Bearer {token}"},
                json={"protocol": 1, "client_id": device, "mutations": batch})
            assert response.status_code == 200, response.text
            statuses = {r["status"] for r in response.json()["results"]}
            assert statuses <= {"applied", "conflict", "duplicate"}, response.text
            batch = []
        device = who
        if mutation:
            batch.append(mutation)


@settings(max_examples=40, deadline=None)
@given(history=histories(), shuffle_seed=st.randoms(use_true_random=False), data=st.data())
def test_mutations_shuffled_and_duplicated_converge_to_the_same_entries_as_in_order(
    sandbox: Sandbox, history: list[tuple[str, dict[str, Any]]], shuffle_seed: random.Random, data: st.DataObject
) -> None:
    (in_order_id, in_order_token), (shuffled_id, shuffled_token) = sandbox.users
    sandbox.conn.execute("DELETE FROM entries WHERE user_id IN (%s, %s)", (in_order_id, shuffled_id))
    sandbox.conn.execute("DELETE FROM applied_mutations WHERE user_id IN (%s, %s)", (in_order_id, shuffled_id))
    sandbox.conn.execute("DELETE FROM conflicts WHERE user_id IN (%s, %s)", (in_order_id, shuffled_id))

    repeats = data.draw(st.lists(st.sampled_from(history), max_size=len(history)), label="delivered twice")
    delivered = [*history, *repeats]
    shuffle_seed.shuffle(delivered)

    _push_all(sandbox, in_order_token, history, random.Random(0))
    _push_all(sandbox, shuffled_token, delivered, shuffle_seed)

    in_order = stored(sandbox.conn, in_order_id)
    assert stored(sandbox.conn, shuffled_id) == in_order
    assert in_order == merged(history, TODAY, FIXED_MS)
