"""The three-device convergence property in process: the devices' whole sync engine (pulse_cli's
bootstrap, the use cases, run_sync: push, refill, conflicts, pull, the local view) against a fake sync
server made of the real `sync.wire` and `sync.merge` (tests/fake_sync_server.py) on httpx.MockTransport.
No Postgres and no process, so it runs hundreds of histories in seconds; the same property runs end to end
against the real server and Postgres in tests/sync/test_sync_property.py."""

from __future__ import annotations

import time
from typing import Any

from convergence_cases import (
    DATES,
    apply,
    assert_the_view_is_a_full_rebuild,
    edits,
    pending,
    three_devices,
    view_stamps,
)
from fake_sync_server import FakeSyncServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse_cli.agent.runner import run_sync
from pulse_cli.agent.upstream import Upstream
from pulse_cli.store.entries import STAMPED

URL = "http://pulse.test"
EXAMPLES = 200  # the end-to-end run affords 15


def _no_wait(_: float) -> None:
    raise AssertionError("the fake server never asks to wait")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(edits(), min_size=1, max_size=14))
def test_random_offline_edits_on_three_devices_converge_once_every_device_has_synced_twice(
    history: list[tuple[Any, ...]],
) -> None:
    server = FakeSyncServer(now_ms)
    with three_devices(server.username, server.token(), URL, Upstream(server.transport, _no_wait)) as devices:
        for edit in history:
            device = devices[edit[0]]
            if edit[1] == "sync":
                run_sync(device)
                assert_the_view_is_a_full_rebuild(device)
            else:
                apply(device, edit)
        for _ in range(2):
            for device in devices:
                run_sync(device)
                assert_the_view_is_a_full_rebuild(device)

        on_server = [e.as_json() for _, e in sorted(server.entries.items())
                     if not e.deleted and DATES[0] <= e.date.isoformat() <= DATES[-1]]
        stamps = {day.isoformat(): {f: e.stamps.get(f) for f in STAMPED} for day, e in server.entries.items()}
        for device in devices:
            view = [e.as_json() for e in device.entries.list(device.user)]
            assert view == on_server, device.home.name
            assert view_stamps(device) == stamps, device.home.name
            assert pending(device) == 0


def test_the_fake_server_speaks_the_wire_the_engine_expects() -> None:
    """One device's round trip through the fake, step by step: what the property stands on."""
    server = FakeSyncServer(now_ms)
    with three_devices(server.username, server.token(), URL, Upstream(server.transport, _no_wait)) as devices:
        a, b, _ = devices
        apply(a, (0, "set", DATES[0], {"steps": "9000", "sleep_hours": "7.5"}))
        report = run_sync(a)
        assert report.pushed == {"applied": 1} and pending(a) == 0
        assert server.entries[a.entries.list(a.user)[0].date].steps == 9000
        pulled = run_sync(b)
        assert pulled.pulled == 1
        assert [e.as_json() for e in b.entries.list(b.user)] == [e.as_json() for e in a.entries.list(a.user)]
        assert "POST /v1/sync/push" in server.requests and "GET /v1/shape" in server.requests


def test_a_device_whose_clock_runs_ahead_keeps_the_corrections_it_made_offline() -> None:
    """Its stamps are clamped to the server's time: a typo fixed, and a day deleted and logged afresh, in
    one push, stay in the order they were made, on the server and in the view rebuilt from its answer."""
    server = FakeSyncServer(lambda: now_ms() - 300_000)  # this device runs five minutes fast
    with three_devices(server.username, server.token(), URL, Upstream(server.transport, _no_wait)) as devices:
        a = devices[0]
        for edit in [(0, "set", DATES[0], {"steps": "1000"}), (0, "set", DATES[0], {"steps": "10000"}),
                     (0, "set", DATES[1], {"note": "old"}), (0, "delete", DATES[1]),
                     (0, "set", DATES[1], {"steps": "4242"})]:
            apply(a, edit)
            time.sleep(0.002)  # stamps a few ms apart, as typed: each clamps to counter 0
        report = run_sync(a)
        assert report.pushed == {"applied": 5} and pending(a) == 0
        expected = [(DATES[1], 4242, None), (DATES[0], 10000, None)]
        assert sorted((d.isoformat(), e.steps, e.note) for d, e in server.entries.items()) == sorted(expected)
        assert sorted((e.date.isoformat(), e.steps, e.note) for e in a.entries.list(a.user)) == sorted(expected)
        assert_the_view_is_a_full_rebuild(a)
