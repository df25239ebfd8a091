"""The three-device convergence property's histories and checks, shared by its two runs: in process
against a fake server (tests/integration/test_sync_convergence_in_process.py, many examples in seconds)
and end to end against a real server and Postgres (tests/sync/test_sync_property.py).

Whatever three devices edit offline and in whatever order they sync, once each has synced twice all
three local views and the server hold the same entries, stamp for stamp."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from pulse_cli.agent.account import Account, bind_home, save_account
from pulse_cli.agent.outbox import to_reapply
from pulse_cli.agent.replica import computed_view
from pulse_cli.agent.upstream import Upstream
from pulse_cli.bootstrap import Device, bootstrap
from pulse_cli.store.entries import COLUMNS, STAMPED, entry_to_row
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


# Homes in memory when the machine has a tmpfs: every local transaction syncs to disk, and a history
# runs a few hundred of them (300 histories in process took 51 s on a shared disk, 14 s in memory).
MEMORY = "/dev/shm" if Path("/dev/shm").is_dir() else None


@contextlib.contextmanager
def three_devices(
    username: str, token: str, server_url: str, upstream: Upstream | None = None
) -> Iterator[list[Device]]:
    """Devices A, B and C of one athlete, logged in to the server (fresh homes, removed after)."""
    root = Path(tempfile.mkdtemp(prefix="pulse-prop-", dir=MEMORY))
    opened: list[Device] = []
    try:
        for name in "ABC":
            device = bootstrap(str(root / name), upstream=upstream)
            with device.conn:
                device.conn.execute("BEGIN IMMEDIATE")
                bind_home(device.conn, server_url, username, "athlete")
            save_account(device.home, Account(server_url, username, "athlete", token, ""))
            opened.append(device)
        yield opened
    finally:
        for device in opened:
            device.close()
        shutil.rmtree(root, ignore_errors=True)


def apply(device: Device, edit: tuple[Any, ...]) -> None:
    kind = edit[1]
    with contextlib.suppress(NotFoundError):  # clearing or deleting a day this device does not show
        if kind == "set":
            log_entry(device.uow(), device.user, edit[2], edit[3], device.today)
        elif kind == "clear":
            log_entry(device.uow(), device.user, edit[2], {}, device.today, clear=[edit[3]])
        elif kind == "delete":
            delete_entry(device.uow(), device.user, edit[2], device.today)


def assert_the_view_is_a_full_rebuild(device: Device) -> None:
    """The view a sync round refreshed row by row is the one a rebuild from scratch would give: the
    server copy with every pending (or not yet reflected) mutation merged on top."""
    columns = ", ".join(COLUMNS)
    actual = {(r[0], r[1]): r for r in device.conn.execute(f"SELECT {columns} FROM entries")}
    reference = computed_view(device.conn, to_reapply(device.conn))
    assert actual == {(u, d.isoformat()): entry_to_row(e) for (u, d), e in reference.items()}, device.home.name


def view_stamps(device: Device) -> dict[str, dict[str, str | None]]:
    """The local view's per-field stamps by date, tombstones included."""
    columns = ", ".join(f"{f}_hlc" for f in STAMPED)
    rows = device.conn.execute(f"SELECT date, {columns} FROM entries WHERE user_id = ''").fetchall()
    return {r[0]: dict(zip(STAMPED, r[1:], strict=True)) for r in rows}


def pending(device: Device) -> int:
    return int(device.conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])
