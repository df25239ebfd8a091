"""A device whose clock runs a day ahead cannot win every later conflict (docs/push-protocol.md, clock sanity).

The CLI stamps with wall time through its hybrid logical clock, which never goes back past the last
stamp it issued (`meta.hlc_last`). Setting that stamp a day ahead is the deterministic seam for a clock
that runs a day ahead: every stamp the device issues after it is a day ahead too, exactly as if its
wall clock were. The server clamps a stamp more than 60 s ahead of its own time to its own time on
arrival, and the audit says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sync_support import (
    Device,
    PulseServer,
    User,
    audit,
    day,
    server_conflicts,
    server_entries,
    wait_replicated,
)

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
D, LATER_DAY = day(-5), day(-4)


def ms_of(stamp: str) -> int:
    return int(stamp.split(":")[0])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_a_day_ahead(device: Device) -> int:
    """From now on this device's stamps are a day ahead of real time; returns that point in ms."""
    ahead = now_ms() + DAY_MS
    device.set_meta("hlc_last", f"{ahead:016d}:00000:{device.client_id}")
    return ahead


def test_an_edit_stamped_a_day_ahead_is_clamped_and_loses_to_a_later_edit(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    fast, right = make_device("fast"), make_device("right")
    for device in (fast, right):
        assert device.login(user).returncode == 0
    right.log(D, steps=1000)
    right.synced()

    ahead = run_a_day_ahead(fast)
    fast.log(D, steps=2000)  # made after right's first edit, stamped a day ahead
    (mine,) = fast.outbox()
    assert ms_of(mine["hlc"]) >= ahead
    assert [e["steps"] for e in fast.history(D, D)] == [2000]
    before_push = now_ms()
    fast.synced()
    after_push = now_ms()

    # Clamped on arrival to the server's time: it wins over the earlier edit, and the audit says so.
    (result,) = [row["result"] for row in fast.outbox()]
    assert result["clamped_from"] == mine["hlc"]
    assert before_push - 1000 <= ms_of(result["hlc"]) <= after_push + 1000
    time.sleep(0.05)
    right.log(D, steps=3000)  # a later edit, made without having seen fast's
    later = right.outbox()[-1]["hlc"]
    assert ms_of(later) < ahead, "unclamped, the day-ahead stamp would have beaten this later edit"
    right.synced()
    for device in (fast, right):
        wait_replicated(pg, user.id)
        device.synced()

    on_server = server_entries(server.url, token_for(user), D, D)
    assert [e["steps"] for e in on_server] == [3000]
    for device in (fast, right):
        assert device.history(D, D) == on_server
    records = {(r["client_id"], r["field"]): r for r in audit(pg, user.id)}
    clamped = records[(fast.client_id, "steps")]
    assert (clamped["kept"], clamped["lost"], clamped["clamped"]) == (2000, 1000, True)
    assert clamped["kept_hlc"] == result["hlc"]
    lost = records[(right.client_id, "steps")]
    assert (lost["kept"], lost["lost"], lost["clamped"]) == (3000, 2000, False)
    assert (lost["kept_hlc"], lost["lost_hlc"]) == (later, result["hlc"])
    api = {(r["client_id"], r["kept"]): r["clamped"] for r in server_conflicts(server.url, token_for(user))}
    assert api == {(fast.client_id, 2000): True, (right.client_id, 3000): False}


def test_after_a_clamp_the_device_stamps_later_edits_with_corrected_time(
    make_device: Callable[..., Device], make_user: Callable[..., User], token_for: Callable[[User], str],
    server: PulseServer, pg: psycopg.Connection[Any],
) -> None:
    user = make_user()
    fast, right = make_device("fast"), make_device("right")
    for device in (fast, right):
        assert device.login(user).returncode == 0
    run_a_day_ahead(fast)
    fast.log(D, steps=2000)
    fast.synced()  # clamped: the device has now heard the server's time

    fast.log(LATER_DAY, note="fast, first")  # made first ...
    time.sleep(0.05)
    right.log(LATER_DAY, note="right, later")  # ... then this, later
    right.synced()
    fast.synced()  # fast pushes last: only a day-ahead stamp, clamped to arrival, could make it win
    for device in (right, fast):
        wait_replicated(pg, user.id)
        device.synced()

    notes = [e["note"] for e in server_entries(server.url, token_for(user), LATER_DAY, LATER_DAY)]
    stamp = fast.outbox()[-1]["hlc"]
    assert notes == ["right, later"], f"the earlier edit won: it was stamped {stamp}, a day ahead, and clamped"
    assert ms_of(stamp) < now_ms() + 60_000, f"{stamp} is still a day ahead"
