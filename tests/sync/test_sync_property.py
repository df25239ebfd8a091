"""Property: whatever three devices edit offline and in whatever order they sync, once each has synced
twice all three local views and the server hold the same entries, stamp for stamp (the histories and the
checks: tests/convergence_cases.py).

End to end: the devices run in this process (pulse_cli's bootstrap, the pulse_core use cases, the
agent's run_sync), against the real server process and Postgres: what is random here is the history,
not the plumbing. Each example gets a fresh user and fresh homes. The same property runs in process
against a fake server, with many more examples (tests/integration/test_sync_convergence_in_process.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from convergence_cases import (
    DATES,
    apply,
    assert_the_view_is_a_full_rebuild,
    edits,
    pending,
    three_devices,
    view_stamps,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_support import PulseServer, User, server_entries, server_stamps, wait_replicated

from pulse_cli.agent.runner import run_sync


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(edits(), min_size=1, max_size=14))
def test_random_offline_edits_on_three_devices_converge_once_every_device_has_synced_twice(
    history: list[tuple[Any, ...]], server: PulseServer, make_user: Callable[..., User],
    token_for: Callable[[User], str], pg: psycopg.Connection[Any],
) -> None:
    user = make_user("prop")
    token = token_for(user)
    with three_devices(user.username, token, server.url) as devices:
        for edit in history:
            device = devices[edit[0]]
            if edit[1] == "sync":
                wait_replicated(pg, user.id)
                run_sync(device)
                assert_the_view_is_a_full_rebuild(device)
            else:
                apply(device, edit)
        for _ in range(2):
            for device in devices:
                wait_replicated(pg, user.id)
                run_sync(device)
                assert_the_view_is_a_full_rebuild(device)
        wait_replicated(pg, user.id)

        on_server = server_entries(server.url, token, DATES[0], DATES[-1])
        stamps = server_stamps(pg, user.id)
        for device in devices:
            view = [e.as_json() for e in device.entries.list(device.user)]
            assert view == on_server, device.home.name
            assert view_stamps(device) == stamps, device.home.name
            assert pending(device) == 0
