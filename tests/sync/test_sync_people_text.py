"""`pulse status` and `pulse conflicts` against a real server, read as a person reads them: the account,
the last sync as a local time, whether the server answered; a conflict's values as they were typed and
its clock stamps as local dates and times, with the device each came from."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from sync_support import Device, PulseServer, User, day, free_port

pytestmark = pytest.mark.e2e


def local(stamp: str) -> str:
    """A clock stamp's time (`<ms>:<counter>:<client>`, docs/sync.md) as this computer's local time."""
    return dt.datetime.fromtimestamp(int(stamp.split(":")[0]) / 1000).strftime("%Y-%m-%d %H:%M")


def lines(device: Device, *args: str) -> list[str]:
    return device.ok(*args).stdout.splitlines()


def test_status_names_the_account_the_last_sync_and_whether_the_server_answered(
    make_device: Callable[..., Device], make_user: Callable[..., User], server: PulseServer,
) -> None:
    user = make_user()
    a = make_device("A")
    assert a.login(user).returncode == 0
    a.log(day(-1), steps=4000)
    a.synced()
    a.log(day(-2), steps=10)
    a.log(day(-3), steps=20)
    raw: dict[str, Any] = a.status()
    shown = lines(a, "status")
    last = dt.datetime.fromisoformat(raw["last_sync"]).astimezone().strftime("%Y-%m-%d %H:%M")
    assert shown == [
        f"account    {user.username} (athlete) on {server.url}",
        f"last sync  {last}",
        "to push    2 changes",
        "rejected   none",
        "conflicts  none open",
        "server     reachable at the last sync",
        "live       no agent running (pulse agent follows the server live)",
        "clock      in step with the server's",
        f"device id  {raw['client_id']}",
    ]
    assert not any("True" in line or "breaker" in line or "retry in s" in line for line in shown)

    # The server gone (the account pointed at a port nobody listens on): one failed sync opens the breaker.
    credentials = a.home / "credentials.json"
    account = json.loads(credentials.read_text())
    credentials.write_text(json.dumps({**account, "server": f"http://127.0.0.1:{free_port()}"}))
    assert a.run("sync").returncode == 3
    server_line = next(line for line in lines(a, "status") if line.startswith("server "))
    wait = round(a.status()["breaker_retry_in_s"])
    assert server_line.startswith("server     unreachable at the last tries; the agent tries again in ")
    assert server_line.endswith(" s (pulse sync tries at once)")
    assert abs(int(server_line.split(" in ")[1].split()[0]) - wait) <= 2


def test_a_conflict_reads_as_values_typed_and_local_times_on_named_devices(
    make_device: Callable[..., Device], make_user: Callable[..., User],
) -> None:
    user = make_user()
    a, b = make_device("A"), make_device("B")
    assert a.login(user).returncode == 0 and b.login(user).returncode == 0
    a.log(day(-1), sleep_hours=6)
    a.synced()
    b.log(day(-1), sleep_hours=8.5)  # B had not seen A's 6: concurrent, and later, so it wins
    b.synced()
    (raw,) = b.conflicts()
    assert (raw["field"], raw["kept"], raw["lost"]) == ("sleep_hours", 8.5, 6.0)
    assert lines(b, "conflicts") == [
        f"[{raw['id']}] {day(-1)} sleep: kept 8.5 h over 6 h (open; the later change wins)",
        f"    kept 8.5 h: written {local(raw['kept_hlc'])} on this device",
        f"    lost 6 h: written {local(raw['lost_hlc'])} on device {a.client_id}",
    ]
    a.synced()
    assert lines(a, "conflicts")[2] == f"    lost 6 h: written {local(raw['lost_hlc'])} on this device"
