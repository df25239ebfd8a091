"""The device app's `/v1/shape` (`pulse agent --serve`) answers like the server where it applies: Bearer
only, a column asked twice refused, `log=changes_only` without a snapshot, an unknown `log` refused,
subsets refused (the device has no Postgres snapshot to describe them), and numeric txids. Its log does
not say whether a row was inside a filter before a change, so a filtered client is sent the safe
operations (docs/shapes.md, "Filters"): it still ends with exactly the rows inside."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sync_support import Device, ServedDevice, User, day

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tmp_path: Path, make_device: Callable[..., Device],
           make_user: Callable[..., User]) -> Iterator[tuple[ServedDevice, str, Device]]:
    user = make_user()
    device = make_device("A")
    assert device.login(user).returncode == 0
    device.log(day(-2), steps=3000)
    device.log(day(-1), steps=8000)
    app = ServedDevice(device, tmp_path / "serve.log")
    try:
        yield app, app.token(user), device
    finally:
        app.close()


def test_the_device_shape_answers_the_electric_protocol_like_the_server(
    served: tuple[ServedDevice, str, Device],
) -> None:
    app, token, device = served
    basic = httpx.get(f"{app.url}/v1/shape", params={"table": "entries", "offset": "-1"},
                      headers={"authorization": f"Basic {token}"})
    assert basic.status_code == 401
    repeated = app.shape(token, offset="-1", columns="user_id,date,steps,steps")
    assert repeated.status_code == 400 and "columns" in repeated.json()["errors"]
    assert "log" in app.shape(token, offset="-1", log="sometimes").json()["errors"]
    assert "subset" in app.shape(token, offset="-1", subset__where="steps > 1").json()["errors"]

    full = app.shape(token, offset="-1")
    # The default columns fold the twelve stamp and source columns into `stamps`, as the server's do;
    # named, they come one by one. The device's day was set by one write of the user's, by hand.
    (logged,) = [m["value"] for m in full.json() if m.get("value", {}).get("date") == day(-1)]
    assert "steps_hlc" not in logged and logged["stamps"].startswith(";;") and logged["stamps"].endswith(" manual;;;")
    stamp = logged["stamps"][2:-len(" manual;;;")]
    named = app.shape(token, offset="-1", columns="user_id,date,steps,steps_hlc,steps_src")
    assert {(m["value"]["date"], m["value"]["steps_hlc"], m["value"]["steps_src"]) for m in named.json()
            if "key" in m and m["value"]["date"] == day(-1)} == {(day(-1), stamp, "manual")}
    changes_only = app.shape(token, offset="-1", log="changes_only")
    assert changes_only.status_code == 200 and changes_only.json() == []  # no snapshot
    assert changes_only.headers["electric-handle"] != full.headers["electric-handle"]
    assert changes_only.headers["electric-offset"] == full.headers["electric-offset"]  # the head

    busy = app.shape(token, offset="-1", where="steps > 5000")
    handle, offset = busy.headers["electric-handle"], busy.headers["electric-offset"]
    rows = {m["key"]: m["value"] for m in busy.json() if "key" in m}
    device.log(day(-3), steps=100)  # a new day outside the filter
    device.log(day(-4), steps=9000)  # a new day inside it
    device.log(day(-1), steps=10)  # a day moving out
    changes = [m for m in app.shape(token, offset=offset, handle=handle, where="steps > 5000").json() if "key" in m]
    for message in changes:
        if message["headers"]["operation"] == "delete":
            rows.pop(message["key"], None)
        else:
            rows[message["key"]] = {**rows.get(message["key"], {}), **message["value"]}
        assert all(isinstance(t, int) for t in message["headers"]["txids"])
    assert sorted((r["date"], r["steps"]) for r in rows.values()) == [(day(-4), "9000")]
