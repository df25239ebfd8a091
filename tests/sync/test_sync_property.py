"""Property: whatever three devices edit offline and in whatever order they sync, once each has synced
twice all three local views and the server hold the same entries, stamp for stamp.

The devices run in this process (pulse_cli's bootstrap, the pulse_core use cases, the agent's
run_sync), against the real server process and Postgres: what is random here is the history, not the
plumbing. Each example gets a fresh user and fresh homes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_support import Device as CliDevice
from sync_support import PulseServer, User, server_entries, server_stamps, wait_replicated

from pulse_cli.agent.account import Account, bind_home, save_account
from pulse_cli.agent.outbox import to_reapply
from pulse_cli.agent.replica import computed_view
from pulse_cli.agent.runner import run_sync
from pulse_cli.bootstrap import Device, bootstrap
from pulse_cli.store.entries import COLUMNS, entry_to_row
from pulse_core.errors import NotFoundError
from pulse_core.usecases import delete_entry, log_entry

TODAY = dt.date.today()
DATES = [(TODAY - dt.timedelta(days=n)).isoformat() for n in (4, 3, 2)]
FIELDS = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note")
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "sleep_hours": st.integers(0, 48).map(lambda q: str(Decimal(q) / 4)),
    "hrv_ms": st.integers(20, 120).map(str),
    "steps": st.integers(0, 30_000).map(str),
    "weight_kg": st.integers(5000, 9000).map(lambda c: str(Decimal(c) / 100)),
    "note": st.sampled_from(["easy", "tired", "race", "rest day"]),
}


@st.composite
def edits(draw: st.DrawFn) -> tuple[Any, ...]:
    """(device, "set", date, fields) | (device, "clear", date, field) | (device, "delete", date) | (device, "sync")."""
    device = draw(st.integers(0, 2))
    kind = draw(st.sampled_from(["set", "set", "set", "clear", "delete", "sync", "sync"]))
    if kind == "sync":
        return (device, "sync")
    date = draw(st.sampled_from(DATES))
    if kind == "delete":
        return (device, "delete", date)
    if kind == "clear":
        return (device, "clear", date, draw(st.sampled_from(FIELDS)))
    names = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    fields = {name: draw(VALUES[name]) for name in names}
    if "hrv_ms" in fields:
        fields["hrv_method"] = draw(st.sampled_from(["rmssd", "sdnn"]))
    return (device, "set", date, fields)


@contextlib.contextmanager
def devices_of(user: User, token: str, server_url: str) -> Iterator[list[Device]]:
    root = Path(tempfile.mkdtemp(prefix="pulse-prop-"))
    opened: list[Device] = []
    try:
        for name in "ABC":
            device = bootstrap(str(root / name))
            with device.conn:
                device.conn.execute("BEGIN IMMEDIATE")
                bind_home(device.conn, server_url, user.username, "athlete")
            save_account(device.home, Account(server_url, user.username, "athlete", token, ""))
            opened.append(device)
        yield opened
    finally:
        for device in opened:
            device.close()
        shutil.rmtree(root, ignore_errors=True)


def assert_the_view_is_a_full_rebuild(device: Device) -> None:
    """The view a sync round refreshed row by row is the one a rebuild from scratch would give: the
    server copy with every pending (or not yet reflected) mutation merged on top."""
    columns = ", ".join(COLUMNS)
    actual = {(r[0], r[1]): r for r in device.conn.execute(f"SELECT {columns} FROM entries")}
    reference = computed_view(device.conn, to_reapply(device.conn))
    assert actual == {(u, d.isoformat()): entry_to_row(e) for (u, d), e in reference.items()}, device.home.name


def apply(device: Device, edit: tuple[Any, ...]) -> None:
    kind = edit[1]
    with contextlib.suppress(NotFoundError):  # clearing or deleting a day this device does not show
        if kind == "set":
            log_entry(device.uow(), device.user, edit[2], edit[3], device.today)
        elif kind == "clear":
            log_entry(device.uow(), device.user, edit[2], {}, device.today, clear=[edit[3]])
        elif kind == "delete":
            delete_entry(device.uow(), device.user, edit[2], device.today)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(edits(), min_size=1, max_size=14))
def test_random_offline_edits_on_three_devices_converge_once_every_device_has_synced_twice(
    history: list[tuple[Any, ...]], server: PulseServer, make_user: Callable[..., User],
    token_for: Callable[[User], str], pg: psycopg.Connection[Any],
) -> None:
    user = make_user("prop")
    token = token_for(user)
    with devices_of(user, token, server.url) as devices:
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
            assert CliDevice(device.home.name, device.home, server.url).stamps() == stamps, device.home.name
            pending = device.conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
            assert pending == 0
